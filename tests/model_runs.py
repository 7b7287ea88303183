"""MLflow runs shaped like the train stage's, for tests of the registry, the server and the deploy stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def logged_onnx_run(
    tmp_path: Path, labels: tuple[str, ...] = ("a", "b"), splits: dict[str, list[str]] | None = None
) -> str:
    """A real run holding a (tiny, random) ONNX model over 4x4 inputs, its class mapping and its splits,
    as training logs them."""
    import mlflow
    import mlflow.onnx
    import onnx

    from loopline.training.onnx_export import export_onnx

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, len(labels)))
    path = export_onnx(model, 4, tmp_path / "m.onnx")
    mlflow.set_experiment("registry")
    with mlflow.start_run() as run:
        mlflow.onnx.log_model(
            onnx.load(str(path)),
            name="model",
            input_example=np.zeros((1, 3, 4, 4), dtype=np.float32),
            pip_requirements=["onnxruntime"],
        )
        mlflow.log_dict({"labels": list(labels), "input_size": 4}, "class_mapping.json")
        mlflow.log_dict(splits or {"train": [], "val": [], "test": []}, "splits.json")
    return str(run.info.run_id)


def registered_version(client: object, name: str, tmp_path: Path, broken: bool = False) -> str:
    """A version of ``name`` registered from a fresh run (``broken``: its class mapping names 3 labels for
    a model with 2 outputs, so it cannot load)."""
    import mlflow

    from loopline.registry.registry import register_run

    run_id = logged_onnx_run(tmp_path, labels=("cat", "dog"))
    if broken:
        with mlflow.start_run(run_id=run_id):
            mlflow.log_dict({"labels": ["cat", "dog", "eel"], "input_size": 4}, "class_mapping.json")
    return str(register_run(client, name, run_id, {}, "# a test model").version)


def smoke_pictures() -> list[object]:
    """Three small random pictures for smoke tests."""
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(3)]
