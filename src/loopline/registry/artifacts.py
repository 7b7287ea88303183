"""Files of a training run in MLflow: its ONNX model, class mapping and split membership."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline.errors import RegistryError


@dataclass(frozen=True)
class ModelFiles:
    """A trained model as the register stage evaluates it (downloaded from its MLflow run)."""

    onnx: Path
    labels: tuple[str, ...]  # output order
    input_size: int  # 0 for a detector (it takes any size)
    splits: Mapping[str, list[str]]  # split → content hashes it trained, validated or was tested on
    detector: bool = False  # class_mapping.json says "task_type": "detection"


def fetch_model_files(run_id: str, folder: Path, tracking_uri: str | None = None) -> ModelFiles:
    """Download the run's ONNX model, ``class_mapping.json`` and ``splits.json`` into ``folder``."""
    onnx, mapping, splits = download_model_files(run_id, folder, tracking_uri)
    if mapping.get("task_type") == "detection":
        return ModelFiles(onnx, tuple(mapping["labels"]), 0, splits, detector=True)
    return ModelFiles(onnx, tuple(mapping["labels"]), int(mapping["input_size"]), splits)


def download_model_files(
    run_id: str, folder: Path, tracking_uri: str | None = None
) -> tuple[Path, dict[str, Any], dict[str, list[str]]]:
    """(ONNX file, class mapping ``{labels, input_size}``, splits ``{split: [content hashes]}``), from the
    MLflow server at ``tracking_uri`` (default: the process's tracking URI)."""
    import mlflow

    def fetch(path: str, artifact_uri: str | None = None) -> Path:
        try:
            download = mlflow.artifacts.download_artifacts
            if not artifact_uri:
                found = download(
                    run_id=run_id, artifact_path=path, dst_path=str(folder), tracking_uri=tracking_uri
                )
                return Path(found)
            staging = folder / f".{path}-download"  # the logged model's own files, laid out as path/
            staging.mkdir(parents=True, exist_ok=True)
            found = download(artifact_uri=artifact_uri, dst_path=str(staging), tracking_uri=tracking_uri)
            shutil.rmtree(folder / path, ignore_errors=True)  # a download before this one
            moved = Path(found).rename(folder / path)
            shutil.rmtree(staging, ignore_errors=True)
            return moved
        except Exception as exc:  # MlflowException, OSError, HTTP errors of the artifact proxy
            raise RegistryError(
                f"The training run {run_id} has no readable {path!r} artifact ({type(exc).__name__}: "
                f"{exc}). To fix this, check the MLflow server (LOOPLINE_MLFLOW_TRACKING_URI) and that the "
                "run was logged by loopline's train stage (it logs model/, class_mapping.json, splits.json)."
            ) from exc

    model_dir = fetch("model", _logged_model_location(run_id, tracking_uri))
    mapping = json.loads(fetch("class_mapping.json").read_text())
    splits = json.loads(fetch("splits.json").read_text())
    onnx = sorted(model_dir.glob("*.onnx"))
    if not onnx:
        found = sorted(p.name for p in model_dir.iterdir())
        raise RegistryError(
            f"The training run {run_id} logged no ONNX file under model/ (found {found}). To fix this, "
            "retrain with loopline's train stage, which exports and logs the ONNX model."
        )
    return onnx[0], mapping, splits


def _logged_model_location(run_id: str, tracking_uri: str | None) -> str | None:
    """Where the run's logged model ``model`` keeps its files (MLflow 3 stores a model logged by
    ``log_model`` as a LoggedModel, not under the run's artifacts); None for a run without one.

    Resolved here rather than through ``runs:/RUN/model``: MLflow's fallback from a run to its logged
    model resolves the model's files against the process-wide tracking URI, not the one passed in."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    try:
        experiment = client.get_run(run_id).info.experiment_id
        models = client.search_logged_models(experiment_ids=[experiment], filter_string="name = 'model'")
    except Exception:  # the run's own artifacts are tried next, with a named error if they fail too
        return None
    matched = [m for m in models if m.source_run_id == run_id]
    return str(matched[0].artifact_location) if matched else None
