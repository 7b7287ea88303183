"""A detector's answers: ``POST /v1/predict`` (one image in, its boxes in the original image's pixels out)
and ``detect_picture``, which the Label Studio ML backend (``studio_backend.py``) shares.

The image is decoded as for a classifier (size limits from the header first, EXIF orientation applied) and
given to the detector unresized, so its boxes are in the original image's pixels already; boxes scoring
below ``ServingSettings.min_score`` are left out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image
from starlette.exceptions import HTTPException

from loopline.detections import Detection
from loopline.errors import InvalidImage, QueueFull
from loopline.serving.predict import NamedImage, PredictAnswer
from loopline.serving.preprocess import decode_image
from loopline.serving.settings import ServingSettings

if TYPE_CHECKING:
    from loopline.serving.detector import DetectorOutput
    from loopline.serving.live import Serving


@dataclass(frozen=True)
class DetectedImage:
    width: int
    height: int
    detections: list[Detection]  # highest score first

    def as_dict(self) -> dict[str, Any]:
        return {
            "image": {"width": self.width, "height": self.height},
            "boxes": [
                {"label": d.label, "score": d.score, "x": d.x, "y": d.y, "width": d.width, "height": d.height}
                for d in self.detections
            ],
        }


async def run_detector(serving: Serving, image: Any) -> DetectorOutput:
    """One preprocessed image (``1 x 3 x H x W``) through the serving detector's batcher; a full queue is
    503 with ``Retry-After``."""
    try:
        outputs = await serving.batcher.submit(image)
    except QueueFull as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from exc
    found: DetectorOutput = outputs[0]
    return found


async def detect_picture(serving: Serving, picture: Image.Image, min_score: float) -> DetectedImage:
    """The serving detector's boxes on a decoded image, scoring at least ``min_score``."""
    from loopline.detections import detector_input
    from loopline.serving.detector import LoadedDetector

    detector = serving.model
    if not isinstance(detector, LoadedDetector):  # a hot reload swapped in a classifier meanwhile
        raise HTTPException(
            503, f"{detector.name} version {detector.version} is a classifier now; retry the request."
        )
    tensor = await asyncio.to_thread(detector_input, picture)
    found = await run_detector(serving, tensor)
    return DetectedImage(picture.width, picture.height, found.detections(detector.labels, min_score))


async def decode(image: NamedImage, settings: ServingSettings) -> Image.Image:
    """The upright RGB image, decoded in a worker thread; 400 naming the image when it is not one."""
    try:
        return await asyncio.to_thread(decode_image, image.data, settings.max_body_bytes, settings.max_pixels)
    except InvalidImage as exc:
        raise HTTPException(400, f"Image {image.name!r}: {exc}") from exc


async def predict_boxes(
    current: Callable[[], Serving], images: list[NamedImage], settings: ServingSettings
) -> PredictAnswer:
    """``/v1/predict`` of a detector: one image per request (400 for more), its boxes."""
    if len(images) != 1:
        raise HTTPException(
            400,
            f"The request holds {len(images)} images; a detector answers one image per request. To fix "
            "this, send each image in its own request (as the body, or one multipart file).",
        )
    picture = await decode(images[0], settings)
    serving = current()
    detected = await detect_picture(serving, picture, settings.min_score)
    body = {
        "model": serving.model.name,
        "version": serving.model.version,
        "task_type": "detection",
        **detected.as_dict(),
    }
    return PredictAnswer(serving, body)
