"""The A/B router: an ASGI app in front of the champion's and the challenger's model servers.

``create_router(settings, provider, sink, known)`` builds it; ``router_runner.run_router`` serves it.

- ``POST /v1/predict`` and ``POST /v2/models/{name}[/versions/{v}]/infer`` pass through to the user's
  variant over pooled keep-alive connections (``upstream.py``). The user key is the header
  ``settings.user_header`` (default ``X-User-Id``), else the request id; the variant is
  ``assign.assign(seed, key, share)`` (GrowthBook's hash v2: sticky, champion → challenger only as the
  share grows). The share is the state's weight while the experiment runs or awaits approval, 1 once it is
  promoted, 0 when rolled back, halted or stopped. A request naming a version in its path goes to the
  variant serving that version, outside the experiment (not recorded, never a fallback).
- Responses carry the upstream's status, body and headers (``X-Model-Version`` among them) plus
  ``X-Variant`` (the variant that answered), ``X-Request-Id`` (the request's own, up to 128 characters,
  else generated) and, when the challenger failed, ``X-Fallback`` (why).
- The challenger failing (unreachable, a malformed answer, 5xx) or not answering within
  ``challenger_timeout_s``: the champion answers, and the request is recorded as a fallback of the
  challenger's arm. After ``breaker_failures`` failures in a row the challenger is skipped for
  ``breaker_seconds`` (its users answered by the champion at once, still recorded as fallbacks). The
  champion failing: its 5xx as it is; unreachable 502, timeout 504, as
  ``{"error": ..., "upstream": URL}``.
- Every routed request becomes a ``RoutedRequest`` for the ``EventSink`` after its response is sent
  (the sink must not block), with the first image's top label and probability from a /v1/predict answer
  and a truncated sha256 of seed + user key.
- ``POST /v1/feedback`` (``feedback.py``): 422 for a malformed body, 404 for a request id ``known`` does
  not know, else 202 and every row to the sink; nothing is stored unless all are valid and known.
- The experiment state comes from ``provider`` (in a worker thread), re-read on demand once it is older
  than ``refresh_seconds``, so a restarted router or a second replica follows weight changes; a failed
  read keeps the last state. ``GET /metrics`` (Prometheus) and ``GET /healthz``.
- With a ``sampler``, each /v1/predict image answered 200 is offered to it after the response is sent
  (``sampling.py``: a share of them is kept in the data root for monitoring and labeling).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from starlette.types import Receive, Scope, Send

from loopline.data.labeled import PixelBox
from loopline.rollout.asgi import ClientGone, json_bytes, read_body, respond, respond_error
from loopline.rollout.assign import assign, user_hash
from loopline.rollout.box_feedback import answered_boxes
from loopline.rollout.events import EventSink, ExperimentState, RoutedRequest, Variant
from loopline.rollout.feedback import KnownRequest, accept_feedback
from loopline.rollout.router_metrics import RouterMetrics
from loopline.rollout.router_settings import RouterSettings
from loopline.rollout.router_state import StateFollower, StateProvider
from loopline.rollout.upstream import Breaker, UpstreamError, UpstreamPool, UpstreamResponse

logger = logging.getLogger(__name__)

__all__ = ["KnownRequest", "Router", "RouterSettings", "StateProvider", "Upstream", "create_router"]


class Upstream(Protocol):
    """The client of one model server (``UpstreamPool``; tests pass fakes)."""

    url: str

    async def request(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float
    ) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


ROUTES = (
    "POST /v1/predict, POST /v2/models/NAME[/versions/V]/infer, POST /v1/feedback, GET /metrics, GET /healthz"
)
# not forwarded either way: connection-level headers, and framing the router sets itself
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"host"}
    | {b"content-length", b"proxy-connection", b"expect"}
)
RESPONSE_DROP = HOP_BY_HOP | {b"date", b"server"}  # the router's server adds its own date


class ImageSampler(Protocol):
    """Keeps a sample of served images (``sampling.ServedImageSampler``); ``offer`` must not block."""

    def offer(self, request_id: str, body: bytes) -> None: ...

    def close(self) -> object: ...


@dataclass(frozen=True)
class _Route:
    arm: Variant  # the user's arm (fallbacks count against it)
    pinned: bool  # the path named a version: outside the experiment


class Router:
    """The ASGI app (see the module docstring); build it with ``create_router``."""

    def __init__(
        self,
        settings: RouterSettings,
        provider: StateProvider,
        sink: EventSink,
        known: KnownRequest | None = None,
        upstream: Callable[[str], Upstream] | None = None,
        sampler: ImageSampler | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = RouterMetrics()
        self._sink, self._known, self._sampler = sink, known, sampler
        self._upstream: Callable[[str], Upstream] = upstream or (
            lambda url: UpstreamPool(url, settings.max_idle_connections)
        )
        self._user_header = settings.user_header.lower().encode("latin-1")
        self._follower = StateFollower(provider, settings.refresh_seconds, self.metrics, self._close_unused)
        self._pools: dict[str, Upstream] = {}
        self._breakers: dict[str, Breaker] = {}

    @property
    def state(self) -> ExperimentState | None:
        return self._follower.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._dispatch(scope, receive, send)
        except ClientGone:  # nothing to answer, nothing to record
            pass

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/v1/predict" or (path.startswith("/v2/models/") and path.endswith("/infer")):
            version = _pinned_version(path)
            if method != "POST" or version == "":
                await respond_error(send, 405 if version != "" else 404, _no_route(method, path))
            else:
                await self._route(scope, receive, send, version)
        elif path == "/v1/feedback" and method == "POST":
            await accept_feedback(receive, send, self._known, self._sink, self.metrics)
        elif path == "/metrics" and method == "GET":
            await self._follower.current()
            await respond(send, 200, self.metrics.render(), b"text/plain; version=0.0.4; charset=utf-8")
        elif path == "/healthz" and method == "GET":
            await self._health(send)
        else:
            await respond_error(send, 404, _no_route(method, path))

    # --- routing ---------------------------------------------------------------------------------------

    async def _route(self, scope: Scope, receive: Receive, send: Send, version: str | None) -> None:
        started = time.perf_counter()
        request_id = user_key = None
        forwarded: list[tuple[bytes, bytes]] = []
        declared = -1
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1") if 0 < len(value) <= 128 else None
                continue  # forwarded below, once
            if name == self._user_header:
                user_key = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit():
                declared = int(value)
            if name not in HOP_BY_HOP:
                forwarded.append((name, value))
        request_id = request_id or uuid.uuid4().hex
        forwarded.append((b"x-request-id", request_id.encode("latin-1")))
        if (
            declared > self.settings.max_body_bytes
            or (body := await read_body(receive, self.settings.max_body_bytes)) is None
        ):
            await respond_error(
                send, 413, f"The body passes the router's limit of {self.settings.max_body_bytes} bytes."
            )
            return
        state = await self._follower.current()
        if state is None:
            await respond_error(
                send, 503, "No experiment state yet: the router has not read one; retry shortly."
            )
            return
        route = self._choose(state, user_key or request_id, version)
        if route is None:
            await respond_error(
                send,
                404,
                f"Version {version!r} is served by neither variant: the champion serves "
                f"{state.champion_version}, the challenger {state.challenger_version}.",
            )
            return
        target = scope.get("raw_path", scope["path"].encode()).split(b"?", 1)[0]
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        answer = await self._forward(state, route, target, forwarded, body)
        headers = [(n, v) for n, v in answer.response.headers if n not in RESPONSE_DROP]
        headers += [(b"content-length", str(len(answer.response.body)).encode())]
        headers += [(b"x-variant", answer.variant.encode()), (b"x-request-id", request_id.encode("latin-1"))]
        if answer.fallback:
            headers.append((b"x-fallback", answer.fallback.encode()))
        await send({"type": "http.response.start", "status": answer.response.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.response.body})
        seconds = time.perf_counter() - started
        self.metrics.observe(route.arm, answer.response.status, seconds, answer.fallback)
        if not route.pinned:
            self._record(state, route.arm, answer, request_id, user_key or request_id, seconds, scope["path"])
            if self._sampler is not None and scope["path"] == "/v1/predict" and answer.response.status == 200:
                self._sampler.offer(request_id, body)

    def _choose(self, state: ExperimentState, key: str, version: str | None) -> _Route | None:
        if version is None:
            share = self._follower.share
            arm: Variant = (
                "champion" if share <= 0 else assign(state.seed, key, share) if share < 1 else "challenger"
            )
            return _Route(arm, pinned=False)
        if version == state.champion_version:
            return _Route("champion", pinned=True)
        if version == state.challenger_version:
            return _Route("challenger", pinned=True)
        return None

    async def _forward(
        self,
        state: ExperimentState,
        route: _Route,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> _Answer:
        fallback: str | None = None
        if route.arm == "challenger":
            breaker = self._breakers.setdefault(
                state.challenger_url, Breaker(self.settings.breaker_failures, self.settings.breaker_seconds)
            )
            if not route.pinned and not breaker.allows():
                fallback = "circuit_open"
            else:
                pool = self._pool(state.challenger_url)
                try:
                    response = await pool.request(
                        b"POST", target, headers, body, self.settings.challenger_timeout_s
                    )
                except UpstreamError as exc:
                    if route.pinned:
                        return _Answer(_failure_response(exc), "challenger", None)
                    fallback, detail = exc.failure, exc.detail
                else:
                    if response.status < 500 or route.pinned:
                        breaker.succeeded()
                        return _Answer(response, "challenger", None)
                    fallback, detail = "error", f"status {response.status}"
                if breaker.failed():
                    logger.warning(
                        "the challenger at %s failed %d times in a row (last: %s, %s): the champion "
                        "answers its users for the next %g s",
                        pool.url,
                        self.settings.breaker_failures,
                        fallback,
                        detail,
                        self.settings.breaker_seconds,
                    )
        pool = self._pool(state.champion_url)
        try:
            response = await pool.request(b"POST", target, headers, body, self.settings.champion_timeout_s)
        except UpstreamError as exc:
            return _Answer(_failure_response(exc), "champion", fallback)
        return _Answer(response, "champion", fallback)

    def _record(
        self,
        state: ExperimentState,
        arm: Variant,
        answer: _Answer,
        request_id: str,
        key: str,
        seconds: float,
        path: str,
    ) -> None:
        response = answer.response
        answered = path == "/v1/predict" and response.status == 200
        label, confidence, boxes = _top_prediction(response.body) if answered else (None, None, None)
        served = next((v for n, v in response.headers if n == b"x-model-version"), None)
        if served is not None:
            version = served.decode("latin-1").rpartition("/")[2]
        else:
            version = state.champion_version if answer.variant == "champion" else state.challenger_version
        row = RoutedRequest(
            request_id=request_id,
            experiment=state.name,
            variant=arm,
            model_version=version,
            user_hash=user_hash(state.seed, key),
            latency_ms=seconds * 1000,
            status=response.status,
            predicted_label=label,
            confidence=confidence,
            predicted_boxes=boxes,
            fallback=answer.fallback is not None,
        )
        try:
            self._sink.record_request(row)
        except Exception:  # the event store's trouble must not become the client's
            self.metrics.events_dropped.inc()
            logger.exception("the event sink refused request %s", request_id)

    def _pool(self, url: str) -> Upstream:
        pool = self._pools.get(url)
        if pool is None:
            pool = self._pools[url] = self._upstream(url)
        return pool

    # --- feedback, health, lifespan -------------------------------------------------------------------

    async def _health(self, send: Send) -> None:
        state = await self._follower.current()
        if state is None:
            await respond(
                send, 503, json_bytes({"status": "waiting", "error": "No experiment state read yet."})
            )
            return
        body = {"status": "ok", "experiment": state.name, "state": state.status, "weight": state.weight}
        await respond(send, 200, json_bytes({**body, "challenger_share": self._follower.share}))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._follower.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _close_unused(self, state: ExperimentState) -> None:
        """Close the pools of model servers the new state no longer names."""
        in_use = {state.champion_url, state.challenger_url}
        for url in [u for u in self._pools if u not in in_use]:
            asyncio.get_running_loop().create_task(self._pools.pop(url).aclose())
            self._breakers.pop(url, None)

    async def aclose(self) -> None:
        """Close the pooled upstream connections, then the sink when it can be closed (a buffered writer
        writes what it holds: uvicorn re-raises SIGTERM after shutdown, so nothing after it would run)."""
        self._follower.stop()
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()
        close = getattr(self._sink, "close", None)
        if callable(close):
            counters = await asyncio.to_thread(close)
            logger.info("event sink closed: %s", counters)
        if self._sampler is not None:
            logger.info("served-image sample closed: %s", await asyncio.to_thread(self._sampler.close))


@dataclass(frozen=True)
class _Answer:
    response: UpstreamResponse
    variant: Variant  # who answered (or failed to)
    fallback: str | None  # why the challenger did not answer


def create_router(
    settings: RouterSettings,
    provider: StateProvider,
    sink: EventSink,
    known: KnownRequest | None = None,
    upstream: Callable[[str], Upstream] | None = None,
    sampler: ImageSampler | None = None,
) -> Router:
    """The router app. ``provider()`` returns the experiment's current state (None: none yet) and may block
    (it runs in a worker thread); ``sink`` receives a ``RoutedRequest`` per routed request and each
    ``Feedback`` (it must not block); ``known(request_id)`` says whether a request id was routed (runs in
    a worker thread; None: feedback is refused with 503); ``upstream(url)`` makes the client of one model
    server (default: ``UpstreamPool``); ``sampler`` is offered each /v1/predict image answered 200
    (``sampling.ServedImageSampler``; None: no sample is kept)."""
    return Router(settings, provider, sink, known, upstream, sampler)


def _pinned_version(path: str) -> str | None:
    """The version a v2 infer path names; None for none (and for /v1/predict); "" for a malformed path."""
    if path == "/v1/predict":
        return None
    parts = path.split("/")  # "", "v2", "models", NAME, ["versions", V,] "infer"
    if len(parts) == 5 and parts[3]:
        return None
    if len(parts) == 7 and parts[3] and parts[4] == "versions" and parts[5]:
        return parts[5]
    return ""


def _top_prediction(body: bytes) -> tuple[str | None, float | None, tuple[PixelBox, ...] | None]:
    """The first image's top label and its probability in a /v1/predict answer, or a detector answer's
    boxes (None where absent)."""
    try:
        answer = json.loads(body)
        boxes = answered_boxes(answer)
        if boxes is not None:
            return None, None, boxes
        first = answer["predictions"][0]
        top = first["top_k"][0]
        return str(first["label"]), float(top["probability"]), None
    except (ValueError, KeyError, IndexError, TypeError):
        return None, None, None


def _failure_response(exc: UpstreamError) -> UpstreamResponse:
    status = 504 if exc.failure == "timeout" else 502
    what = {
        "timeout": "did not answer in time",
        "unreachable": "is unreachable",
        "protocol": "answered garbage",
    }
    message = f"The model server at {exc.url} {what[exc.failure]}: {exc.detail}."
    body = json_bytes({"error": message, "upstream": exc.url})
    return UpstreamResponse(status, [(b"content-type", b"application/json")], body)


def _no_route(method: str, path: str) -> str:
    return f"No route {method} {path!r}. Routes: {ROUTES}."
