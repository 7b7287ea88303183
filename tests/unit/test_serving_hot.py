"""The hot-route dispatcher: which requests it answers itself (with which parameters and route template),
which it leaves to the app behind it, and how a handler's HTTPException becomes the server's error body."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from loopline.serving.hot import INFER, INFER_VERSION, PREDICT, HotRoutes, plain_k

pytestmark = pytest.mark.unit


class Recorder:
    """The hot handlers and the app behind them: each records what reached it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def predict(self, request: Request, k: int | None) -> Response:
        self.calls.append(("predict", k, await request.body()))
        return JSONResponse({"k": k})

    async def infer(self, request: Request, name: str, version: str | None) -> Response:
        self.calls.append(("infer", name, version))
        if name == "refused":
            raise HTTPException(503, "queue full", headers={"Retry-After": "1"})
        return JSONResponse({"name": name})

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append(("app", scope["method"], scope["path"]))
        await JSONResponse({"app": True})(scope, receive, send)


def call(method: str, path: str, query: bytes = b"") -> tuple[Recorder, Scope, list[Message]]:
    recorder, sent = Recorder(), []
    scope: Scope = {"type": "http", "method": method, "path": path, "query_string": query, "headers": []}

    async def receive() -> Message:
        return {"type": "http.request", "body": b"image", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(HotRoutes(recorder.app, recorder.predict, recorder.infer)(scope, receive, send))
    return recorder, scope, sent


@pytest.mark.parametrize(
    ("method", "path", "query", "call_made", "template"),
    [
        ("POST", "/v1/predict", b"", ("predict", None, b"image"), PREDICT),
        ("POST", "/v1/predict", b"k=5", ("predict", 5, b"image"), PREDICT),
        ("POST", "/v1/predict", b"k=1000", ("predict", 1000, b"image"), PREDICT),
        ("POST", "/v2/models/pets/infer", b"", ("infer", "pets", None), INFER),
        ("POST", "/v2/models/pets/versions/3/infer", b"", ("infer", "pets", "3"), INFER_VERSION),
    ],
)
def test_the_hot_routes_reach_their_handlers_with_their_parameters(
    method: str, path: str, query: bytes, call_made: tuple[Any, ...], template: object
) -> None:
    recorder, scope, sent = call(method, path, query)
    assert recorder.calls == [call_made]
    assert scope["route"] is template  # what the metrics are labelled with
    assert sent[0]["status"] == 200


@pytest.mark.parametrize(
    ("method", "path", "query"),
    [
        ("GET", "/v1/predict", b""),  # the app answers 405
        ("POST", "/v1/predict", b"k=0"),  # out of range: the app refuses it, naming k
        ("POST", "/v1/predict", b"k=1001"),
        ("POST", "/v1/predict", b"k=two"),
        ("POST", "/v1/predict", b"k=2&debug=1"),  # another parameter: the app parses the whole query
        ("POST", "/v1/predict/", b""),
        ("POST", "/v2/models/pets/infer", b"x=1"),
        ("POST", "/v2/models/pets/versions/infer", b""),
        ("POST", "/v2/models/a/b/infer", b""),
        ("GET", "/v2/models/pets", b""),
        ("POST", "/admin/reload", b""),
    ],
)
def test_everything_else_goes_to_the_app_untouched(method: str, path: str, query: bytes) -> None:
    recorder, scope, _ = call(method, path, query)
    assert recorder.calls == [("app", method, path)]
    assert "route" not in scope


def test_a_handler_error_is_the_servers_json_error_with_its_headers() -> None:
    _, _, sent = call("POST", "/v2/models/refused/infer")
    start, body = sent
    assert start["status"] == 503
    assert (b"retry-after", b"1") in start["headers"]
    assert json.loads(body["body"]) == {"error": "queue full"}


@pytest.mark.parametrize(
    ("query", "plain"),
    [
        *[(b"k=1", True), (b"k=0007", True), (b"k=1000", True), (b"k=0", False), (b"k=1001", False)],
        *[(b"k=", False), (b"k=-1", False), (b"k=1.5", False), (b"K=2", False), (b"k=2&k=3", False)],
    ],
)
def test_plain_k_accepts_only_k_within_range(query: bytes, plain: bool) -> None:
    assert plain_k(query) is plain
