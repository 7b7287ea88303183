"""The ``local`` deploy target: each role (champion, challenger) is one ``loopline serve`` process beside
the local platform, on a fixed port (``LOOPLINE_SERVE_PORT_CHAMPION``/``_CHALLENGER``), its log in
``LOOPLINE_HOME/logs/serve-<role>.log`` and its PID file in ``LOOPLINE_HOME/run/``. How a version is
deployed, refused, switched in and rolled back: :mod:`loopline.deploy.servers`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from loopline.deploy.base import ROLES, Role
from loopline.deploy.servers import ServerTarget, admin_token, role_port
from loopline.deploy.smoke import SmokeCases
from loopline.services import process
from loopline.services.process import ProcessSpec
from loopline.settings import Settings


def _ready(url: str) -> bool:
    return httpx.get(f"{url}/v2/health/ready", timeout=2.0).status_code == 200


def serve_spec(
    settings: Settings, tracking_uri: str, model: str, name: str, selector: list[str], port: int
) -> ProcessSpec:
    """``loopline serve`` of ``model`` (``selector``: ``--alias A`` or ``--version V``), managed."""
    url = f"http://{settings.host}:{port}"
    command = [str(Path(sys.executable).parent / "loopline"), "serve", "--model", model, *selector]
    return ProcessSpec(
        name=name,
        command=[*command, "--host", settings.host, "--port", str(port), "--poll-seconds", "0"],
        state_dir=settings.resolved_home,
        url=url,
        health=lambda: _ready(url),
        env={
            "LOOPLINE_HOME": str(settings.resolved_home),
            "LOOPLINE_MLFLOW_TRACKING_URI": tracking_uri,
            "LOOPLINE_SERVING_ADMIN_TOKEN": admin_token(settings),
        },
        port=port,
        host=settings.host,
        start_timeout=90,
    )


def role_spec(settings: Settings, tracking_uri: str, model: str, role: Role) -> ProcessSpec:
    port = role_port(settings, role)
    return serve_spec(settings, tracking_uri, model, f"serve-{role}", ["--alias", role], port)


def stop_all(settings: Settings) -> list[str]:
    """Stop every local model server (by PID file: only those loopline started). Returns their names."""
    names = [f"serve-{role}{suffix}" for role in ROLES for suffix in ("-candidate", "")]
    stopped = []
    for name in names:
        spec = ProcessSpec(name, ["loopline"], settings.resolved_home, "", lambda: False)
        if process.stop(spec):
            stopped.append(name)
    return stopped


class ProcessServers:
    """Model servers as processes managed by PID file (``loopline.services.process``)."""

    def __init__(self, settings: Settings, tracking_uri: str, model: str) -> None:
        self.settings, self.tracking_uri, self.model = settings, tracking_uri, model

    def _spec(self, role: Role) -> ProcessSpec:
        return role_spec(self.settings, self.tracking_uri, self.model, role)

    def url(self, role: Role) -> str:
        return self._spec(role).url

    def running(self, role: Role) -> str | None:
        pid = process.running_pid(self._spec(role))
        return None if pid is None else f"pid {pid}"

    def healthy(self, role: Role) -> bool:
        return process.healthy(self._spec(role))

    def start(self, role: Role) -> None:
        process.start(self._spec(role))

    def stop(self, role: Role) -> bool:
        return process.stop(self._spec(role))

    @contextmanager
    def candidate(self, role: Role, version: str) -> Iterator[str]:
        port = process.free_port(self.settings.host)
        name = f"serve-{role}-candidate"
        spec = serve_spec(self.settings, self.tracking_uri, self.model, name, ["--version", version], port)
        process.stop(spec)  # a candidate left behind by a crash
        try:
            process.start(spec)
            yield spec.url
        finally:
            process.stop(spec)


class LocalTarget(ServerTarget):
    """Model servers as local processes (see the module docstring)."""

    name = "local"

    def __init__(
        self,
        settings: Settings,
        client: Any,
        tracking_uri: str,
        model: str,
        cases: Callable[[str], SmokeCases],
    ) -> None:
        super().__init__(ProcessServers(settings, tracking_uri, model), settings, client, model, cases)
