"""The monitor-model flow against real parts: a champion registered on an MLflow server with lineage tags
naming a labeled manifest in a data root, a SQLite event store holding routed requests and served
samples, and a Prefect server (the test harness). An empty window and a model without a champion give
``no_data`` and no event; brighter served images give ``drift``, the ``model-monitor`` artifact and one
``loopline.drift.detected`` event on the Prefect server, and the verdict ``loopline status`` reads back."""

from __future__ import annotations

import hashlib
import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from PIL import Image

from loopline.data.labeled import LabeledRow, write_labeled_manifest
from loopline.data.store import LocalStore
from loopline.registry.registry import CHAMPION, move_alias, register_run
from loopline.rollout.events import ExperimentState, RoutedRequest, ServedSample
from loopline.rollout.store import EventStore
from loopline.settings import Settings
from tests.model_runs import logged_onnx_run

pytestmark = pytest.mark.integration
NAME = "monitored"
LABELS = ("a", "b")


def drift_events(timeout: float) -> list[Any]:
    """The ``loopline.drift.detected`` events the Prefect server received (delivered asynchronously)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as prefect:
        while True:  # a new filter each time: its window ends when it is made
            wanted = EventFilter(event=EventNameFilter(name=["loopline.drift.detected"]))
            events = prefect.read_events(wanted, limit=50).events  # the server's maximum
            if events or time.monotonic() > deadline:
                return list(events)
            time.sleep(0.5)


def monitor_artifacts() -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as prefect:
        return list(
            prefect.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["model-monitor"]))
            )
        )


def picture(rng: np.random.Generator, brighter: int = 0) -> bytes:
    pixels = np.clip(rng.normal(100 + brighter, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def labeled_data(root: Path, rng: np.random.Generator) -> str:
    """A labeled manifest of 60 test images (and 20 train) under ``root``; its version."""
    rows = []
    for i in range(80):
        data = picture(rng)
        content = hashlib.sha256(data).hexdigest()
        path = root / "images" / f"{content}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append(
            LabeledRow(content, str(path), LABELS[i % 2], "test" if i < 60 else "train", "d1", 1, 1, i, ())
        )
    version, _ = write_labeled_manifest(LocalStore(root), rows)
    return version


def served_traffic(store: EventStore, root: Path, version: str, rng: np.random.Generator) -> None:
    """80 champion answers in the last half hour, each with a brighter served image kept as a sample."""
    now = datetime.now(UTC)
    store.save_experiment(
        ExperimentState(NAME + "-v9", NAME, version, "9", "http://a", "http://b", "s", 0.0, 0, "running"),
        None,
    )
    requests, samples = [], []
    for i in range(80):
        at = now - timedelta(minutes=30) + timedelta(seconds=10 * i)
        data = picture(rng, brighter=60)
        content = hashlib.sha256(data).hexdigest()
        path = root / "production" / f"{content}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rid = f"req-{i}"
        requests.append(RoutedRequest(rid, NAME + "-v9", "champion", version, f"u{i}", 5.0, 200,
                                      LABELS[i % 2], 0.6, False, at))  # fmt: skip
        samples.append(ServedSample(rid, content, str(path), at))
    store.insert_requests(requests)
    store.insert_samples(samples)


def test_the_monitor_finds_brighter_images_and_says_when_it_cannot_judge(
    tracking_uri: str, prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    from flows.monitor import monitor_flow
    from loopline.monitoring.verdicts_store import latest_verdict
    from tasks.monitor import MonitorParameters

    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOOPLINE_MLFLOW_TRACKING_URI", tracking_uri)
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    labeled = labeled_data(root, rng)
    client = mlflow.MlflowClient(tracking_uri)
    run_id = logged_onnx_run(tmp_path / "run", labels=LABELS)
    tags = {"data_root": str(root), "labeled_version": labeled, "dataset_version": "d1"}
    version = register_run(client, NAME, run_id, tags, "# a model").version
    move_alias(client, NAME, CHAMPION, version, "test", "the champion")
    settings = Settings()
    store = EventStore(settings.resolved_event_store_url)
    served_traffic(store, root, version, rng)
    past = datetime.now(UTC) - timedelta(days=2)
    empty = monitor_flow(MonitorParameters(model_name=NAME, until=past))
    nobody = monitor_flow(MonitorParameters(model_name="never-registered"))
    assert drift_events(timeout=3) == []  # nothing judged, nothing announced
    verdict = monitor_flow(MonitorParameters(model_name=NAME))
    [event] = drift_events(timeout=30)
    artifacts = monitor_artifacts()
    assert empty.verdict == "no_data" and "no requests were routed" in empty.notes[0]
    assert nobody.verdict == "no_data" and "no champion" in nobody.notes[0]
    assert verdict.verdict == "drift" and verdict.champion_version == version, verdict
    assert "image:brightness" in verdict.drifted and verdict.samples == 80 and verdict.requests == 80
    assert event.resource.id == f"loopline.model.{NAME}"
    assert event.payload["severity"] == verdict.severity and "image:brightness" in event.payload["drifted"]
    brightness = next(f for f in event.payload["findings"] if f["name"] == "brightness")
    assert brightness["value"] < 0.01
    assert len(artifacts) == 3
    drift_report = next(a for a in artifacts if "Verdict: drift" in a.data)
    assert "image:brightness" in drift_report.data and "data:image/png;base64," in drift_report.data
    latest = latest_verdict(settings.resolved_event_store_url, NAME)
    assert latest is not None and latest.verdict == "drift" and latest.drifted == verdict.drifted
