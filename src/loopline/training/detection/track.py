"""The best detector of a study, evaluated on the frozen test split and logged to the active MLflow run:
COCO mAP@[.5:.95] and mAP@.5 (``test_map``, ``test_map50``), per-class AP (``per_class_ap.json``), the
ONNX export with its parity against PyTorch on the test images (``onnx_*`` metrics), the class mapping
(``{"task_type": "detection", "labels", "model", "image_size"}``), trials, splits and the state dict."""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loopline.data.labeled import LabeledRow
from loopline.training.data import SPLITS, ClassMapping
from loopline.training.detection.models import DETECTOR_SIZES, build_detector
from loopline.training.detection.task import DetectionResults, DetectionTask
from loopline.training.hpo import BEST_WEIGHTS, DETECTION_EVAL_BATCH, StudyResult
from loopline.training.onnx_export import onnx_pip_requirements

ARTIFACTS = ("per_class_ap.json", "class_mapping.json", "trials.json", "splits.json", "state_dict.pt")


def per_class_ap(results: DetectionResults) -> dict[str, dict[str, float | None]]:
    """``{label: {"ap": AP@[.5:.95], "ap50": AP@.5}}``; None for a class with no true box in the split."""

    def value(v: float) -> float | None:
        return None if math.isnan(v) else v

    per_class = results.scores.per_class
    return {label: {"ap": value(ap), "ap50": value(ap50)} for label, (ap, ap50) in per_class.items()}


def parity_images(loader: Any) -> list[Any]:
    """The test images for the ONNX parity check; when they all share one size, each is also checked
    padded by 16 px (right and bottom), so the check shows the graph takes another size."""
    import torch

    images = [image for batch, _ in loader for image in batch]
    if len({tuple(i.shape) for i in images}) < 2:
        images += [torch.nn.functional.pad(i, (0, 16, 0, 16)) for i in images]
    return images


def evaluate_and_log_detector(
    study: StudyResult, rows: list[LabeledRow], mapping: ClassMapping, loaders: Any, run_id: str
) -> Any:
    """Evaluate, export and log the study's best detector; returns the ``TrainOutcome``."""
    import mlflow
    import mlflow.onnx
    import numpy as np
    import onnx
    import onnxruntime
    import torch

    from loopline.training.detection.onnx import detector_onnx_parity, export_detector_onnx
    from loopline.training.train import TrainOutcome

    params = study.best_params
    model = build_detector(params["model"], len(mapping.labels) + 1, params.get("image_size"))
    model.load_state_dict(torch.load(study.best_dir / BEST_WEIGHTS, weights_only=True))
    model.eval()
    test_loader = loaders(0, DETECTION_EVAL_BATCH, "test")
    results = DetectionTask(mapping.labels).evaluate(model, test_loader, "cpu").outputs
    assert isinstance(results, DetectionResults)
    history = study.best_history
    wait_share = sum(m.data_wait_share for m in history) / len(history) if history else 0.0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        onnx_path = export_detector_onnx(model, folder / "model.onnx")
        parity = detector_onnx_parity(model, onnx_path, parity_images(test_loader))  # refuses a bad one
        (folder / "per_class_ap.json").write_text(json.dumps(per_class_ap(results), indent=1))
        mapping_file = {
            "task_type": "detection",
            "labels": list(mapping.labels),
            "model": params["model"],
            "image_size": params.get("image_size") or DETECTOR_SIZES[params["model"]],
        }
        (folder / "class_mapping.json").write_text(json.dumps(mapping_file))
        (folder / "trials.json").write_text(json.dumps([asdict(t) for t in study.trials], indent=1))
        splits = {name: sorted(r.content_hash for r in rows if r.split == name) for name in SPLITS}
        (folder / "splits.json").write_text(json.dumps(splits))  # the register gate checks for leaks
        torch.save(
            {
                "model": model.state_dict(),
                "params": params,
                "labels": list(mapping.labels),
                "task_type": "detection",
            },
            folder / "state_dict.pt",
        )
        for name in ARTIFACTS:
            mlflow.log_artifact(str(folder / name))
        mlflow.log_params({f"best.{k}": v for k, v in params.items()} | {"best.trial": study.best_number})
        scores = results.scores
        mlflow.log_metrics(
            {
                "best_val_map": study.best_value,
                "test_map": scores.map,
                "test_map50": scores.map50,
                "data_wait_share": wait_share,
                "onnx_parity_ok": 1.0,  # a detector whose ONNX differs was refused above
                **parity.metrics(),
            }
        )
        height, width = results.sizes[0][1], results.sizes[0][0]
        available = onnxruntime.get_available_providers()
        mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name="model",
            input_example=np.zeros((1, 3, height, width), dtype=np.float32),
            pip_requirements=onnx_pip_requirements(),
            onnx_execution_providers=[
                p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available
            ],
        )
    nan = float("nan")
    return TrainOutcome(
        run_id=run_id,
        study_name=study.study_name,
        best_trial=study.best_number,
        best_params=params,
        val_accuracy=nan,
        test_accuracy=nan,
        onnx_max_abs_diff=parity.max_box_diff,
        labels=mapping.labels,
        trials=[asdict(t) for t in study.trials],
        data_wait_share=wait_share,
        task_type="detection",
        val_map=study.best_value,
        test_map=scores.map,
        test_map50=scores.map50,
    )
