"""Pictures of a detector's answers for the evaluation report: the image with its true boxes in one colour
and the predicted ones (label and score) in another, as a small PNG."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

from loopline.data.labeled import PixelBox
from loopline.detections import Detection

if TYPE_CHECKING:
    from PIL import Image

PICTURE = 192  # pixels, the longer side of a drawn picture
TRUE_COLOUR = (0, 200, 0)  # green: the labeled boxes
PREDICTED_COLOUR = (255, 0, 255)  # magenta: the detector's boxes, with label and score
COLOUR_NAMES = {TRUE_COLOUR: "green", PREDICTED_COLOUR: "magenta"}


def draw_detections(
    picture: Image.Image,
    truth: Sequence[PixelBox],
    predicted: Sequence[Detection],
    min_score: float = 0.0,
    size: int = PICTURE,
) -> bytes:
    """A PNG of ``picture`` scaled so its longer side is ``size``, with the true boxes (green) and the
    predictions at least ``min_score`` sure (magenta, captioned ``label score``) drawn on it; boxes are in
    the picture's own pixels."""
    from PIL import Image, ImageDraw

    width, height = picture.size
    scale = size / max(width, height)
    method = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    canvas = picture.convert("RGB").resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), method
    )
    draw = ImageDraw.Draw(canvas)

    def outline(box: PixelBox, colour: tuple[int, int, int]) -> tuple[float, float]:
        left, top = box.x * scale, box.y * scale
        draw.rectangle(
            [left, top, left + box.width * scale, top + box.height * scale], outline=colour, width=2
        )
        return left, top

    for box in truth:
        outline(box, TRUE_COLOUR)
    for found in predicted:
        if found.score < min_score:
            continue
        left, top = outline(found.box(), PREDICTED_COLOUR)
        draw.text((left + 3, top + 2), f"{found.label} {found.score:.2f}", fill=PREDICTED_COLOUR)
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()
