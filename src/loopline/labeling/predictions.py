"""Pre-annotations: build Label Studio prediction results and check them against the label config.

A prediction whose ``from_name``, ``to_name``, ``type`` or label values do not match the project's config
is silently invisible in Label Studio; loopline refuses it instead, naming what is wrong. Boxes
(``rectanglelabels``) are in percent of the image in Label Studio; a box outside the image, with no area,
rotated, or whose coordinates look like pixels or fractions of 1 is refused with that reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from loopline.detections import Detection
from loopline.errors import LabelConfigMismatch
from loopline.labeling.configs import LabelConfig

EDGE_TOLERANCE = 1e-6  # percent: rounding at the image's edge is not "outside the image"


@dataclass(frozen=True)
class Prediction:
    """A model's pre-annotation of one task."""

    model_version: str
    score: float
    result: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "score": self.score, "result": self.result}


def classification_prediction(
    config: LabelConfig, label: str, score: float, model_version: str
) -> Prediction:
    """A single-choice prediction (the top class and its probability)."""
    result = {
        "from_name": config.control_name,
        "to_name": config.object_name,
        "type": config.result_type,
        "value": {"choices": [label]},
        "score": score,
    }
    return Prediction(model_version, score, [result])


def detection_prediction(
    config: LabelConfig,
    detections: Sequence[Detection],
    image_size: tuple[int, int],
    model_version: str,
    min_score: float = 0.0,
) -> Prediction | None:
    """The detector's boxes scoring at least ``min_score`` as ``rectanglelabels`` results in percent of
    the image (``image_size`` is the decoded image's (width, height), the pixels the boxes are in).

    Boxes are clipped to the image first (a detector may overshoot an edge by a fraction of a pixel); a box
    with no area left is dropped. The prediction's score is the mean score of its boxes. An image with no
    box at or above ``min_score`` gets no prediction (``None``): the annotator starts from an empty image
    either way, and an empty result list would be refused by ``prediction_problems``.
    """
    width, height = image_size
    if width <= 0 or height <= 0:
        raise ValueError(f"image_size must be a positive (width, height), got {image_size}")
    results: list[dict[str, Any]] = []
    scores: list[float] = []
    for d in detections:
        if d.score < min_score:
            continue
        x1, y1 = min(max(d.x, 0.0), width), min(max(d.y, 0.0), height)
        x2, y2 = min(max(d.x + d.width, 0.0), width), min(max(d.y + d.height, 0.0), height)
        if x2 <= x1 or y2 <= y1:
            continue
        value = {
            "x": 100 * x1 / width,
            "y": 100 * y1 / height,
            "width": 100 * (x2 - x1) / width,
            "height": 100 * (y2 - y1) / height,
            "rotation": 0,
            "rectanglelabels": [d.label],
        }
        results.append(
            {
                "from_name": config.control_name,
                "to_name": config.object_name,
                "type": config.result_type,
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "value": value,
                "score": float(d.score),
            }
        )
        scores.append(float(d.score))
    if not results:
        return None
    return Prediction(model_version, sum(scores) / len(scores), results)


def _labels_of(value: dict[str, Any], result_type: str) -> list[str]:
    key = "choices" if result_type == "choices" else result_type
    labels = value.get(key)
    return list(labels) if isinstance(labels, list) else []


def prediction_problems(
    config: LabelConfig, prediction: dict[str, Any], image_size: tuple[int, int] | None = None
) -> list[str]:
    """Everything about one prediction that does not fit the config (empty when it fits). With the
    image's (width, height), a box's ``original_width``/``original_height`` must match it."""
    problems = []
    results = prediction.get("result")
    if not isinstance(results, list) or not results:
        if config.result_type == "rectanglelabels" and isinstance(results, list):
            return ["it has no result list (send no prediction for an image with no boxes)"]
        return ["it has no result list"]
    for i, result in enumerate(results):
        where = f"result[{i}]"
        if result.get("from_name") != config.control_name:
            problems.append(
                f"{where}.from_name is {result.get('from_name')!r}, expected {config.control_name!r}"
            )
        if result.get("to_name") != config.object_name:
            problems.append(f"{where}.to_name is {result.get('to_name')!r}, expected {config.object_name!r}")
        if result.get("type") != config.result_type:
            problems.append(f"{where}.type is {result.get('type')!r}, expected {config.result_type!r}")
        value = result.get("value")
        if not isinstance(value, dict):
            problems.append(f"{where}.value is missing")
            continue
        labels = _labels_of(value, config.result_type)
        if not labels:
            problems.append(f"{where}.value has no {config.result_type!r} list")
        unknown = sorted(set(labels) - set(config.labels))
        if unknown:
            problems.append(
                f"{where} uses labels {unknown} that are not in the label set {list(config.labels)}"
            )
        if config.result_type == "rectanglelabels":
            problems += [f"{where}: {p}" for p in box_problems(result, image_size)]
    if config.result_type == "rectanglelabels":
        problems += _fraction_scale_problems(results)
    score = prediction.get("score")
    if score is not None and not (isinstance(score, int | float) and 0.0 <= score <= 1.0):
        problems.append(f"score {score!r} is not a number in [0, 1]")
    return problems


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _size(result: dict[str, Any]) -> tuple[float, float] | None:
    """``original_width``, ``original_height`` when both are positive numbers."""
    width, height = result.get("original_width"), result.get("original_height")
    if _number(width) and _number(height) and width > 0 and height > 0:
        return float(width), float(height)
    return None


