"""Detector training with Optuna and MLflow against a real MLflow server: the parent run holds the test
split's COCO mAP, per-class AP, a detection class mapping and the detector's ONNX parity; trials log
their validation mAP; a rerun returns the finished training."""

import json
from pathlib import Path

import pytest

from loopline.training.search import FloatRange, SearchSpace
from loopline.training.train import TrainRequest, train_and_track
from tests.unit.test_detection_training import scene_rows

pytestmark = pytest.mark.integration


def test_a_detector_is_tracked_with_map_and_onnx_parity(tracking_uri: str, tmp_path: Path) -> None:
    import mlflow

    rows = scene_rows(tmp_path / "images", 20)
    space = SearchSpace(
        detectors=["fasterrcnn_mobilenet_v3_large_320_fpn"],
        lr=FloatRange(low=1e-3, high=2e-3, log=True),
        detector_batch_sizes=[4],
        optimizers=["adamw"],
    )
    request = TrainRequest(
        labeled_version="det1",
        dataset_version="dv",
        tracking_uri=tracking_uri,
        experiment="test-train-detection",
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        workdir=tmp_path / "work",
        space=space,
        epochs=1,
        n_trials=1,
        pruner="none",
    )
    outcome = train_and_track(rows, request)
    assert outcome.task_type == "detection" and outcome.test_map is not None
    assert 0.0 <= outcome.test_map <= 1.0 and outcome.best_params["model"] == space.detectors[0]

    client = mlflow.MlflowClient(tracking_uri)
    parent = client.get_run(outcome.run_id)
    metrics = parent.data.metrics
    assert {"best_val_map", "test_map", "test_map50", "onnx_max_box_diff"} <= set(metrics)
    assert metrics["onnx_parity_ok"] == 1.0 and parent.data.tags["task_type"] == "detection"
    folder = Path(mlflow.artifacts.download_artifacts(run_id=outcome.run_id, dst_path=str(tmp_path / "a")))
    mapping = json.loads((folder / "class_mapping.json").read_text())
    assert mapping["task_type"] == "detection" and mapping["model"] == space.detectors[0]
    assert mapping["labels"] == list(outcome.labels)
    assert set(json.loads((folder / "per_class_ap.json").read_text())) == set(outcome.labels)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{outcome.run_id}'"
    )
    assert len(children) == 1 and "val_map" in children[0].data.metrics
    assert "val_loss" not in children[0].data.metrics  # detectors have none outside training

    again = train_and_track(rows, request)
    assert again.reused and again.run_id == outcome.run_id and again.test_map == outcome.test_map
