"""The A/B stage on the docker target against a real Docker engine, the serving image built from this
checkout, a real MLflow registry and the event store on SQLite (the embedded default, mounted into the
router's container) and on a real PostgreSQL: the router runs as a container beside the champion's and
challenger's containers, the challenger's container is removed mid-experiment, every user is still
answered, the flow rolls the challenger back and stops its container."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest

from loopline.deploy.docker import ContainerServers, container_name
from loopline.deploy.images import BuiltImage
from loopline.registry.registry import CHAMPION
from loopline.rollout.docker_router import CONTAINER, DockerRouter
from loopline.rollout.store import EventStore
from loopline.services.process import free_port, port_in_use
from loopline.settings import Settings
from tests.postgres import running_postgres
from tests.rollout_scenario import play_dying_challenger, register_pair, scenario_settings

pytestmark = pytest.mark.integration
NAME = "ab-boxed"


def settled_summaries(store: EventStore, experiment: str, quiet: float = 2.0) -> Any:
    """The arms' summaries once they stop changing for ``quiet`` seconds (the router flushes its buffer
    every 0.5 s; a loaded machine may take longer)."""

    def counts(summaries: Any) -> list[tuple[int, int, int]]:
        return [(arm.requests, arm.errors, arm.feedback) for _, arm in sorted(summaries.items())]

    deadline = time.monotonic() + 60
    last = store.arm_summaries(experiment)
    while True:
        time.sleep(quiet)
        now = store.arm_summaries(experiment)
        if counts(now) == counts(last) or time.monotonic() > deadline:
            return now
        last = now


def test_the_ab_test_runs_on_containers_and_rolls_back_a_challenger_whose_container_dies(
    engine: Any,
    serving_image: BuiltImage,
    prefect_api: str,
    tracking_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = mlflow.MlflowClient(tracking_uri)
    v1, v2 = register_pair(client, NAME, tmp_path)
    settings = scenario_settings(
        monkeypatch, tmp_path / "home", tracking_uri,
        LOOPLINE_SERVE_IMAGE=serving_image.tags[0], LOOPLINE_DEPLOY_TARGET="docker",
        LOOPLINE_ROUTER_SAMPLE_RATE="0.2",
    )  # fmt: skip
    servers = ContainerServers(settings, tracking_uri, NAME, engine)
    router = f"http://127.0.0.1:{settings.router_port}"
    try:
        servers.start("champion")
        servers.start("challenger")
        played = play_dying_challenger(
            settings, NAME, lambda: servers.stop("challenger"), str(tmp_path / "data"), target="docker"
        )
        result = played.result
        assert played.killed
        assert result is not None and result.status == "rolled_back", result
        assert any("error rate" in reason for reason in result.reasons), result.reasons
        assert client.get_model_version(NAME, v2).tags["rollout.verdict"] == "rolled_back"
        assert client.get_model_version_by_alias(NAME, CHAMPION).version == v1
        seen = played.traffic
        assert seen.answered and set(seen.answered) == {200}, seen.summary()  # every user answered

        routed = engine.containers.get(CONTAINER)  # the router is a container of the serving image
        assert routed.image.id == serving_image.image_id and routed.labels["loopline.model"] == NAME
        host_config = routed.attrs["HostConfig"]
        assert host_config["ReadonlyRootfs"] and host_config["CapDrop"] == ["ALL"]
        assert host_config["Binds"] == [f"{settings.resolved_home}:{settings.resolved_home}:rw"]
        assert routed.attrs["Config"]["User"] == f"{os.getuid()}:{os.getgid()}"  # writes the SQLite file
        kept = list((Path(settings.resolved_data_root) / "production").iterdir())  # the data root is in home
        assert kept and all(p.suffix == ".png" and len(p.stem) == 64 for p in kept)  # content-addressed
        assert not engine.containers.list(all=True, filters={"name": container_name(NAME, "challenger")})

        store = EventStore(settings.resolved_event_store_url)
        before = settled_summaries(store, f"{NAME}-v{v2}")  # the traffic so far, all flushed
        assert before["challenger"].errors > 0 and before["champion"].errors == 0
        for user in range(20):  # answered by the champion, buffered in the router...
            answer = httpx.post(f"{router}/v1/predict", content=b"x", headers={"X-User-Id": f"late{user}"})
            assert answer.headers["X-Variant"] == "champion"  # weight 0: everyone on the champion
        assert DockerRouter(settings, engine).stop()  # ...and flushed on `docker stop` (SIGTERM)
        after = store.arm_summaries(f"{NAME}-v{v2}")
        assert after["champion"].requests == before["champion"].requests + 20
        samples = store.list_samples()
        assert {s.content_hash for s, _ in samples} == {p.stem for p in kept}
        assert all(r is not None and r.status == 200 for _, r in samples)
    finally:
        DockerRouter(settings, engine).stop()
        for found in engine.containers.list(all=True, filters={"label": f"loopline.model={NAME}"}):
            found.remove(force=True)
    assert not port_in_use("127.0.0.1", settings.router_port)


def test_the_router_container_on_postgresql_runs_as_the_images_user_with_nothing_mounted(
    engine: Any, serving_image: BuiltImage, tmp_path: Path
) -> None:
    from loopline.rollout.events import ExperimentState

    with running_postgres("events") as url:
        settings = Settings(
            home=tmp_path, router_port=free_port(), serve_image=serving_image.tags[0], event_store_url=url
        )
        store = EventStore(url)
        state = ExperimentState(
            name=f"{NAME}-v2", model=NAME, champion_version="1", challenger_version="2",
            champion_url="http://127.0.0.1:1", challenger_url="http://127.0.0.1:2", seed="s", weight=0.5,
            step=0, status="running",
        )  # fmt: skip
        store.save_experiment(state, None)
        router = DockerRouter(settings, engine)
        try:
            assert router.ensure(NAME) == f"http://127.0.0.1:{settings.router_port}"
            assert router.ensure(NAME) and router.running()  # a rerun starts nothing new
            health = httpx.get(f"{router.url()}/healthz").json()
            assert (health["experiment"], health["weight"]) == (state.name, 0.5)
            found = engine.containers.get(CONTAINER)
            assert found.attrs["Config"]["User"] == "10001:10001" and not found.attrs["HostConfig"]["Binds"]
            store.save_experiment(replace(state, status="stopped", weight=0.0), 1)
            assert router.await_state("stopped")  # the container follows the state in PostgreSQL
            assert router.stop() and router.running() is None
        finally:
            router.stop()
