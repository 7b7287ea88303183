"""The ``docker`` deploy target: each role (champion, challenger) is one container of the serving image
(``LOOPLINE_SERVE_IMAGE``, built by ``loopline images build serve``) named
``loopline-serve-<model>-<role>``, on the role's port (``LOOPLINE_SERVE_PORT_CHAMPION``/``_CHALLENGER``).

Containers use the host's network (Linux; Docker Desktop has host networking as a setting), so a server
bound to 127.0.0.1 is reachable from the host only and reaches the MLflow server at the URI the host
uses. They run as the image's non-root user, with a read-only root filesystem (``/tmp`` and the model
cache are tmpfs), no capabilities, ``no-new-privileges`` and ``restart: unless-stopped``; the image's
HEALTHCHECK asks the server's readiness route. A new version is proven in a candidate container first
(ready and smoke-tested) while the role's container keeps serving; how versions are switched, refused and
rolled back: :mod:`loopline.deploy.servers`. Logs: ``docker logs loopline-serve-<model>-<role>``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from loopline.deploy.base import Role
from loopline.deploy.images import docker_client
from loopline.deploy.servers import ServerTarget, admin_token, role_port
from loopline.deploy.smoke import SmokeCases
from loopline.errors import ServiceError
from loopline.services.process import free_port, port_in_use
from loopline.settings import Settings

START_TIMEOUT = 90.0
_HEALTH = {  # the image's HEALTHCHECK command, checked more often than its 15 s default
    "interval": 5_000_000_000,
    "timeout": 3_000_000_000,
    "retries": 3,
    "start_period": 60_000_000_000,
}


def container_name(model: str, role: Role, candidate: bool = False) -> str:
    """``loopline-serve-<model>-<role>[-candidate]`` with the model name cut to Docker's alphabet."""
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", model).strip("-.") or "model"
    return f"loopline-serve-{slug}-{role}" + ("-candidate" if candidate else "")


class ContainerServers:
    """Model servers as containers of the local Docker engine (see the module docstring)."""

    def __init__(self, settings: Settings, tracking_uri: str, model: str, client: Any = None) -> None:
        """``client``: a ``docker.DockerClient``; default: the engine at DOCKER_HOST, checked now."""
        self.settings, self.tracking_uri, self.model = settings, tracking_uri, model
        self.docker = client or docker_client()

    def url(self, role: Role) -> str:
        return f"http://{self.settings.host}:{role_port(self.settings, role)}"

    def _container(self, name: str) -> Any | None:
        return find_container(self.docker, name)

    def running(self, role: Role) -> str | None:
        found = self._container(container_name(self.model, role))
        return f"container {found.short_id}" if found is not None and found.status == "running" else None

    def healthy(self, role: Role) -> bool:
        found = self._container(container_name(self.model, role))
        if found is None or found.status != "running":
            return False
        health = found.attrs.get("State", {}).get("Health", {}).get("Status", "")
        return health != "unhealthy" and _ready(self.url(role))

    def start(self, role: Role) -> None:
        self._run(container_name(self.model, role), ["--alias", role], role_port(self.settings, role), role)

    def stop(self, role: Role) -> bool:
        return self._remove(container_name(self.model, role))

    @contextmanager
    def candidate(self, role: Role, version: str) -> Iterator[str]:
        name = container_name(self.model, role, candidate=True)
        self._remove(name)  # a candidate left behind by a crash
        port = free_port(self.settings.host)
        try:
            self._run(name, ["--version", version], port, role, restart=False)
            yield f"http://{self.settings.host}:{port}"
        finally:
            self._remove(name)

    def _run(self, name: str, selector: list[str], port: int, role: Role, restart: bool = True) -> None:
        """Start a container serving ``selector`` on ``port``; return once it is ready."""
        import docker

        image = self.settings.serve_image
        if port_in_use(self.settings.host, port):
            setting = f"LOOPLINE_SERVE_PORT_{role.upper()}"
            raise ServiceError(
                f"port {port} on {self.settings.host} is already in use by another program. To fix this, "
                f"stop that program or choose another port ({setting}=…)."
            )
        self._remove(name)  # a stopped container of the same name
        try:
            container = self.docker.containers.run(
                image,
                ["serve", "--model", self.model, *selector],
                name=name,
                detach=True,
                network_mode="host",
                environment={
                    "LOOPLINE_MLFLOW_TRACKING_URI": self.tracking_uri,
                    "LOOPLINE_SERVING_ADMIN_TOKEN": admin_token(self.settings),
                    "LOOPLINE_SERVING_HOST": self.settings.host,
                    "LOOPLINE_SERVING_PORT": str(port),
                    "LOOPLINE_SERVING_POLL_SECONDS": "0",
                },
                labels={"loopline.model": self.model, "loopline.role": role, "loopline.serves": selector[-1]},
                read_only=True,
                tmpfs={"/tmp": "mode=1777", "/var/cache/loopline": "uid=10001,gid=10001"},
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                healthcheck=_HEALTH,
                restart_policy={"Name": "unless-stopped"} if restart else None,
            )
        except docker.errors.APIError as exc:
            self._check_image(image)
            why = exc.explanation or exc
            raise ServiceError(f"Docker refused to start {name} from {image}: {why}") from exc
        url = f"http://{self.settings.host}:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        while not _ready(url):
            container.reload()
            if container.status in ("exited", "dead") or time.monotonic() > deadline:
                logs = container.logs(tail=25).decode(errors="replace")
                self._remove(name)
                what = "exited while starting" if container.status != "running" else "did not become ready"
                raise ServiceError(f"container {name} ({image}) {what}. Its last log lines:\n{logs}")
            time.sleep(0.5)

    def _check_image(self, image: str) -> None:
        """A named error when ``image`` is neither in the engine nor pullable."""
        import docker

        try:
            self.docker.images.get(image)
        except docker.errors.ImageNotFound as exc:
            raise ServiceError(
                f"the serving image {image!r} is not in the Docker engine and could not be pulled. To fix "
                "this, build it (`loopline images build serve`), pull it (`docker pull IMAGE`), or set "
                "LOOPLINE_SERVE_IMAGE to one that exists."
            ) from exc

    def _remove(self, name: str) -> bool:
        return remove_container(self.docker, name)


def find_container(client: Any, name: str) -> Any | None:
    """The container ``name`` of the engine ``client``, None when there is none."""
    import docker

    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


def remove_container(client: Any, name: str) -> bool:
    """Stop (politely, then by force) and remove the container; True when one was running."""
    found = find_container(client, name)
    if found is None:
        return False
    was_running = found.status == "running"
    if was_running:
        found.stop(timeout=10)
    found.remove(force=True)
    return bool(was_running)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


class DockerTarget(ServerTarget):
    """Model servers as Docker containers (see the module docstring)."""

    name = "docker"

    def __init__(
        self,
        settings: Settings,
        client: Any,
        tracking_uri: str,
        model: str,
        cases: Callable[[str], SmokeCases],
        docker: Any = None,
    ) -> None:
        """``docker``: a ``docker.DockerClient``; default: the engine at DOCKER_HOST.

        Raises:
            DockerEngineUnavailable: no engine answers."""
        servers = ContainerServers(settings, tracking_uri, model, docker)
        super().__init__(servers, settings, client, model, cases)
