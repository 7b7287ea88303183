"""Label Studio's ML backend protocol on the model server, as Label Studio (``ml/api_connector.py``) calls
it at the URL a project is connected to (``http://HOST:PORT/label-studio`` by default):

- ``GET /health`` → ``{"status": "UP", "model_version": ...}`` once a model is served (503 before);
- ``POST /setup`` ``{"project", "schema", ...}`` → ``{"model_version": "NAME/VERSION"}``, or 400 naming why
  the project's label config does not fit the served model (Label Studio shows it on the connection);
- ``POST /predict`` ``{"tasks": [...], "label_config", "project", "params"}`` → ``{"results": [{"result":
  [...], "score", "model_version"}, ...], "model_version"}``, one per task, in order: a detector's boxes as
  ``rectanglelabels`` in percent (above ``min_score``; an empty result when none is), a classifier's top
  label as ``choices``. Every task's image is fetched from Label Studio, so any task works, not only
  loopline's;
- ``POST /webhook``: ``ANNOTATION_CREATED``/``ANNOTATIONS_CREATED`` events are counted per project; at
  ``round_threshold`` the ``round_deployment`` gets a flow run (in the background: the answer is immediate).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from loopline.errors import InvalidImage, LabelConfigMismatch
from loopline.serving.live import ModelHost, Serving
from loopline.serving.observe import read_body
from loopline.serving.settings import ServingSettings
from loopline.serving.studio_backend import (
    AnnotationCounter,
    StudioAccess,
    TaskImageError,
    fetch_task_image,
    project_config,
    start_round_later,
    studio_access,
)

if TYPE_CHECKING:
    from loopline.labeling.configs import TaskType

MAX_TASKS = 100


def studio_router(host: ModelHost, settings: ServingSettings) -> APIRouter:
    router = APIRouter(dependencies=[Depends(_basic_auth(settings))])
    counter = AnnotationCounter(settings.round_threshold)
    running: set[asyncio.Task[Any]] = set()

    def serving() -> Serving:
        current = host.current
        if current is None:
            raise HTTPException(503, "The model is still loading; Label Studio retries on its next call.")
        return current

    @router.get("/health")
    @router.get("/")
    async def health() -> Response:
        current = serving()
        return JSONResponse({"status": "UP", "model_version": _version(current)})

    @router.post("/setup")
    async def setup(request: Request) -> Response:
        body = await _json_body(request, settings)
        current = serving()
        _config(body.get("schema"), current)
        return JSONResponse({"model_version": _version(current)})

    @router.post("/predict")
    async def predict(request: Request) -> Response:
        body = await _json_body(request, settings)
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks or len(tasks) > MAX_TASKS:
            raise HTTPException(
                400, f"'tasks' must be a list of 1 to {MAX_TASKS} Label Studio tasks (with data.image)."
            )
        current = serving()
        config = _config(body.get("label_config"), current)
        access = await asyncio.to_thread(studio_access, settings)
        results = [await _predict_task(task, current, config, access, settings) for task in tasks]
        return JSONResponse({"results": results, "model_version": _version(current)})

    @router.post("/webhook")
    async def webhook(request: Request) -> Response:
        body = await _json_body(request, settings)
        outcome = counter.add(body)
        if outcome.started and settings.round_deployment:
            project = body.get("project")
            start_round_later(
                settings, str(project.get("id") if isinstance(project, dict) else project), running
            )
        return JSONResponse(
            {
                "counted": outcome.counted,
                "pending": outcome.pending,
                "round_started": outcome.started and settings.round_deployment is not None,
            }
        )

    return router


def _basic_auth(settings: ServingSettings) -> Callable[[Request], None]:
    """The check of ``settings.label_studio_backend_auth`` (none when unset)."""

    def check(request: Request) -> None:
        if settings.label_studio_backend_auth is None:
            return
        expected = base64.b64encode(settings.label_studio_backend_auth.get_secret_value().encode())
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic" or not hmac.compare_digest(given.strip().encode(), expected):
            raise HTTPException(
                401,
                "This ML backend needs HTTP Basic auth. To fix this, turn on 'Basic Authentication' in the "
                "project's model connection with the user and password of LOOPLINE_SERVING_LABEL_STUDIO_"
                "BACKEND_AUTH.",
                headers={"WWW-Authenticate": 'Basic realm="loopline"'},
            )

    return check


def _version(serving: Serving) -> str:
    return f"{serving.model.name}/{serving.model.version}"


async def _json_body(request: Request, settings: ServingSettings) -> dict[str, Any]:
    raw = await read_body(request, settings.max_body_bytes)
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise HTTPException(400, f"The body is not JSON ({exc}); Label Studio sends JSON objects.") from exc
    if not isinstance(body, dict):
        raise HTTPException(400, "The body must be a JSON object.")
    return body


def _config(xml: object, serving: Serving) -> Any:
    from loopline.serving.detector import LoadedDetector

    model = serving.model
    task_type: TaskType = "detection" if isinstance(model, LoadedDetector) else "classification"
    try:
        return project_config(xml, task_type, model.labels)
    except LabelConfigMismatch as exc:
        raise HTTPException(400, str(exc)) from exc


async def _predict_task(
    task: Any, serving: Serving, config: Any, access: StudioAccess, settings: ServingSettings
) -> dict[str, Any]:
    """One task's prediction in Label Studio's form."""
    from loopline.labeling.predictions import classification_prediction, detection_prediction
    from loopline.serving.boxes import detect_picture
    from loopline.serving.detector import LoadedDetector
    from loopline.serving.preprocess import decode_image

    if not isinstance(task, dict):
        raise HTTPException(400, f"Each task must be an object with data.image, not {task!r}.")
    try:
        data = await asyncio.to_thread(fetch_task_image, task, access, settings.max_body_bytes)
        picture = await asyncio.to_thread(decode_image, data, settings.max_body_bytes, settings.max_pixels)
    except (TaskImageError, InvalidImage) as exc:
        raise HTTPException(422, f"Task {task.get('id')!r}: {exc}") from exc
    version, model = _version(serving), serving.model
    if isinstance(model, LoadedDetector):
        detected = await detect_picture(serving, picture, settings.min_score)
        size = (detected.width, detected.height)
        found = detection_prediction(config, detected.detections, size, version, settings.min_score)
        return found.as_dict() if found else {"result": [], "score": 0.0, "model_version": version}
    from loopline.serving.model import softmax
    from loopline.serving.predict import submit
    from loopline.serving.preprocess import preprocess_batch

    logits = await submit(serving, preprocess_batch([picture], model.input_size))
    probabilities = softmax(logits)[0]
    best = int(probabilities.argmax())
    prediction = classification_prediction(config, model.labels[best], float(probabilities[best]), version)
    return prediction.as_dict()
