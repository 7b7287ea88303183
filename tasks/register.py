"""Register tasks: a trained run → a registered version with lineage and a model card, evaluated with its
ONNX artifact against the champion on the challenger's frozen test split (``loopline.registry.evaluate``),
and the decision recorded."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.context import FlowRunContext
from pydantic import BaseModel, Field, field_validator

from loopline.data.labeled import read_labeled_manifest
from loopline.data.pixels import ImageReader
from loopline.data.store import open_store
from loopline.registry.artifacts import fetch_model_files
from loopline.registry.detection_eval import DetectionEvaluations, evaluate_detectors
from loopline.registry.detection_gate import DetectionGateRules
from loopline.registry.evaluate import ModelEvaluations, evaluate_models
from loopline.registry.gate import GateRules
from loopline.registry.registry import (
    CHAMPION,
    Registered,
    check_mlflow,
    check_model_name,
    register_run,
    resolve_alias,
)
from loopline.registry.report import render_model_card
from loopline.settings import get_settings
from loopline.training.train import ONNX_TOLERANCE
from tasks.label import ChampionRef, LabeledDatasetRef
from tasks.retry import retry_on_transient_io
from tasks.train import TrainedModelRef


class RegisterParameters(BaseModel):
    """How to register and judge a model (rendered as a form in the Prefect UI)."""

    model_name: str = Field(default="loopline-classifier", description="Registered model name in MLflow.")
    gate: GateRules = Field(default_factory=GateRules, description="The gate of a classifier.")
    detection_gate: DetectionGateRules = Field(
        default_factory=DetectionGateRules,
        description="The gate of a detector: test mAP and its paired bootstrap against the champion.",
    )
    auto_approve: bool = Field(
        default=False, description="DEMO ONLY: approve without a person. Otherwise the run waits."
    )
    review_timeout_hours: float = Field(default=72, gt=0)

    @field_validator("model_name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        check_model_name(name)
        return name


class RegisteredModelRef(BaseModel):
    name: str
    version: str
    run_id: str
    decision: Literal["approved", "rejected", "gate_failed"]
    champion_version: str | None
    violations: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)  # what the gate could not tell (e.g. a small test set)


@task(name="find-champion", retries=2, retry_delay_seconds=[5, 15], retry_condition_fn=retry_on_transient_io)
def find_champion(model_name: str, tracking_uri: str) -> ChampionRef | None:
    """The version behind the ``champion`` alias, with the labeled data it learned from (its lineage tags)."""
    champion = resolve_alias(mlflow_client(tracking_uri), model_name, CHAMPION)
    if champion is None:
        return None
    return ChampionRef(
        name=model_name,
        version=str(champion.version),
        run_id=champion.run_id,
        labeled_version=champion.tags.get("labeled_version", ""),
        dataset_version=champion.tags.get("dataset_version", ""),
    )


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def lineage_tags(model: TrainedModelRef, labels: LabeledDatasetRef) -> dict[str, str]:
    settings = get_settings()
    context = FlowRunContext.get()
    run_id = str(context.flow_run.id) if context and context.flow_run else ""
    ui = settings.resolved_prefect_api_url.removesuffix("/api")
    return {
        "dataset_version": labels.dataset_version,
        "labeled_version": labels.version,
        "labeled_manifest_uri": labels.manifest_uri,  # `loopline lineage` reads the labels from here
        "data_root": labels.data_root,
        "label_studio.project_id": str(labels.project_id),
        "label_studio.export_id": str(labels.export_id),
        "labels.alpha": "" if labels.alpha is None else f"{labels.alpha:.4f}",
        "training.run_id": model.run_id,
        **(
            {"training.test_map": f"{model.test_map:.4f}", "task_type": "detection"}
            if model.task_type == "detection" and model.test_map is not None
            else {"training.test_accuracy": f"{model.test_accuracy:.4f}"}
        ),
        "prefect.flow_run_id": run_id,
        "prefect.flow_run_url": f"{ui}/runs/flow-run/{run_id}" if run_id else "",
        "git.commit": git_commit(settings.resolved_project_root),
        "onnx.max_abs_diff": f"{model.onnx_max_abs_diff:.3g}",
        # a detector whose ONNX graph does not reproduce PyTorch is refused at export (max box diff in px)
        "onnx.parity_ok": str(model.task_type == "detection" or model.onnx_max_abs_diff <= ONNX_TOLERANCE),
    }


def mlflow_client(tracking_uri: str) -> Any:
    import mlflow

    check_mlflow(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri)


@task(
    name="register-version", retries=2, retry_delay_seconds=[5, 15], retry_condition_fn=retry_on_transient_io
)
def register_version(
    model: TrainedModelRef, labels: LabeledDatasetRef, params: RegisterParameters
) -> Registered:
    """Register the training run once (a rerun returns the same version) with lineage and a model card."""
    client = mlflow_client(model.tracking_uri)
    tags = lineage_tags(model, labels)
    registered = register_run(client, params.model_name, model.run_id, tags, description="")
    if not client.get_model_version(params.model_name, registered.version).description:  # also heals a crash
        card = render_model_card(params.model_name, registered.version, tags, tuple(model.labels))
        client.update_model_version(params.model_name, registered.version, card)
    get_run_logger().info(
        "%s %s version %s (run %s)",
        "Registered" if registered.created else "Already registered:",
        params.model_name,
        registered.version,
        model.run_id,
    )
    return registered


@task(
    name="evaluate-against-champion",
    retries=2,
    retry_delay_seconds=[5, 15],
    retry_condition_fn=retry_on_transient_io,
)
def evaluate_against_champion(
    registered: Registered, model: TrainedModelRef, labels: LabeledDatasetRef, params: RegisterParameters
) -> ModelEvaluations | DetectionEvaluations:
    """The challenger and (if any) the champion, both through ONNX Runtime on the challenger's test split
    (detectors: COCO mAP, and their worst images drawn)."""
    settings = get_settings()
    client = mlflow_client(model.tracking_uri)
    rows = read_labeled_manifest(open_store(labels.data_root, settings), labels.version)
    champion = resolve_alias(client, params.model_name, CHAMPION)
    if champion is not None and str(champion.version) == registered.version:
        champion = None  # a rerun after this version was approved: nothing to compare with
    with tempfile.TemporaryDirectory() as tmp:
        challenger_files = fetch_model_files(model.run_id, Path(tmp) / "challenger")
        champion_files = fetch_model_files(champion.run_id, Path(tmp) / "champion") if champion else None
        if challenger_files.detector:
            return evaluate_detectors(
                rows,
                challenger_files,
                champion_files,
                str(champion.version) if champion else None,
                ImageReader(settings).open,
            )
        return evaluate_models(
            rows,
            challenger_files,
            champion_files,
            str(champion.version) if champion else None,
            ImageReader(settings).open,
        )
