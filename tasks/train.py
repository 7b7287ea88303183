"""Train tasks: HPO + training + tracking on a labeled manifest, then the trials table and run link."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext
from pydantic import BaseModel, Field

from blocks.servers import BLOCK_NAME, MLflowServer
from loopline.data.labeled import read_labeled_manifest
from loopline.data.store import open_store
from loopline.settings import get_settings
from loopline.training.hardware import detect_hardware, loader_bottleneck_warning
from loopline.training.hpo import Heartbeat
from loopline.training.report import render_best_trial, trial_rows
from loopline.training.search import SearchSpace
from loopline.training.train import TrainRequest, train_and_track
from tasks.label import LabeledDatasetRef


class TrainParameters(BaseModel):
    """How to train (rendered as a form in the Prefect UI)."""

    epochs: int = Field(default=8, ge=1, description="Epochs per trial (early stopping may end sooner).")
    n_trials: int = Field(default=4, ge=1, description="Optuna trials in the study (a rerun continues it).")
    pruner: Literal["median", "hyperband", "none"] = Field(default="median")
    search_space: SearchSpace = Field(default_factory=SearchSpace)
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when available.")
    experiment: str = Field(default="loopline", description="MLflow experiment.")
    optuna_storage_secret: str | None = Field(
        default=None,
        description="Name of a Prefect Secret block holding the Optuna storage URL (it may carry a password, "
        "so it is never a parameter itself). Default: LOOPLINE_OPTUNA_STORAGE, else SQLite in LOOPLINE_HOME.",
    )
    seed: int = 0
    trial_grace_seconds: int = Field(
        default=60,
        ge=2,
        description="A trial silent this long (its process died) is retried, resuming from its checkpoint.",
    )


class TrainedModelRef(BaseModel):
    run_id: str
    tracking_uri: str
    test_accuracy: float  # NaN for a detector (see test_map)
    val_accuracy: float
    onnx_max_abs_diff: float
    labels: list[str]
    labeled_version: str
    task_type: Literal["classification", "detection"] = "classification"
    val_map: float | None = None  # detection: COCO mAP@[.5:.95]
    test_map: float | None = None
    test_map50: float | None = None


def tracking_uri() -> str:
    try:
        server = MLflowServer.load(BLOCK_NAME)
        assert isinstance(server, MLflowServer)
        return server.tracking_uri
    except ValueError:  # no block saved: fall back to the settings
        return get_settings().resolved_mlflow_tracking_uri


def optuna_storage_url(secret_name: str | None) -> str:
    """The Optuna storage URL from a Secret block, else ``LOOPLINE_OPTUNA_STORAGE``, else local SQLite."""
    if secret_name:
        from prefect.blocks.system import Secret

        secret = Secret.load(secret_name)
        assert isinstance(secret, Secret)
        return str(secret.get())
    settings = get_settings()
    if settings.optuna_storage is not None:
        return settings.optuna_storage.get_secret_value()
    return f"sqlite:///{settings.resolved_home / 'optuna.db'}"


@task(name="train-model")
def train_model(labels: LabeledDatasetRef, params: TrainParameters) -> TrainedModelRef:
    """Run the study and track everything; no retries (Optuna owns failed trials)."""
    logger = get_run_logger()
    settings = get_settings()
    rows = read_labeled_manifest(open_store(labels.data_root, settings), labels.version)
    work = settings.resolved_home / "training" / labels.version
    work.mkdir(parents=True, exist_ok=True)
    context = FlowRunContext.get()
    hardware = detect_hardware(params.device)
    logger.info("Training on %s: %s", hardware.description, hardware)
    lineage = {
        "dataset_version": labels.dataset_version,
        "label_studio.project_id": str(labels.project_id),
        "label_studio.export_id": str(labels.export_id),
        "labels.alpha": "" if labels.alpha is None else f"{labels.alpha:.4f}",
        "prefect.flow_run_id": str(context.flow_run.id) if context and context.flow_run else "",
        "hardware": hardware.description,
    }
    uri = tracking_uri()
    request = TrainRequest(
        labeled_version=labels.version,
        dataset_version=labels.dataset_version,
        tracking_uri=uri,
        experiment=params.experiment,
        storage=optuna_storage_url(params.optuna_storage_secret),
        workdir=Path(work),
        space=params.search_space.for_batch_sizes(hardware.batch_sizes),
        epochs=params.epochs,
        n_trials=params.n_trials,
        pruner=params.pruner,
        seed=params.seed,
        device=hardware.device,
        num_workers=hardware.num_workers,
        pin_memory=hardware.pin_memory,
        lineage=lineage,
        heartbeat=Heartbeat(
            interval=max(1, params.trial_grace_seconds // 4), grace=params.trial_grace_seconds
        ),
    )
    outcome = train_and_track(rows, request)
    if outcome.task_type == "detection":
        logger.info(
            "Best trial %d: val mAP %.3f, test mAP %.3f (mAP@.5 %.3f)",
            outcome.best_trial,
            outcome.val_map or 0.0,
            outcome.test_map or 0.0,
            outcome.test_map50 or 0.0,
        )
    else:
        logger.info(
            "Best trial %d: val %.3f, test %.3f",
            outcome.best_trial,
            outcome.val_accuracy,
            outcome.test_accuracy,
        )
    warning = loader_bottleneck_warning(outcome.data_wait_share)
    if warning:
        logger.warning(warning)
    create_table_artifact(table=trial_rows(outcome), key="train-trials", description="Optuna trials")
    create_markdown_artifact(markdown=render_best_trial(outcome), key="train-best-trial")
    import mlflow

    experiment_id = mlflow.MlflowClient(uri).get_run(outcome.run_id).info.experiment_id
    create_link_artifact(
        link=f"{uri}/#/experiments/{experiment_id}/runs/{outcome.run_id}",
        key="train-mlflow-run",
        link_text=f"MLflow run {outcome.run_id}",
    )
    return TrainedModelRef(
        run_id=outcome.run_id,
        tracking_uri=uri,
        test_accuracy=outcome.test_accuracy,
        val_accuracy=outcome.val_accuracy,
        onnx_max_abs_diff=outcome.onnx_max_abs_diff,
        labels=list(outcome.labels),
        labeled_version=labels.version,
        task_type=outcome.task_type,
        val_map=outcome.val_map,
        test_map=outcome.test_map,
        test_map50=outcome.test_map50,
    )
