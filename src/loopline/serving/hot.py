"""The two routes that carry the traffic, ``POST /v1/predict`` and ``POST /v2/models/NAME[/versions/V]/infer``
(``/infer`` below), dispatched straight to their handlers, past FastAPI's router, parameter solving and
exception middleware.

Profiled under load (wrk, concurrency 32, 2 cores), that machinery was about a third of the server's CPU per
request for a 0.2 ms model. The handlers are the very functions the FastAPI routes call, so the answers, the
errors and the headers are the same; a request this dispatcher does not fully understand (another method, a
query string other than ``k=N`` within range) goes on to FastAPI, which answers it as before.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

PredictHandler = Callable[[Request, int | None], Awaitable[Response]]
InferHandler = Callable[[Request, str, str | None], Awaitable[Response]]

_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_K = re.compile(rb"k=(\d{1,4})")
MAX_K = 1000  # /v1/predict's ``k`` is 1..MAX_K


@dataclass(frozen=True)
class RouteTemplate:
    """What a matched route is known by (``ObserveRequests`` labels metrics with ``scope["route"].path``)."""

    path: str


PREDICT = RouteTemplate("/v1/predict")
INFER = RouteTemplate("/v2/models/{name}/infer")
INFER_VERSION = RouteTemplate("/v2/models/{name}/versions/{version}/infer")


def error_response(exc: HTTPException) -> Response:
    """The server's error answer: ``{"error": detail}`` with the exception's status and headers."""
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


class HotRoutes:
    """ASGI middleware: answers the hot routes itself, hands everything else to ``app``."""

    def __init__(self, app: ASGIApp, predict: PredictHandler, infer: InferHandler) -> None:
        self.app, self.predict, self.infer = app, predict, infer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        query: bytes = scope["query_string"]
        answer: Awaitable[Response]
        if path == PREDICT.path and (not query or plain_k(query)):
            scope["route"] = PREDICT
            answer = self.predict(Request(scope, receive), int(query[2:]) if query else None)
        elif not query and (match := _INFER.fullmatch(path)) is not None:
            name, version = match.groups()
            scope["route"] = INFER if version is None else INFER_VERSION
            answer = self.infer(Request(scope, receive), name, version)
        else:  # FastAPI answers it: another route, or a query string it parses (and refuses, naming why)
            await self.app(scope, receive, send)
            return
        try:
            response = await answer
        except HTTPException as exc:
            response = error_response(exc)
        await response(scope, receive, send)


def plain_k(query: bytes) -> bool:
    """Whether /v1/predict's query string is just ``k=N`` with 1 <= N <= 1000."""
    match = _K.fullmatch(query)
    return match is not None and 1 <= int(match[1]) <= MAX_K