def box_problems(result: dict[str, Any], image_size: tuple[int, int] | None = None) -> list[str]:
    """What is wrong with one ``rectanglelabels`` result's box (empty when it is a box inside the image,
    in percent, axis-aligned)."""
    value = result.get("value")
    if not isinstance(value, dict):
        return []  # named by prediction_problems
    missing = [k for k in ("x", "y", "width", "height") if not _number(value.get(k))]
    if missing:
        return [f"value.{', value.'.join(missing)} missing or not a number"]
    x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
    where = f"box x={x:g} y={y:g} width={w:g} height={h:g}"
    problems = []
    if max(x, y, w, h) > 100 + EDGE_TOLERANCE:
        problems.append(
            f"{where}: coordinates look like pixels; Label Studio wants percent of the image (0-100)"
            + _percent_hint(result, x, y, w, h)
        )
    elif w <= 0 or h <= 0:
        problems.append(f"{where} has zero or negative area")
    elif min(x, y) < -EDGE_TOLERANCE or max(x + w, y + h) > 100 + EDGE_TOLERANCE:
        problems.append(f"{where} reaches outside the image (0-100 percent on both axes)")
    rotation = value.get("rotation", 0)
    if rotation not in (0, None):
        problems.append(f"value.rotation is {rotation!r}; loopline's boxes are axis-aligned (rotation 0)")
    problems += _original_size_problems(result, image_size)
    return problems


def _percent_hint(result: dict[str, Any], x: float, y: float, w: float, h: float) -> str:
    size = _size(result)
    if size is None:
        return ""
    width, height = size
    return (
        f" (as percent of {width:g}x{height:g}: x={100 * x / width:.4g} y={100 * y / height:.4g} "
        f"width={100 * w / width:.4g} height={100 * h / height:.4g})"
    )


def _original_size_problems(result: dict[str, Any], image_size: tuple[int, int] | None) -> list[str]:
    width, height = result.get("original_width"), result.get("original_height")
    if width is None and height is None:
        return []
    if _size(result) is None:
        return [f"original_width/original_height {width!r}x{height!r} are not a positive image size"]
    if image_size is not None and (width, height) != tuple(image_size):
        return [
            f"original_width/original_height are {width}x{height} but the image is "
            f"{image_size[0]}x{image_size[1]}; the boxes were computed for another size of the image"
        ]
    return []


def _fraction_scale_problems(results: list[dict[str, Any]]) -> list[str]:
    """Every box inside the top-left 1% x 1% of the image: coordinates in fractions of 1, not percent."""
    boxes = [r.get("value") for r in results]
    coordinates = [
        [float(b[k]) for k in ("x", "y", "width", "height")]
        for b in boxes
        if isinstance(b, dict) and all(_number(b.get(k)) for k in ("x", "y", "width", "height"))
    ]
    inside_one = all(
        x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 1 and y + h <= 1 for x, y, w, h in coordinates
    )
    if coordinates and len(coordinates) == len(results) and inside_one:
        return [
            "every box lies within the top-left 1% of the image: the coordinates look like fractions "
            "of 1; Label Studio wants percent of the image (0-100, i.e. 100 x the fraction)"
        ]
    return []


def validate_predictions(
    config: LabelConfig,
    predictions: list[tuple[str, dict[str, Any]]],
    image_sizes: Mapping[str, tuple[int, int]] | None = None,
) -> None:
    """Raise one error listing every ``(task key, prediction)`` that does not fit the config; with
    ``image_sizes`` (task key -> (width, height)) box predictions must be for those sizes."""
    sizes = image_sizes or {}
    bad = [
        (key, problems)
        for key, p in predictions
        if (problems := prediction_problems(config, p, sizes.get(key)))
    ]
    if bad:
        listed = "\n".join(f"- {key}: {'; '.join(problems)}" for key, problems in bad[:20])
        more = f"\n… and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise LabelConfigMismatch(
            f"{len(bad)} of {len(predictions)} predictions do not fit the label config "
            f"(control {config.control_name!r} → {config.object_name!r}, labels {list(config.labels)}):\n"
            f"{listed}{more}\nTo fix this, map the model's classes onto the project's labels "
            "(the class mapping stored with the model) and use the config's control and object names; "
            "give boxes in percent of the image they were detected on (detection_prediction converts "
            "pixels)."
        )
