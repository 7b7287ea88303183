"""Train stage: a labeled manifest → the best model Optuna finds, tracked in MLflow, exported to ONNX.

Input: a ``LabeledDatasetRef`` (from label) and ``TrainParameters``. Output: a ``TrainedModelRef`` (MLflow
run id, test accuracy, ONNX parity). Artifacts: ``train-trials`` (table), ``train-best-trial``
(markdown), ``train-mlflow-run`` (link).
Run: ``prefect deployment run 'train-model/local' -p labels='{…}'``; on a cluster the same flow runs on
the ``k8s-gpu`` work pool (deployments/k8s-gpu/base-job-template.json). The pipeline calls
``train_stage``: in its own process, or dispatched to a training deployment with ``run_deployment``.
"""

from __future__ import annotations

import hashlib
from typing import cast

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment

from tasks.label import LabeledDatasetRef
from tasks.train import TrainedModelRef, TrainParameters, train_model


@flow(name="train-model", persist_result=True, result_serializer="json")
def train_flow(labels: LabeledDatasetRef, params: TrainParameters | None = None) -> TrainedModelRef:
    """Train and track a model on a labeled dataset version. The result is persisted (JSON, in the
    configured result storage) so a pipeline on another machine can read it."""
    return train_model(labels, params or TrainParameters())


def train_stage(
    labels: LabeledDatasetRef, params: TrainParameters, deployment: str | None
) -> TrainedModelRef:
    """Train in this process, or, when ``deployment`` names one (e.g. ``train-model/k8s-gpu``), as a run
    of that deployment on its work pool, waiting for it and reading its result from result storage."""
    if deployment is None:
        return train_flow(labels, params)
    logger = get_run_logger()
    context = FlowRunContext.get()
    parameters = {"labels": labels.model_dump(mode="json"), "params": params.model_dump(mode="json")}
    # The same pipeline run (resumed after an approval, or retried) finds its training run again.
    digest = hashlib.sha256(params.model_dump_json().encode()).hexdigest()
    parent = context.flow_run.id if context and context.flow_run else "none"
    key = f"train:{parent}:{labels.version}:{digest[:12]}"
    logger.info("Dispatching training to deployment %r", deployment)
    child = cast(  # sync here: run_deployment returns a coroutine only when called from async code
        FlowRun, run_deployment(deployment, parameters=parameters, timeout=None, idempotency_key=key)
    )
    state = child.state
    if state is None or not state.is_completed():
        name = state.name if state else "unknown"
        raise RuntimeError(
            f"The training run {child.name!r} ({child.id}) of deployment {deployment!r} ended {name}. "
            "To fix this, read that run's logs in the Prefect UI, then rerun the pipeline (the Optuna study "
            "and checkpoints resume where it stopped)."
        )
    return TrainedModelRef.model_validate(state.result())
