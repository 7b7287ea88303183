"""The ab-test flow against real parts: an MLflow registry, champion and challenger `loopline serve`
processes, the router process on the event store, and the demo traffic client. The challenger's server is
killed mid-experiment: every user is still answered (by the champion), the error-rate guardrail trips, the
flow rolls the challenger back (weight 0, the version tagged with the reasons, the
``loopline.rollout.rolled-back`` event on the Prefect server), and the champion alias never moves."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest

from loopline.deploy.local import ProcessServers
from loopline.registry.registry import CHAMPION
from loopline.rollout.service import stop_router
from loopline.rollout.store import EventStore
from loopline.services import process
from tests.rollout_scenario import play_dying_challenger, register_pair, scenario_settings

pytestmark = pytest.mark.integration
NAME = "ab-tested"


def rolled_back_events(timeout: float = 30.0) -> list[Any]:
    """The ``loopline.rollout.rolled-back`` events the Prefect server received (delivered asynchronously)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as prefect:
        while True:  # a new filter each time: its window ends when it is made
            wanted = EventFilter(
                event=EventNameFilter(name=["loopline.rollout.rolled-back"]),
                resource=EventResourceFilter(id=[f"loopline.model.{NAME}"]),
            )
            events = prefect.read_events(wanted, limit=50).events  # the server's maximum
            if events or time.monotonic() > deadline:
                return list(events)
            time.sleep(0.5)


def test_a_challenger_that_dies_mid_experiment_is_rolled_back_and_users_are_still_answered(
    prefect_api: str, tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = mlflow.MlflowClient(tracking_uri)
    v1, v2 = register_pair(client, NAME, tmp_path)
    settings = scenario_settings(monkeypatch, tmp_path / "home", tracking_uri)
    servers = ProcessServers(settings, tracking_uri, NAME)
    router = f"http://127.0.0.1:{settings.router_port}"
    try:
        servers.start("champion")
        servers.start("challenger")
        played = play_dying_challenger(
            settings, NAME, lambda: servers.stop("challenger"), str(tmp_path / "data"),
            while_running=rolled_back_events,
        )  # fmt: skip
        result = played.result
        assert played.killed
        assert result is not None and result.status == "rolled_back", result
        assert any("error rate" in reason for reason in result.reasons), result.reasons
        version = client.get_model_version(NAME, v2)
        assert (
            version.tags["rollout.verdict"] == "rolled_back"
            and "error rate" in version.tags["rollout.reasons"]
        )
        assert client.get_model_version_by_alias(NAME, CHAMPION).version == v1
        [event] = played.during  # the Prefect server holds the event automations act on
        assert event.resource.id == f"loopline.model.{NAME}" and event.payload["version"] == v2
        assert any("error rate" in reason for reason in event.payload["reasons"])
        seen = played.traffic
        assert seen.answered and set(seen.answered) == {200}, seen.summary()  # every user answered
        store = EventStore(settings.resolved_event_store_url)
        summary = store.arm_summaries(f"{NAME}-v{v2}")
        assert summary["challenger"].errors > 0 and summary["champion"].errors == 0
        answer = httpx.post(f"{router}/v1/predict", content=b"not an image", headers={"X-User-Id": "u1"})
        assert answer.headers["X-Variant"] == "champion"  # weight 0: everyone on the champion
    finally:
        servers.stop("champion")
        servers.stop("challenger")
        stop_router(settings)
    assert not process.port_in_use("127.0.0.1", settings.router_port)
