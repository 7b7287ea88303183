"""``POST /v1/predict``: image files in (the raw body, or several multipart files), for each image its label
and top-k probabilities out. A bad image gets an error naming it; the good ones are still answered."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message

from loopline.errors import InvalidImage, QueueFull
from loopline.serving.observe import read_body
from loopline.serving.preprocess import check_image, decode_checked
from loopline.serving.settings import ServingSettings

if TYPE_CHECKING:
    from loopline.serving.live import Serving
    from loopline.serving.model import LoadedModel

RAW_TYPES = ("image/", "application/octet-stream")
# Requests whose images are all this small are decoded on the event loop: for a 32x32 PNG the hop to a
# worker thread and back cost more CPU than decoding it (~85 of ~840 us per request, profiled at c=32).
INLINE_BYTES = 256 * 1024  # all images of the request together
INLINE_PIXELS = 256 * 256  # each image, as its header declares


@dataclass(frozen=True)
class NamedImage:
    name: str  # the multipart file name (or field name), "body" for a raw body
    data: bytes


async def read_images(request: Request, settings: ServingSettings) -> list[NamedImage]:
    """The images in the request: 415 for a content type that holds none, 413 past the byte limit."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (content_type.startswith(RAW_TYPES) or content_type == "multipart/form-data"):
        raise HTTPException(
            415,
            f"Content-Type {content_type or '(none)'!r} holds no image. To fix this, send the image file as "
            "the body with Content-Type image/png (image/jpeg, ..., or application/octet-stream), or several "
            "as multipart/form-data files (curl -F file=@a.png -F file=@b.png).",
        )
    body = await read_body(request, settings.max_body_bytes)
    if content_type != "multipart/form-data":
        return [NamedImage("body", body)]

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=settings.max_queue, max_part_size=settings.max_body_bytes
        )
    except HTTPException as exc:  # starlette's 400 for a malformed multipart body
        raise HTTPException(
            400,
            f"The multipart body cannot be read ({exc.detail}). To fix this, let the client build it "
            "(curl -F file=@a.png, httpx files=...), with its boundary in the Content-Type header.",
        ) from exc
    images = []
    for field, value in form.multi_items():
        if isinstance(value, UploadFile):
            images.append(NamedImage(value.filename or field, await value.read()))
    if not images:
        raise HTTPException(
            400,
            "The multipart request holds no file. To fix this, send each image as a file field "
            "(curl -F file=@digit.png).",
        )
    return images


async def submit(serving: Serving, batch: np.ndarray) -> np.ndarray:
    """``batch`` through the serving pair's batcher; a full queue is 503 with ``Retry-After``."""
    try:
        return np.asarray(await serving.batcher.submit(batch))
    except QueueFull as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from exc


@dataclass(frozen=True)
class PredictAnswer:
    serving: Serving  # the model that answered
    body: dict[str, Any]


async def predict_images(
    current: Callable[[], Serving], images: list[NamedImage], k: int, settings: ServingSettings
) -> PredictAnswer:
    """Each image's label and top-k probabilities, or the error that names it (400 when none is valid).

    The limits are checked on the headers first; decoding and preprocessing then run in a worker thread (a
    large upload must not stall the event loop), or at once when ``quick_to_decode``. The model is taken
    from ``current()`` after that, right before submitting, so a hot reload in between is honoured
    (re-preprocessing only if the new version's input size differs).
    """
    from loopline.serving.model import softmax, top_k
    from loopline.serving.preprocess import preprocess_batch

    size = classifier(current()).input_size
    results: list[dict[str, Any]] = [{"image": image.name} for image in images]
    checked = _check(images, settings, results)
    if quick_to_decode(images, checked):
        decoded, batch = _decode_and_preprocess(images, checked, size, results)
    else:
        decoded, batch = await asyncio.to_thread(_decode_and_preprocess, images, checked, size, results)
    if not decoded:
        raise HTTPException(400, " ".join(r["error"] for r in results))
    serving = current()  # no await between this and submitting
    model = classifier(serving)
    if model.input_size != size:
        batch = preprocess_batch([picture for _, picture in decoded], model.input_size)
    probabilities = softmax(await submit(serving, batch))
    for (index, _), row in zip(decoded, probabilities, strict=True):
        scores = top_k(row, model.labels, k)
        results[index]["label"] = scores[0].label
        results[index]["top_k"] = [{"label": s.label, "probability": s.probability} for s in scores]
    body = {"model_name": model.name, "model_version": model.version, "predictions": results}
    return PredictAnswer(serving, body)


def classifier(serving: Serving) -> LoadedModel:
    """The serving model as a classifier; 503 when a hot reload just swapped in a detector."""
    from loopline.serving.model import LoadedModel

    model = serving.model
    if not isinstance(model, LoadedModel):
        raise HTTPException(503, f"{model.name} version {model.version} is a detector now; retry the request")
    return model


def quick_to_decode(images: list[NamedImage], checked: dict[int, int]) -> bool:
    """Whether the ``checked`` images (index → declared pixels) are few bytes and few pixels (a small file
    can declare a huge image): decoding them costs less than a hop to a worker thread and back."""
    total = sum(len(images[index].data) for index in checked)
    return total <= INLINE_BYTES and all(pixels <= INLINE_PIXELS for pixels in checked.values())


def _check(
    images: list[NamedImage], settings: ServingSettings, results: list[dict[str, Any]]
) -> dict[int, int]:
    """The pixels each image within the limits declares, by index (headers only: quick on the event loop);
    each other image's error goes into ``results``."""
    checked = {}
    for index, image in enumerate(images):
        try:
            checked[index] = check_image(image.data, settings.max_body_bytes, settings.max_pixels)
        except InvalidImage as exc:
            results[index]["error"] = f"Image {image.name!r}: {exc}"
    return checked


def _decode_and_preprocess(
    images: list[NamedImage], checked: dict[int, int], size: int, results: list[dict[str, Any]]
) -> tuple[list[tuple[int, Image.Image]], np.ndarray]:
    """The decodable images (by index) and their batch; each undecodable one's error goes into ``results``."""
    from loopline.serving.preprocess import preprocess_batch

    decoded: list[tuple[int, Image.Image]] = []
    for index in checked:
        try:
            decoded.append((index, decode_checked(images[index].data)))
        except InvalidImage as exc:
            results[index]["error"] = f"Image {images[index].name!r}: {exc}"
    return decoded, preprocess_batch([picture for _, picture in decoded], size)
