"""Training with Optuna and MLflow against a real MLflow server: nested trial runs, resumed studies,
the best model's test metrics, curves, confusion matrix and an ONNX model with a parity metric."""

from pathlib import Path

import pytest

from loopline.data.demo import labeled_digit_rows
from loopline.data.labeled import LabeledRow
from loopline.data.store import LocalStore
from loopline.training.search import FloatRange, SearchSpace
from loopline.training.train import TrainRequest, train_and_track

pytestmark = pytest.mark.integration


def digit_rows(folder: Path, n: int = 500) -> list[LabeledRow]:
    return labeled_digit_rows(LocalStore(folder), n, dataset_version="dv")


def test_hpo_is_tracked_and_resumable(tracking_uri: str, tmp_path: Path) -> None:
    import mlflow

    rows = digit_rows(tmp_path / "images")
    space = SearchSpace(lr=FloatRange(low=1e-3, high=1e-2, log=True), batch_sizes=[32], optimizers=["adamw"])
    request = TrainRequest(
        labeled_version="lv1",
        dataset_version="dv",
        tracking_uri=tracking_uri,
        experiment="test-train",
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        workdir=tmp_path / "work",
        space=space,
        epochs=3,
        n_trials=3,
        lineage={"label_studio.export_id": "2"},
    )
    outcome = train_and_track(rows, request)
    assert outcome.test_accuracy > 0.3 and outcome.onnx_max_abs_diff < 1e-3  # chance is 0.1
    assert len(outcome.trials) == 3

    client = mlflow.MlflowClient(tracking_uri)
    parent = client.get_run(outcome.run_id)
    assert parent.data.params["labeled_version"] == "lv1"
    assert parent.data.tags["label_studio.export_id"] == "2"
    assert parent.data.metrics["onnx_parity_ok"] == 1.0
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id)}
    assert {
        "confusion_matrix.png",
        "learning_curves.png",
        "per_class_metrics.json",
        "class_mapping.json",
    } <= artifacts
    experiment = client.get_experiment_by_name("test-train")
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{outcome.run_id}'")
    assert len(children) == 3
    assert {c.data.tags["optuna.state"] for c in children} <= {"complete", "pruned"}
    assert all("val_accuracy" in c.data.metrics for c in children)
    model = mlflow.pyfunc.load_model(f"runs:/{outcome.run_id}/model")
    assert model.metadata.flavors.get("onnx") is not None

    again = train_and_track(rows, TrainRequest(**{**request.__dict__, "n_trials": 4}))
    assert len(again.trials) == 4  # the study resumed: one new trial, not four
    assert not again.reused and again.run_id != outcome.run_id
    same = train_and_track(rows, TrainRequest(**{**request.__dict__, "n_trials": 4}))
    assert same.reused and same.run_id == again.run_id  # nothing trained or logged twice
    assert same.best_params == again.best_params and same.labels == again.labels
