"""The A/B stage's local services: the event store (one engine per URL and process) and the router as a
managed process beside the model servers (``loopline route``: PID file and log under ``LOOPLINE_HOME``,
port ``LOOPLINE_ROUTER_PORT``), following the latest experiment of its model in the event store."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import httpx

from loopline.rollout.store import EventStore
from loopline.services import process
from loopline.services.process import ProcessSpec
from loopline.settings import Settings

ROUTER = "router"


@cache
def _store(url: str) -> EventStore:
    return EventStore(url)


def open_store(settings: Settings) -> EventStore:
    """The event store of ``settings`` (``LOOPLINE_EVENT_STORE_URL``, default SQLite in LOOPLINE_HOME)."""
    if settings.event_store_url is None:
        settings.resolved_home.mkdir(parents=True, exist_ok=True)
    return _store(settings.resolved_event_store_url)


def router_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.router_port}"


def router_answers(url: str) -> bool:
    """Whether the router at ``url`` answers ``/healthz`` with 200 (it has read its experiment)."""
    try:
        return httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def router_spec(settings: Settings, model: str) -> ProcessSpec:
    """``loopline route --model MODEL`` as a managed process."""
    url = router_url(settings)
    loopline = str(Path(sys.executable).parent / "loopline")
    where = ["--host", settings.host, "--port", str(settings.router_port)]
    return ProcessSpec(
        name=ROUTER,
        command=[loopline, "route", "--model", model, *where],
        state_dir=settings.resolved_home,
        url=url,
        health=lambda: router_answers(url),
        env={"LOOPLINE_HOME": str(settings.resolved_home)},
        port=settings.router_port,
        host=settings.host,
        start_timeout=60,
    )


def ensure_router(settings: Settings, model: str) -> str:
    """Start the router unless it runs; its URL."""
    spec = router_spec(settings, model)
    process.start(spec)
    return spec.url


def await_status(url: str, status: str, timeout: float = 30.0) -> bool:
    """Wait until the router at ``url`` routes by an experiment in ``status`` (it re-reads the state every
    few seconds), so a server it no longer sends anyone to can be stopped. True when it does."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2.0).json().get("state") == status:
                return True
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    return False


def await_router(settings: Settings, status: str, timeout: float = 30.0) -> bool:
    """:func:`await_status` for the local router; True at once when none runs."""
    spec = router_spec(settings, "")
    if process.running_pid(spec) is None:
        return True
    return await_status(spec.url, status, timeout)


def stop_router(settings: Settings) -> bool:
    return process.stop(ProcessSpec(ROUTER, ["loopline"], settings.resolved_home, "", lambda: False))


def running_router(settings: Settings) -> str | None:
    """The local router as "pid N"; None when none runs."""
    pid = process.running_pid(ProcessSpec(ROUTER, ["loopline"], settings.resolved_home, "", lambda: False))
    return None if pid is None else f"pid {pid}"
