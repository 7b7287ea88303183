"""The scenario the A/B integration tests play on each deploy target: a champion and a challenger
registered, demo traffic through the router, the challenger's server stopped once it answered 20 of its
users, and the ab-test flow run to its end with quick parameters on the session's Prefect test server
(the caller asks for the ``prefect_api`` fixture)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loopline.registry.registry import CHALLENGER, CHAMPION, move_alias, register_run
from loopline.rollout.demo_traffic import TrafficStats, send_traffic
from loopline.rollout.store import EventStore
from loopline.services.process import free_port
from loopline.settings import Settings
from tests.model_runs import logged_onnx_run


def register_pair(client: Any, name: str, folder: Path) -> tuple[str, str]:
    """v1 as champion, v2 as challenger (digit labels)."""
    digits = tuple(str(d) for d in range(10))
    runs = [logged_onnx_run(folder / f"r{i}", labels=digits) for i in (1, 2)]
    v1, v2 = (register_run(client, name, run, {}, "# a model").version for run in runs)
    move_alias(client, name, CHAMPION, v1, "test", "the champion")
    move_alias(client, name, CHALLENGER, v2, "test", "the challenger")
    return v1, v2


def scenario_settings(
    monkeypatch: pytest.MonkeyPatch, home: Path, tracking_uri: str, **extra: str
) -> Settings:
    """The process's environment for the flow (its own home and ports), as Settings."""
    env = {
        "LOOPLINE_HOME": str(home),
        "LOOPLINE_MLFLOW_TRACKING_URI": tracking_uri,
        "LOOPLINE_SERVE_PORT_CHAMPION": str(free_port()),
        "LOOPLINE_SERVE_PORT_CHALLENGER": str(free_port()),
        "LOOPLINE_ROUTER_PORT": str(free_port()),
        **extra,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    settings.resolved_home.mkdir(parents=True, exist_ok=True)
    return settings


@dataclass
class Played:
    result: Any  # the flow's RolloutRef
    traffic: TrafficStats
    killed: bool
    during: Any  # what ``while_running`` returned (inside the Prefect test server)


def play_dying_challenger(
    settings: Settings,
    model: str,
    stop_challenger: Callable[[], object],
    data_root: str,
    target: str | None = None,
    while_running: Callable[[], Any] = lambda: None,
) -> Played:
    """Run the ab-test flow while demo traffic flows and the challenger's server is stopped mid-way."""
    from flows.rollout import rollout_flow
    from loopline.rollout.policy import RampPolicy
    from loopline.rollout.stats import AbConfig
    from tasks.deploy import DeployParameters
    from tasks.rollout import RolloutParameters

    router = f"http://127.0.0.1:{settings.router_port}"
    stats: list[TrafficStats] = []
    killed, done = threading.Event(), threading.Event()

    def traffic() -> None:  # until the flow ends (a loaded machine needs longer to trip the guardrail)
        stats.append(asyncio.run(send_traffic(router, 240, rate=40, feedback_delay=0.3, stop=done)))

    def stop_the_challenger_once_it_served() -> None:  # however long a loaded machine takes to get there
        store = EventStore(settings.resolved_event_store_url)
        while not done.is_set():
            found = store.latest_experiment(model)
            if found and store.arm_summaries(found.name)["challenger"].requests >= 20:
                stop_challenger()
                killed.set()
                return
            time.sleep(0.5)

    params = RolloutParameters(
        ramp=RampPolicy(
            min_step_seconds=1, min_step_requests=10, steps=(0.5, 0.8, 1.0), max_duration_seconds=200
        ),
        statistics=AbConfig(
            min_requests_per_arm=40, min_feedback_per_arm=40, latency_quantile=0.9, margin=0.5
        ),
        interval_seconds=1,
        review_timeout_seconds=30,  # an experiment that never decides fails the test instead of hanging it
    )
    deploy = DeployParameters(target=target, promote_directly=False)  # type: ignore[arg-type]
    threads = [threading.Thread(target=f, daemon=True) for f in (traffic, stop_the_challenger_once_it_served)]
    for thread in threads:
        thread.start()
    try:
        result = rollout_flow(model, data_root, deploy, params)
    finally:
        done.set()
    during = while_running()
    for thread in threads:
        thread.join(timeout=90)
    [seen] = stats
    return Played(result, seen, killed.is_set(), during)
