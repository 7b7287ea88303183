"""The serving image and the docker deploy target against a real Docker engine (started by the test when
none answers), a real registry to push to and a real MLflow server: the image builds hermetically, is
pushed and pulled back, runs as non-root with a consistent environment and no torch; the target deploys
v1 in a container, refuses a broken v2 and a busy port while v1 keeps serving, switches v3 in by hot
reload (same container), starts nothing on a rerun, rolls back, and undeploys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest

from loopline.deploy.docker import ContainerServers, DockerTarget, container_name
from loopline.deploy.history import read_history
from loopline.deploy.images import BuiltImage, DockerEngineUnavailable, image_tag, project_root
from loopline.deploy.smoke import SmokeCases, reference_cases
from loopline.errors import ServiceError
from loopline.registry.artifacts import fetch_model_files
from loopline.registry.registry import audit_trail
from loopline.services.process import free_port, port_in_use
from loopline.settings import Settings
from tests.model_runs import registered_version, smoke_pictures

pytestmark = pytest.mark.integration
NAME = "boxed"


def test_the_serving_image_is_built_hermetically_pushed_and_runs_as_non_root(
    engine: Any, local_registry: str, serving_image: BuiltImage
) -> None:
    tag = image_tag("serve", project_root())
    assert tag in serving_image.tags and "loopline-serve:latest" in serving_image.tags
    remote = f"{local_registry}/{tag}"
    assert serving_image.pushed == (remote,)
    catalog = httpx.get(f"http://{local_registry}/v2/_catalog").json()
    assert "loopline-serve" in catalog["repositories"]
    engine.images.remove(remote)
    pulled = engine.images.pull(remote.rsplit(":", 1)[0], tag=remote.rsplit(":", 1)[1])
    assert pulled.id == serving_image.image_id  # the registry gives back the very image
    config = engine.images.get(serving_image.image_id).attrs["Config"]
    assert config["User"] == "10001:10001" and config["Entrypoint"] == ["loopline"]
    assert "/v2/health/ready" in " ".join(config["Healthcheck"]["Test"])
    script = (
        "import importlib.util, subprocess, sys; "
        "print(importlib.util.find_spec('torch') is None, importlib.util.find_spec('prefect') is None); "
        "sys.exit(subprocess.run([sys.executable, '-m', 'pip', 'check']).returncode)"
    )
    out = engine.containers.run(serving_image.image_id, ["-c", script], entrypoint="python3", remove=True)
    assert out.decode().splitlines()[0] == "True True", out  # no torch, no Prefect
    assert "No broken requirements found" in out.decode(), out
    assert 0 < serving_image.size_bytes < 1_000_000_000, (
        f"the serving image is {serving_image.size_bytes / 1e6:.0f} MB"
    )
    print(f"serving image {tag}: {serving_image.size_bytes / 1e6:.0f} MB")


def test_the_docker_target_deploys_refuses_switches_and_rolls_back(
    engine: Any, serving_image: BuiltImage, tracking_uri: str, tmp_path: Path
) -> None:
    client = mlflow.MlflowClient(tracking_uri)
    v1, v2, v3 = (registered_version(client, NAME, tmp_path / str(i), broken=i == 2) for i in range(1, 4))
    settings = Settings(
        home=tmp_path / "home",
        serve_port_champion=free_port(),
        serve_port_challenger=free_port(),
        mlflow_tracking_uri=tracking_uri,
        smoke_max_latency_ms=1000,
        serve_image=serving_image.tags[0],
    )

    def cases(version: str) -> SmokeCases:
        run_id = str(client.get_model_version(NAME, version).run_id)
        files = fetch_model_files(run_id, tmp_path / f"files-{version}")
        return reference_cases(smoke_pictures(), ["p0", "p1", "p2"], files.onnx, files.input_size)

    target = DockerTarget(settings, client, tracking_uri, NAME, cases, engine)
    url = f"http://127.0.0.1:{settings.serve_port_champion}"
    name = container_name(NAME, "champion")

    def served() -> str:
        return httpx.get(f"{url}/v2/models/{NAME}").headers["X-Model-Version"]

    try:
        first = target.deploy(v1, who="ada")
        assert (first.state, first.version, first.url, first.target) == ("serving", v1, url, "docker"), first
        container = engine.containers.get(name)
        assert first.ref == f"container {container.short_id}" and served() == f"{NAME}/{v1}"
        host_config = container.attrs["HostConfig"]
        assert host_config["ReadonlyRootfs"] and host_config["CapDrop"] == ["ALL"]
        assert host_config["NetworkMode"] == "host" and container.attrs["Config"]["User"] == "10001:10001"
        assert client.get_model_version(NAME, v1).tags["deploy.champion.target"] == "docker"

        broken = target.deploy(v2, who="ada")
        assert broken.state == "refused" and "exited while starting" in broken.reason, broken.reason
        assert "class mapping" in broken.reason  # the container's own log names the problem
        assert served() == f"{NAME}/{v1}"
        assert client.get_model_version_by_alias(NAME, "champion").version == v1
        assert not engine.containers.list(all=True, filters={"name": container_name(NAME, "champion", True)})

        switched = target.deploy(v3, who="ada", why="better")
        assert switched.state == "serving" and served() == f"{NAME}/{v3}"
        assert engine.containers.get(name).id == container.id  # hot reload: the same container
        assert target.deploy(v3) == switched  # a rerun: nothing started, nothing recorded
        [status] = target.status()
        assert (status.role, status.version, status.state) == ("champion", v3, "serving")
        container.reload()
        health = container.attrs["State"]["Health"]
        assert health["Status"] in ("healthy", "starting"), health  # the image's HEALTHCHECK on the port

        back = target.rollback(who="grace")
        assert back.version == v1 and served() == f"{NAME}/{v1}"
        last = audit_trail(client, NAME)[-1]
        assert (last.alias, last.from_version, last.to_version, last.who) == ("champion", v3, v1, "grace")
        states = [(r.version, r.state) for r in read_history(client, NAME)]
        assert states == [
            (v1, "serving"),
            (v2, "refused"),
            (v1, "replaced"),
            (v3, "serving"),
            (v3, "replaced"),
            (v1, "serving"),
        ]

        stopped = target.undeploy("champion", who="ada")
        assert stopped is not None and stopped.state == "stopped"
        assert not engine.containers.list(all=True, filters={"name": name})
        assert not port_in_use("127.0.0.1", settings.serve_port_champion)
    finally:
        for found in engine.containers.list(all=True, filters={"label": f"loopline.model={NAME}"}):
            found.remove(force=True)


def test_a_busy_port_and_a_missing_image_are_named_errors(
    engine: Any, tracking_uri: str, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = Settings(home=tmp_path, serve_port_champion=port, serve_image="loopline-serve:latest")
        servers = ContainerServers(settings, tracking_uri, NAME, engine)
        with pytest.raises(ServiceError, match=rf"port {port} .* in use.*LOOPLINE_SERVE_PORT_CHAMPION"):
            servers.start("champion")
    missing = Settings(home=tmp_path, serve_port_champion=free_port(), serve_image="loopline-serve:nope")
    with pytest.raises(ServiceError, match=r"loopline-serve:nope.*loopline images build serve"):
        ContainerServers(missing, tracking_uri, NAME, engine).start("champion")


def test_no_engine_is_a_named_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    with pytest.raises(DockerEngineUnavailable, match="DOCKER_HOST"):
        DockerTarget(Settings(home=tmp_path), None, "http://127.0.0.1:1", NAME, lambda v: None)  # type: ignore[arg-type,return-value]


def test_container_names_keep_to_dockers_alphabet() -> None:
    assert container_name("my model/v2", "challenger", candidate=True) == (
        "loopline-serve-my-model-v2-challenger-candidate"
    )
    assert json.dumps(container_name("ok_name.1", "champion")) == '"loopline-serve-ok_name.1-champion"'
