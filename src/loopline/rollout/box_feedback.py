"""The A/B stage's primary metric for detectors: per request, the IoU-matched F1 of the boxes the model
answered against the true boxes feedback brings (``loopline.labeling.agreement.box_agreement``, the fixed
matching; IoU is scale-free, so pixels serve as well as percent). A request's F1 counts in its arm as a
classification request's 0/1 correctness does: the arm's accuracy is then its mean F1.

Boxes travel as JSON objects ``{"label", "x", "y", "width", "height"}`` in the original image's pixels, as
the model server's ``/v1/predict`` answers them; an empty list is a valid answer (nothing there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from loopline.data.labeled import PixelBox

BOX_KEYS = ("label", "x", "y", "width", "height")


def box_f1(predicted: Sequence[PixelBox], truth: Sequence[PixelBox]) -> float:
    """F1 of ``predicted`` against ``truth`` (1.0 when both are empty: a negative image answered right)."""
    from loopline.labeling.agreement import Box, box_agreement

    def boxes(given: Sequence[PixelBox]) -> list[Box]:
        return [Box(b.label, b.x, b.y, b.width, b.height) for b in given]

    return box_agreement(boxes(truth), boxes(predicted)).f1


def boxes_to_json(boxes: Sequence[PixelBox] | None) -> list[dict[str, Any]] | None:
    if boxes is None:
        return None
    return [{"label": b.label, "x": b.x, "y": b.y, "width": b.width, "height": b.height} for b in boxes]


def boxes_from_json(stored: Any) -> tuple[PixelBox, ...] | None:
    """Boxes as stored (``boxes_to_json``); None for None."""
    if stored is None:
        return None
    return tuple(PixelBox(str(b["label"]), *(float(b[k]) for k in BOX_KEYS[1:])) for b in stored)


def answered_boxes(answer: Any) -> tuple[PixelBox, ...] | None:
    """The boxes of a model server's detector answer to ``/v1/predict`` (None when it is not one)."""
    if not isinstance(answer, dict) or answer.get("task_type") != "detection":
        return None
    given = answer.get("boxes")
    if not isinstance(given, list):
        return None
    problems: list[str] = []
    stripped = [{k: b.get(k) for k in BOX_KEYS} if isinstance(b, dict) else b for b in given]  # no score
    boxes = parse_boxes(stripped, "the answer", problems)
    return None if problems else boxes


def parse_boxes(value: Any, where: str, problems: list[str]) -> tuple[PixelBox, ...]:
    """``value`` as boxes; each problem (not a list, a box without a label, a coordinate that is not a
    finite number, a negative corner, no area) appended to ``problems``, naming the box."""
    if not isinstance(value, list):
        problems.append(f"{where}: true_boxes must be a list of boxes (an empty list: nothing there)")
        return ()
    boxes = []
    for index, box in enumerate(value):
        name = f"{where}: box {index}"
        if not isinstance(box, dict) or sorted(box) != sorted(BOX_KEYS):
            problems.append(f"{name} must be an object with exactly {list(BOX_KEYS)}, not {box!r}")
            continue
        label, numbers = box["label"], [box[k] for k in BOX_KEYS[1:]]
        if not isinstance(label, str) or not label.strip():
            problems.append(f"{name}: label must be a non-empty string, not {label!r}")
        elif not all(
            isinstance(n, int | float) and not isinstance(n, bool) and math.isfinite(n) for n in numbers
        ):
            problems.append(f"{name}: x, y, width and height must be finite numbers (pixels), not {numbers}")
        elif numbers[0] < 0 or numbers[1] < 0 or numbers[2] <= 0 or numbers[3] <= 0:
            problems.append(
                f"{name}: x and y must be >= 0 and width and height > 0 (pixels of the original image), "
                f"not {numbers}"
            )
        else:
            boxes.append(PixelBox(label, *(float(n) for n in numbers)))
    return tuple(boxes)
