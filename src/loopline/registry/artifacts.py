"""Files of a training run in MLflow: its ONNX model, class mapping and split membership."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def download_model_files(run_id: str, folder: Path) -> tuple[Path, dict[str, Any], dict[str, list[str]]]:
    """(ONNX file, class mapping ``{labels, input_size}``, splits ``{split: [content hashes]}``)."""
    import mlflow

    def fetch(path: str) -> Path:
        return Path(
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(folder))
        )

    model_dir = fetch("model")
    mapping = json.loads(fetch("class_mapping.json").read_text())
    splits = json.loads(fetch("splits.json").read_text())
    return next(model_dir.glob("*.onnx")), mapping, splits
