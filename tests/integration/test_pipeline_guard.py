"""A scheduled pipeline run with nothing to do completes early and says why; one whose source cannot be
reached fails with a named error and leaves nothing behind; an S3 data root that is down for a while is
waited out, and one down for good is named (the flows in-process, on a temporary Prefect server, a real
MLflow server, a real S3 API server behind a relay the test cuts)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import mlflow
import pytest

from loopline.data.collect import collect
from loopline.data.demo import write_demo_data
from loopline.data.sources import LocalFolderSource
from loopline.data.store import LocalStore, S3Store, open_store
from loopline.errors import DataRootUnavailable, SourceUnreachable
from loopline.services.process import free_port
from loopline.settings import get_settings
from tasks.retry import retry_on_transient_io
from tests.integration.s3server import s3_server
from tests.tcp_relay import tcp_relay

pytestmark = pytest.mark.integration
DIGITS = [str(d) for d in range(10)]


@pytest.fixture
def no_later_stages(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records any stage after collect that the pipeline reaches (none should be)."""
    import flows.pipeline as pipeline

    reached: list[str] = []
    for stage in ("label_stage", "train_stage", "register_stage", "deploy_stage"):
        monkeypatch.setattr(pipeline, stage, lambda *a, _s=stage, **k: reached.append(_s))
    return reached


def params(source: str) -> Any:
    from flows.pipeline import PipelineParameters

    return PipelineParameters.model_validate({"collect": {"source": source}, "label": {"labels": DIGITS}})


def test_nothing_new_completes_early_and_says_so(
    prefect_api: str,
    tracking_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_later_stages: list[str],
) -> None:
    from flows.pipeline import pipeline_flow

    data = tmp_path / "data"
    monkeypatch.setenv("LOOPLINE_DATA_ROOT", str(data))
    monkeypatch.setenv("LOOPLINE_MLFLOW_TRACKING_URI", tracking_uri)
    demo = write_demo_data(tmp_path / "demo", rounds=1, limit=60)
    source = str(demo.rounds[0])
    # an earlier night: this collection was labeled and trained on by another pipeline run
    version = collect(LocalFolderSource(source), LocalStore(data)).version
    client = mlflow.MlflowClient(tracking_uri)
    client.create_registered_model("loopline-classifier")
    run_id = client.create_run(client.create_experiment("guard")).info.run_id
    client.create_model_version(
        "loopline-classifier",
        f"runs:/{run_id}/model",
        run_id,
        tags={"dataset_version": version, "prefect.flow_run_id": "an-earlier-run"},
    )

    state = pipeline_flow(params(source), return_state=True)

    assert state.is_completed(), state
    assert "Nothing new to do" in (state.message or "") and "version 1" in (state.message or "")
    result = state.result()
    assert result.dataset.version == version and result.labels is None and result.stopped_early
    assert no_later_stages == []  # no Label Studio project, no training

    # with stop_when_unchanged off, the run goes on to label
    forced = params(source).model_copy(update={"stop_when_unchanged": False})
    pipeline_flow(forced, return_state=True)
    assert no_later_stages[:1] == ["label_stage"]


