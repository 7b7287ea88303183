"""Start the A/B router: one uvicorn process, one event loop, in front of the champion and the challenger.

One process on purpose: uvicorn given a host and port has asyncio create the listening socket with
``IPPROTO_TCP``, so asyncio sets TCP_NODELAY on every accepted connection and keep-alive requests never
wait ~40 ms for the client's delayed ACK (the trap of ``uvicorn --workers N``; see ENVIRONMENT.md). The
client side sets TCP_NODELAY on its own connections (``upstream.py``). Scale with replicas: the sticky
assignment needs no shared memory, and each replica re-reads the experiment state.

Most of the router's own time per request is uvicorn's HTTP parsing: measured at concurrency 1 against a
trivial upstream, the router took ~380 us of CPU per request with h11 (pure Python, what the lock has)
and ~240 us with httptools (C; ``uvicorn[standard]``), which uvicorn picks up when it is installed.

``run_router(settings, provider, sink, known)`` is what ``loopline route`` calls with the event store's
provider, writer and ``feedback_is_known``; without a provider it reads the state from the JSON file
``settings.state_file`` (an ``ExperimentState`` as JSON: a fixed experiment, or one a tool rewrites).
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

from loopline.rollout.events import EventSink, ExperimentState, Feedback, RoutedRequest
from loopline.rollout.router import ImageSampler, KnownRequest, StateProvider, create_router
from loopline.rollout.router_settings import RouterSettings

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class DiscardSink:
    """An ``EventSink`` that keeps nothing (a router without an event store), counting what it dropped."""

    def __init__(self) -> None:
        self.requests = 0
        self.feedback = 0

    def record_request(self, row: RoutedRequest) -> None:
        self.requests += 1

    def record_feedback(self, row: Feedback) -> None:
        self.feedback += 1


def state_from_json(data: dict[str, Any]) -> ExperimentState:
    """An ``ExperimentState`` from its JSON form (timestamps as ISO 8601 strings, optional).

    Raises:
        ValueError: a field is missing or unknown, naming it.
    """
    names = {f.name for f in fields(ExperimentState)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"Unknown experiment state fields {unknown}; valid: {sorted(names)}.")
    values = dict(data)
    for key in ("started_at", "updated_at"):
        if isinstance(values.get(key), str):
            values[key] = datetime.fromisoformat(values[key])
    try:
        return ExperimentState(**values)
    except TypeError as exc:
        raise ValueError(f"Incomplete experiment state ({exc}); fields: {sorted(names)}.") from None


def state_to_json(state: ExperimentState) -> dict[str, Any]:
    data = {f.name: getattr(state, f.name) for f in fields(ExperimentState)}
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}


def state_file_provider(path: Path) -> StateProvider:
    """A provider reading ``path`` (JSON, see ``state_to_json``) at each refresh."""

    def read() -> ExperimentState:
        return state_from_json(json.loads(path.read_text()))

    return read


def run_router(
    settings: RouterSettings,
    provider: StateProvider | None = None,
    sink: EventSink | None = None,
    known: KnownRequest | None = None,
    state_file: Path | None = None,
    sampler: ImageSampler | None = None,
) -> None:
    """Serve the router on ``settings.host:settings.port`` until interrupted.

    ``provider``: the experiment state (default: read ``state_file`` at each refresh). ``sink``: where
    routed requests and feedback go (default: discarded). ``known``: whether a request id was routed (None:
    ``POST /v1/feedback`` answers 503). ``sampler``: keeps a sample of served images (None: none).

    Raises:
        ValueError: neither a provider nor a state file was given.
    """
    import uvicorn

    if provider is None:
        if state_file is None:
            raise ValueError(
                "The router needs the experiment's state: pass the event store's provider, or a JSON "
                "state file (an ExperimentState: name, model, versions, URLs, seed, weight, step, status)."
            )
        provider = state_file_provider(state_file)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    app = create_router(settings, provider, sink or DiscardSink(), known, sampler=sampler)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http="auto",  # httptools when installed (~140 us less per request than h11), else h11
        loop="asyncio",
        lifespan="on",
        access_log=False,
        log_level="info",
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    logger.info("routing on %s:%d", settings.host, settings.port)
    uvicorn.Server(config).run()


def main(argv: list[str] | None = None) -> None:
    """``python -m loopline.rollout.router_runner --state-file F``: the router on a JSON state file, its
    settings from ``LOOPLINE_ROUTER_*`` (until ``loopline route`` wires the event store)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--state-file", type=Path, required=True, help="ExperimentState as JSON.")
    args = parser.parse_args(argv)
    run_router(RouterSettings(), state_file=args.state_file)


if __name__ == "__main__":
    main()
