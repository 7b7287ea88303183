"""The model server's HTTP layer: the Open Inference Protocol v2 (``/v2/...``), ``POST /v1/predict`` for
image files (a classifier's top-k, or a detector's boxes: ``boxes.py``), Label Studio's ML backend protocol
under ``settings.label_studio_prefix`` (``studio_routes.py``), ``/metrics`` and ``POST /admin/reload``, as
thin handlers over the core.

``create_app(settings, loader)`` builds the app; ``HotRoutes`` (``hot.py``) dispatches the two prediction
routes straight to their handlers, FastAPI the rest (and any prediction request it does not fully
understand). The model is loaded (or taken from ``initial``) when the app starts, and
``/v2/health/ready`` answers 200 only once it is. Every response names the serving model
in ``X-Model-Version: NAME/VERSION``; every error is ``{"error": "..."}`` with a 4xx status naming what was
wrong (5xx only when the server, not the input, is at fault: not ready yet, queue full).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from loopline import __version__
from loopline.serving import protocol
from loopline.serving.boxes import predict_boxes, run_detector
from loopline.serving.detector import LoadedDetector
from loopline.serving.hot import HotRoutes, InferHandler, error_response
from loopline.serving.live import ModelHost, ModelLoader, Serving
from loopline.serving.metrics import ServingMetrics
from loopline.serving.observe import VERSION_HEADER, ObserveRequests, read_body
from loopline.serving.predict import predict_images, read_images, submit
from loopline.serving.settings import ServingSettings
from loopline.serving.studio_routes import studio_router

if TYPE_CHECKING:
    from loopline.serving.live import ServedModel


def create_app(
    settings: ServingSettings,
    loader: ModelLoader,
    initial: ServedModel | None = None,
    on_reloaded: Callable[[], None] | None = None,
) -> FastAPI:
    """The server of the model ``loader`` loads (``initial``: already loaded, serve it at once).
    ``on_reloaded`` is called after ``POST /admin/reload`` loaded a new version (several workers: the
    runner has the others follow)."""
    metrics = ServingMetrics()
    host = ModelHost(settings, loader, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await host.start(initial)
        yield
        await host.stop()

    async def predict(request: Request, k: int | None) -> Response:
        images = await read_images(request, settings)
        if is_detector(_served(host, settings, None, None)):
            answer = await predict_boxes(lambda: _served(host, settings, None, None), images, settings)
            return _json(answer.body, answer.serving)
        answer = await predict_images(
            lambda: _served(host, settings, None, None), images, k or settings.top_k, settings
        )
        return _json(answer.body, answer.serving)

    async def infer(request: Request, name: str, version: str | None) -> Response:
        return await _infer(request, host, settings, name, version)

    app = FastAPI(title="loopline model server", version=__version__, lifespan=lifespan)
    app.state.host, app.state.metrics = host, metrics
    app.add_middleware(HotRoutes, predict=predict, infer=infer)
    app.add_middleware(ObserveRequests, host=host, metrics=metrics)  # added last: runs first
    _add_error_handlers(app, settings)
    _add_v2_routes(app, host, settings, infer)
    app.include_router(studio_router(host, settings), prefix=settings.label_studio_prefix)

    @app.post("/v1/predict")
    async def predict_route(request: Request, k: int | None = Query(None, ge=1, le=1000)) -> Response:
        return await predict(request, k)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/admin/reload")
    async def admin_reload(request: Request) -> Response:
        _authorize(request, settings)
        try:
            result = await host.reload()
        except Exception as exc:  # the registry is unreachable or the selector names nothing
            raise HTTPException(502, f"Could not resolve {settings.selector!r}: {exc}") from exc
        body = {"outcome": result.outcome, "version": result.version, "previous": result.previous}
        if result.outcome == "refused":
            body["error"] = (
                f"Version {result.version} was refused and version {result.previous} keeps serving: "
                f"{result.error}"
            )
            return JSONResponse(body, status_code=409)
        if result.outcome == "loaded" and on_reloaded is not None:
            on_reloaded()
        return JSONResponse(body)

    return app


def _add_v2_routes(app: FastAPI, host: ModelHost, settings: ServingSettings, infer: InferHandler) -> None:
    @app.get("/v2")
    async def server_metadata() -> Response:
        return JSONResponse({"name": "loopline", "version": __version__, "extensions": []})

    @app.get("/v2/health/live")
    async def live() -> Response:
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        loaded = host.current is not None
        return JSONResponse({"ready": loaded}, status_code=200 if loaded else 503)

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> Response:
        serving = _served(host, settings, name, version)
        m = serving.model
        if isinstance(m, LoadedDetector):
            return _json(protocol.detector_metadata(m.name, m.version), serving)
        return _json(protocol.model_metadata(m.name, m.version, m.input_size, len(m.labels)), serving)

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> Response:
        serving = _served(host, settings, name, version)
        return _json({"name": name, "ready": True}, serving)

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer_route(request: Request, name: str, version: str | None = None) -> Response:
        return await infer(request, name, version)


async def _infer(
    request: Request, host: ModelHost, settings: ServingSettings, name: str, version: str | None
) -> Response:
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type != "application/json":
        raise HTTPException(
            415, f"Content-Type {content_type!r} is not accepted; send the request as application/json."
        )
    body = await read_body(request, settings.max_body_bytes)
    with _as_400():
        parsed = protocol.parse_request(body)
    serving = _served(host, settings, name, version)  # no await between this and submitting
    model = serving.model
    if isinstance(model, LoadedDetector):
        return await _infer_detector(parsed, serving)
    with _as_400():
        outputs = protocol.requested_outputs(parsed)
        batch = protocol.input_tensor(parsed, model.input_size)
    logits = await submit(serving, batch)
    from loopline.serving.model import softmax

    response = protocol.InferenceResponse(
        model_name=serving.model.name,
        model_version=serving.model.version,
        id=parsed.id,
        outputs=protocol.response_outputs(logits, softmax(logits), outputs),
    )
    return _json(response, serving)


async def _infer_detector(parsed: protocol.InferenceRequest, serving: Serving) -> Response:
    with _as_400():
        outputs = protocol.detector_outputs(parsed)
        image = protocol.detector_input(parsed)
    found = await run_detector(serving, image)
    tensors = {"boxes": found.boxes, "labels": found.labels, "scores": found.scores}
    response = protocol.InferenceResponse(
        model_name=serving.model.name,
        model_version=serving.model.version,
        id=parsed.id,
        outputs=protocol.detector_response_outputs(tensors, outputs),
    )
    return _json(response, serving)


def is_detector(serving: Serving) -> bool:
    return isinstance(serving.model, LoadedDetector)


def _served(host: ModelHost, settings: ServingSettings, name: str | None, version: str | None) -> Serving:
    current = host.current
    if current is None:
        raise HTTPException(
            503, f"Model {settings.model_name!r} is still loading; retry when GET /v2/health/ready is 200."
        )
    model = current.model
    if name is not None and name != model.name:
        raise HTTPException(
            404,
            f"Model {name!r} is not served here; this server serves {model.name!r}: "
            f"GET /v2/models/{model.name} describes it.",
        )
    if version is not None and version != model.version:
        raise HTTPException(
            404,
            f"Version {version!r} of {model.name!r} is not served here; this server serves version "
            f"{model.version} (or leave the version out of the path).",
        )
    return current


@contextmanager
def _as_400() -> Iterator[None]:
    try:
        yield
    except protocol.BadRequest as exc:
        raise HTTPException(400, str(exc)) from exc


def _json(body: object, serving: Serving) -> Response:
    content = body.model_dump(exclude_none=True) if hasattr(body, "model_dump") else body
    version = f"{serving.model.name}/{serving.model.version}"
    return JSONResponse(content, headers={VERSION_HEADER: version})


def _authorize(request: Request, settings: ServingSettings) -> None:
    if settings.admin_token is None:
        raise HTTPException(
            403,
            "Reload over HTTP is disabled: no admin token is set. To enable it, start the server with "
            "LOOPLINE_SERVING_ADMIN_TOKEN set, and send it as 'Authorization: Bearer <token>'.",
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = settings.admin_token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise HTTPException(
            401,
            "Missing or wrong admin token: send 'Authorization: Bearer <LOOPLINE_SERVING_ADMIN_TOKEN>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _add_error_handlers(app: FastAPI, settings: ServingSettings) -> None:
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = exc.detail
        if exc.status_code == 404 and message == "Not Found":
            message = (
                f"No route {request.url.path!r}. Routes: /v2, /v2/health/ready, /v2/models/NAME[/infer], "
                f"/v1/predict, /metrics, /admin/reload, "
                f"{settings.label_studio_prefix}/(health|setup|predict|webhook)."
            )
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path!r}."
        return error_response(HTTPException(exc.status_code, message, exc.headers))

    async def invalid_parameters(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"Invalid request parameters: {problems}."}, status_code=400)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_parameters)
