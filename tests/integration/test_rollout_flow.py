"""The ab-test flow against real parts: an MLflow registry, champion and challenger `loopline serve`
processes, the router process on the event store, and the demo traffic client. The challenger's server is
killed mid-experiment: every user is still answered (by the champion), the error-rate guardrail trips, the
flow rolls the challenger back (weight 0, the version tagged with the reasons, the
``loopline.rollout.rolled-back`` event on the Prefect server), and the champion alias never moves."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest

from loopline.deploy.local import ProcessServers
from loopline.registry.registry import CHALLENGER, CHAMPION, move_alias, register_run
from loopline.rollout.demo_traffic import TrafficStats, send_traffic
from loopline.rollout.store import EventStore
from loopline.services import process
from loopline.services.process import free_port
from loopline.settings import Settings
from tests.model_runs import logged_onnx_run

pytestmark = pytest.mark.integration
NAME = "ab-tested"


def rolled_back_events(timeout: float = 30.0) -> list[Any]:
    """The ``loopline.rollout.rolled-back`` events the Prefect server received (delivered asynchronously)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as prefect:
        while True:  # a new filter each time: its window ends when it is made
            wanted = EventFilter(event=EventNameFilter(name=["loopline.rollout.rolled-back"]))
            events = prefect.read_events(wanted, limit=50).events  # the server's maximum
            if events or time.monotonic() > deadline:
                return list(events)
            time.sleep(0.5)


def test_a_challenger_that_dies_mid_experiment_is_rolled_back_and_users_are_still_answered(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from flows.rollout import rollout_flow
    from loopline.rollout.policy import RampPolicy
    from loopline.rollout.stats import AbConfig
    from tasks.deploy import DeployParameters
    from tasks.rollout import RolloutParameters

    client = mlflow.MlflowClient(tracking_uri)
    digits = tuple(str(d) for d in range(10))
    runs = [logged_onnx_run(tmp_path / f"r{i}", labels=digits) for i in (1, 2)]
    v1, v2 = (register_run(client, NAME, run, {}, "# a model").version for run in runs)
    move_alias(client, NAME, CHAMPION, v1, "test", "the champion")
    move_alias(client, NAME, CHALLENGER, v2, "test", "the challenger")
    env = {
        "LOOPLINE_HOME": str(tmp_path / "home"),
        "LOOPLINE_MLFLOW_TRACKING_URI": tracking_uri,
        "LOOPLINE_SERVE_PORT_CHAMPION": str(free_port()),
        "LOOPLINE_SERVE_PORT_CHALLENGER": str(free_port()),
        "LOOPLINE_ROUTER_PORT": str(free_port()),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    servers = ProcessServers(settings, tracking_uri, NAME)
    router = f"http://127.0.0.1:{settings.router_port}"
    stats: list[TrafficStats] = []
    killed = threading.Event()

    def traffic() -> None:
        stats.append(asyncio.run(send_traffic(router, 30, rate=40, feedback_delay=0.3)))

    def kill_the_challenger_once_it_served() -> None:
        store = EventStore(settings.resolved_event_store_url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = settings.resolved_home.joinpath("events.db").exists() and store.latest_experiment(NAME)
            if found and store.arm_summaries(found.name)["challenger"].requests >= 20:
                servers.stop("challenger")
                killed.set()
                return
            time.sleep(0.5)

    params = RolloutParameters(
        ramp=RampPolicy(min_step_seconds=1, min_step_requests=10, steps=(0.5, 0.8, 1.0)),
        statistics=AbConfig(
            min_requests_per_arm=40, min_feedback_per_arm=40, latency_quantile=0.9, margin=0.5
        ),
        interval_seconds=1,
    )
    try:
        servers.start("champion")
        servers.start("challenger")
        (settings.resolved_home).mkdir(parents=True, exist_ok=True)
        threads = [
            threading.Thread(target=f, daemon=True) for f in (traffic, kill_the_challenger_once_it_served)
        ]
        for thread in threads:
            thread.start()
        with prefect_test_harness(server_startup_timeout=60):
            result = rollout_flow(
                NAME, str(tmp_path / "data"), DeployParameters(promote_directly=False), params
            )
            delivered = rolled_back_events()
        for thread in threads:
            thread.join(timeout=90)
        assert killed.is_set()
        assert result is not None and result.status == "rolled_back", result
        assert any("error rate" in reason for reason in result.reasons), result.reasons
        version = client.get_model_version(NAME, v2)
        assert (
            version.tags["rollout.verdict"] == "rolled_back"
            and "error rate" in version.tags["rollout.reasons"]
        )
        assert client.get_model_version_by_alias(NAME, CHAMPION).version == v1
        [event] = delivered  # the Prefect server holds the event automations act on
        assert event.resource.id == f"loopline.model.{NAME}" and event.payload["version"] == v2
        assert any("error rate" in reason for reason in event.payload["reasons"])
        [seen] = stats
        assert seen.answered and set(seen.answered) == {200}, seen.summary()  # every user answered
        store = EventStore(settings.resolved_event_store_url)
        summary = store.arm_summaries(f"{NAME}-v{v2}")
        assert summary["challenger"].errors > 0 and summary["champion"].errors == 0
        answer = httpx.post(f"{router}/v1/predict", content=b"not an image", headers={"X-User-Id": "u1"})
        assert answer.headers["X-Variant"] == "champion"  # weight 0: everyone on the champion
    finally:
        servers.stop("champion")
        servers.stop("challenger")
        from loopline.rollout.service import stop_router

        stop_router(settings)
    assert not process.port_in_use("127.0.0.1", settings.router_port)
