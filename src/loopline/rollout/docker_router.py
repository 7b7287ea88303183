"""The A/B router on the ``docker`` target: one container ``loopline-router`` of the serving image (it has
the router's packages: SQLAlchemy, psycopg) running ``loopline route --model MODEL`` on the host's network
at ``LOOPLINE_ROUTER_PORT``, beside the model servers' containers (:mod:`loopline.deploy.docker`), with
the same hardening: non-root, read-only root filesystem, no capabilities, ``no-new-privileges``,
``restart: unless-stopped``, and a health check on its ``/healthz``.

The router reads and writes the event store at ``LOOPLINE_EVENT_STORE_URL``. With the embedded default,
SQLite in ``LOOPLINE_HOME/events.db``, that folder is mounted at the same path and the container runs as
the calling user so that it can write the database (and its WAL) there; with PostgreSQL nothing is
mounted and it runs as the image's user. With a sample of served images (``LOOPLINE_ROUTER_SAMPLE_RATE``)
and a local data root, the data root is mounted the same way (the sample goes to its ``production/``; an
S3 data root would need boto3 in the image, which it does not have). ``docker stop`` sends SIGTERM: the
router flushes its buffered events before it exits. Logs: ``docker logs loopline-router``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from loopline.deploy.docker import find_container, remove_container
from loopline.deploy.images import docker_client
from loopline.errors import ServiceError
from loopline.rollout.router_settings import RouterSettings
from loopline.rollout.service import await_status, router_answers, router_url
from loopline.services.process import port_in_use
from loopline.settings import Settings

CONTAINER = "loopline-router"
START_TIMEOUT = 60.0


def sqlite_folder(url: str) -> Path | None:
    """The folder of a SQLite event store's file; None for any other database."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(url.removeprefix("sqlite:///")).resolve().parent


def _healthcheck(port: int) -> dict[str, Any]:
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/healthz', timeout=2)"
    return {
        "test": ["CMD", "python3", "-c", probe],
        "interval": 5_000_000_000,
        "timeout": 3_000_000_000,
        "retries": 3,
        "start_period": 30_000_000_000,
    }


class DockerRouter:
    """The router as a container of the local Docker engine (see the module docstring)."""

    name = "docker"

    def __init__(self, settings: Settings, client: Any = None) -> None:
        """``client``: a ``docker.DockerClient``; default: the engine at DOCKER_HOST, checked now."""
        self.settings = settings
        self.docker = client or docker_client()

    def url(self) -> str:
        return router_url(self.settings)

    def running(self) -> str | None:
        found = find_container(self.docker, CONTAINER)
        return f"container {found.short_id}" if found is not None and found.status == "running" else None

    def ensure(self, model: str) -> str:
        found = find_container(self.docker, CONTAINER)
        if found is not None and found.status == "running" and found.labels.get("loopline.model") == model:
            return self.url()
        remove_container(self.docker, CONTAINER)  # stopped, or routing another model
        self._run(model)
        return self.url()

    def _run(self, model: str) -> None:
        import docker

        settings, port = self.settings, self.settings.router_port
        if port_in_use(settings.host, port):
            raise ServiceError(
                f"port {port} on {settings.host} is already in use by another program. To fix this, stop "
                "that program (`loopline services down` stops a local router) or choose another port "
                "(LOOPLINE_ROUTER_PORT=…)."
            )
        store = settings.resolved_event_store_url
        sample_rate = RouterSettings().sample_rate
        folders = [sqlite_folder(store)]
        if sample_rate > 0 and not settings.resolved_data_root.startswith("s3://"):
            folders.append(Path(settings.resolved_data_root))  # the sample goes to its production/
        found = [f.resolve() for f in folders if f is not None]
        mounted = [f for f in found if not any(o != f and o in f.parents for o in found)]  # none twice
        volumes = {str(f): {"bind": str(f), "mode": "rw"} for f in dict.fromkeys(mounted)}
        for folder in volumes:
            Path(folder).mkdir(parents=True, exist_ok=True)
        user = f"{os.getuid()}:{os.getgid()}" if volumes else None  # to write the mounted files
        image = settings.serve_image
        try:
            container = self.docker.containers.run(
                image,
                ["route", "--model", model, "--host", settings.host, "--port", str(port)],
                name=CONTAINER,
                detach=True,
                network_mode="host",
                user=user,
                environment={
                    "LOOPLINE_EVENT_STORE_URL": store,
                    "LOOPLINE_ROUTER_SAMPLE_RATE": str(sample_rate),
                    "LOOPLINE_DATA_ROOT": settings.resolved_data_root,
                    "LOOPLINE_HOME": "/tmp/loopline",
                    "HOME": "/tmp",
                },
                volumes=volumes,
                labels={"loopline.model": model, "loopline.role": "router"},
                read_only=True,
                tmpfs={"/tmp": "mode=1777"},
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                healthcheck=_healthcheck(port),
                restart_policy={"Name": "unless-stopped"},
            )
        except docker.errors.ImageNotFound as exc:
            raise ServiceError(
                f"the serving image {image!r} (which also runs the router) is not in the Docker engine. To "
                "fix this, build it (`loopline images build serve`) or set LOOPLINE_SERVE_IMAGE."
            ) from exc
        except docker.errors.APIError as exc:
            why = exc.explanation or exc
            raise ServiceError(f"Docker refused to start {CONTAINER} from {image}: {why}") from exc
        deadline = time.monotonic() + START_TIMEOUT
        while not router_answers(self.url()):
            container.reload()
            if container.status in ("exited", "dead") or time.monotonic() > deadline:
                logs = container.logs(tail=25).decode(errors="replace")
                remove_container(self.docker, CONTAINER)
                what = "exited while starting" if container.status != "running" else "did not answer"
                raise ServiceError(f"the router container ({image}) {what}. Its last log lines:\n{logs}")
            time.sleep(0.5)

    def await_state(self, status: str, timeout: float = 30.0) -> bool:
        return self.running() is None or await_status(self.url(), status, timeout)

    def stop(self) -> bool:
        return remove_container(self.docker, CONTAINER)