def test_an_unreachable_source_fails_the_run_with_a_named_error_and_writes_nothing(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_later_stages: list[str]
) -> None:
    import flows.collect
    import flows.pipeline
    from flows.pipeline import pipeline_flow

    data = tmp_path / "data"
    monkeypatch.setenv("LOOPLINE_DATA_ROOT", str(data))
    monkeypatch.setenv("LOOPLINE_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    monkeypatch.setenv("LOOPLINE_S3_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("LOOPLINE_S3_SECRET_ACCESS_KEY", "test")
    quick = flows.collect.collect_images.with_options(retry_delay_seconds=0)  # the same retries, no waits
    monkeypatch.setattr(flows.collect, "collect_images", quick)
    check = flows.pipeline.nothing_to_collect.with_options(retry_delay_seconds=0)
    monkeypatch.setattr(flows.pipeline, "nothing_to_collect", check)

    state = pipeline_flow(params("s3://incoming/nightly"), return_state=True)

    assert state.is_failed(), state
    with pytest.raises(SourceUnreachable, match="Cannot reach the S3 endpoint of 's3://incoming/nightly'"):
        state.result()
    assert no_later_stages == []
    left = [p.relative_to(data) for p in data.rglob("*") if p.is_file()] if data.exists() else []
    assert left == []  # no manifest, no image, no probe file


def test_an_empty_incoming_folder_is_nothing_new_and_the_served_sample_alone_is_collected(
    prefect_api: str,
    tracking_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_later_stages: list[str],
) -> None:
    from flows.pipeline import pipeline_flow

    data = tmp_path / "data"
    monkeypatch.setenv("LOOPLINE_DATA_ROOT", str(data))
    monkeypatch.setenv("LOOPLINE_MLFLOW_TRACKING_URI", tracking_uri)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    nightly = params(str(incoming)).model_copy(deep=True)
    nightly.collect.production_sample = True

    state = pipeline_flow(nightly, return_state=True)  # nothing landed, nothing served

    assert state.is_completed(), state
    assert "Nothing new to collect" in (state.message or "") and "add images to" in (state.message or "")
    assert state.result().dataset is None and no_later_stages == []
    assert not data.exists() or not any(data.rglob("*.jsonl"))  # no manifest written

    import numpy as np
    from PIL import Image

    (data / "production").mkdir(parents=True)
    for seed in range(3):  # what the router kept of served images: three different pictures
        pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(data / "production" / f"{seed}.png")
    labeled: list[Any] = []

    def label_stage(dataset: Any, *args: Any) -> None:
        labeled.append(dataset)
        raise RuntimeError("the test stops here")

    import flows.pipeline

    monkeypatch.setattr(flows.pipeline, "label_stage", label_stage)
    pipeline_flow(nightly, return_state=True)
    [dataset] = labeled  # the served images alone go to labeling
    assert dataset.images == 3


def test_an_s3_data_root_down_for_a_while_is_waited_out_and_one_down_for_good_is_named(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    import flows.collect
    from flows.collect import collect_flow
    from tasks.collect import CollectParameters

    demo = write_demo_data(tmp_path / "demo", rounds=2, limit=40)
    with s3_server(tmp_path) as s3, tcp_relay(int(s3.endpoint.rsplit(":", 1)[1])) as relay:
        s3.client().create_bucket(Bucket="lake")
        monkeypatch.setenv("LOOPLINE_DATA_ROOT", "s3://lake/data")
        monkeypatch.setenv("LOOPLINE_S3_ENDPOINT_URL", relay.endpoint)
        monkeypatch.setenv("LOOPLINE_S3_ACCESS_KEY_ID", s3.access_key)
        monkeypatch.setenv("LOOPLINE_S3_SECRET_ACCESS_KEY", s3.secret_key)
        monkeypatch.setenv("LOOPLINE_S3_MAX_ATTEMPTS", "2")
        outage_over = threading.Event()

        def back_after_the_first_failed_try(task: Any, task_run: Any, state: Any) -> bool:
            """The task's own retry decision; the first outage ends once a try has failed in it (a timer
            could end it before a loaded machine's first try)."""
            retry = retry_on_transient_io(task, task_run, state)
            if not outage_over.is_set():
                outage_over.set()
                relay.restore()
            return retry

        # The task waits 5, 30 and 60 s between its tries; here 2 s.
        quick = flows.collect.collect_images.with_options(
            retry_delay_seconds=[2, 2, 2], retry_condition_fn=back_after_the_first_failed_try
        )
        monkeypatch.setattr(flows.collect, "collect_images", quick)
        store = open_store("s3://lake/data", get_settings())
        assert isinstance(store, S3Store)

        relay.cut()
        state = collect_flow(CollectParameters(source=str(demo.rounds[0])), return_state=True)
        assert state.is_completed(), state
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            )
        assert max(r.run_count for r in runs if r.name.startswith("collect-images")) > 1  # it was retried
        assert len(store.list_keys("manifests/")) == 1

        relay.cut()  # down for good: every try fails, then the run fails with the named error
        state = collect_flow(CollectParameters(source=str(demo.rounds[1])), return_state=True)
        assert state.is_failed(), state
        with pytest.raises(DataRootUnavailable, match=f"did not answer at {relay.endpoint}"):
            state.result()
        relay.restore()
        assert len(store.list_keys("manifests/")) == 1  # nothing of the second collection was kept
