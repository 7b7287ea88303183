"""Files of a training run in MLflow: its ONNX model, class mapping and split membership."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelFiles:
    """A trained model as the register stage evaluates it (downloaded from its MLflow run)."""

    onnx: Path
    labels: tuple[str, ...]  # output order
    input_size: int
    splits: Mapping[str, list[str]]  # split → content hashes it trained, validated or was tested on


def fetch_model_files(run_id: str, folder: Path) -> ModelFiles:
    """Download the run's ONNX model, ``class_mapping.json`` and ``splits.json`` into ``folder``."""
    onnx, mapping, splits = download_model_files(run_id, folder)
    return ModelFiles(onnx, tuple(mapping["labels"]), int(mapping["input_size"]), splits)


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
