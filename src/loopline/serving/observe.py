"""What every request goes through: the model-version header, the metrics, and a body-size limit that
answers 413 before the whole body is read."""

from __future__ import annotations

import time

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopline.serving.live import ModelHost
from loopline.serving.metrics import ServingMetrics

VERSION_HEADER = "X-Model-Version"


class ObserveRequests:
    """Pure ASGI middleware (no per-request task): adds ``X-Model-Version`` where a handler did not set
    it, and counts and times each request by route template, status and model version."""

    def __init__(self, app: ASGIApp, host: ModelHost, metrics: ServingMetrics) -> None:
        self.app, self.host, self.metrics = app, host, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, version = 500, "none"

        async def send_with_version(message: Message) -> None:
            nonlocal status, version
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                served = next((v for k, v in headers if k.lower() == b"x-model-version"), None)
                if served is None and (current := self.host.current) is not None:
                    served = f"{current.model.name}/{current.model.version}".encode()
                    headers.append((b"x-model-version", served))
                    message = {**message, "headers": headers}
                version = served.decode().rpartition("/")[2] if served else "none"
            await send(message)

        try:
            await self.app(scope, receive, send_with_version)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(template, status, version, time.perf_counter() - started)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it is known to pass ``limit`` bytes (from Content-Length, else
    while streaming), without reading the rest."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _too_large(None, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int | None, limit: int) -> HTTPException:
    shown = f"{size} bytes" if size is not None else f"over {limit} bytes"
    return HTTPException(
        413,
        f"The request body is {shown}; this server takes at most {limit} bytes. To fix this, send fewer or "
        "smaller images per request, or raise LOOPLINE_SERVING_MAX_BODY_BYTES.",
    )
