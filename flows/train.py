"""Train stage: a labeled manifest → the best model Optuna finds, tracked in MLflow, exported to ONNX.

Input: a ``LabeledDatasetRef`` (from label) and ``TrainParameters``. Output: a ``TrainedModelRef`` (MLflow
run id, test accuracy, ONNX parity). Artifacts: ``train-trials`` (table), ``train-best-trial``
(markdown), ``train-mlflow-run`` (link).
Run: ``prefect deployment run 'train-model/local' -p labels='{…}'``; on a cluster the same flow runs on
the ``k8s-gpu`` work pool (deployments/k8s-gpu/base-job-template.json).
"""

from __future__ import annotations

from prefect import flow

from tasks.label import LabeledDatasetRef
from tasks.train import TrainedModelRef, TrainParameters, train_model


@flow(name="train-model")
def train_flow(labels: LabeledDatasetRef, params: TrainParameters | None = None) -> TrainedModelRef:
    """Train and track a model on a labeled dataset version."""
    return train_model(labels, params or TrainParameters())
