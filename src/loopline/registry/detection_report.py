"""The evaluation report of a detector (a pure function): mAP against the champion with the paired
bootstrap, per-class AP, the gate's verdict, and the worst test images drawn with their boxes."""

from __future__ import annotations

import base64
import math
from collections.abc import Callable

from loopline.registry.detection_eval import MATCH_IOU, SHOWN_SCORE, DetectionEvaluation
from loopline.registry.detection_gate import DetectionComparison
from loopline.registry.detection_pictures import COLOUR_NAMES, PREDICTED_COLOUR, TRUE_COLOUR
from loopline.registry.report import GALLERY
from loopline.verdict import GateVerdict


def _number(value: float | None, digits: int = 3, sign: bool = False) -> str:
    if value is None or math.isnan(value) or (value < 0 and not sign):  # pycocotools: -1 = nothing to find
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def render_detection_evaluation(
    name: str,
    version: str,
    challenger: DetectionEvaluation,
    champion: DetectionEvaluation | None,
    champion_version: str | None,
    comparison: DetectionComparison,
    verdict: GateVerdict,
    picture: Callable[[str], bytes | None] | None = None,
) -> str:
    """Markdown for a reviewer; ``picture(content_hash)`` gives a PNG of a worst image (its boxes drawn),
    shown inline as a ``data:`` URI like the classification report's gallery."""
    against = f"champion v{champion_version}" if champion else "no champion yet"
    ours, theirs = challenger.scores, champion.scores if champion else None
    lines = [
        f"# {name} v{version} against {against}",
        "",
        f"Test set `{challenger.test_set}` ({challenger.images} images), detectors run with ONNX Runtime; "
        "COCO box mAP from pycocotools.",
        "",
        "| metric | challenger | champion | delta |",
        "|---|---|---|---|",
        f"| mAP@[.5:.95] | {_number(ours.map)} | {_number(theirs.map if theirs else None)} | "
        f"{_number(comparison.map_delta, sign=True)} |",
        f"| mAP@.5 | {_number(ours.map50)} | {_number(theirs.map50 if theirs else None)} | "
        f"{_number(comparison.map50_delta, sign=True)} |",
        f"| latency per image (ms) | {challenger.latency_ms:.2f} | "
        f"{_number(champion.latency_ms if champion else None, 2)} | "
        f"{_number(comparison.latency_delta_ms, 2, sign=True)} |",
        *_bootstrap_summary(comparison),
        "",
        "## Per class",
        "",
        "| label | AP@[.5:.95] | AP@.5 | AP delta |",
        "|---|---|---|---|",
        *(
            f"| {label} | {_number(ours.per_class[label][0])} | {_number(ours.per_class[label][1])} | "
            f"{_number(comparison.class_deltas.get(label), sign=True)} |"
            for label in challenger.labels
        ),
        "",
        "## Gate",
        "",
        *([f"- FAILED: {v}" for v in verdict.violations] or ["- passed: every rule holds"]),
        *(f"- note: {n}" for n in verdict.notes),
        "",
        *_worst_images(challenger, picture),
    ]
    return "\n".join(lines) + "\n"


def _bootstrap_summary(comparison: DetectionComparison) -> list[str]:
    test = comparison.bootstrap
    if test is None:
        return []
    return [
        "",
        f"Paired bootstrap on the same {test.images} images ({test.resamples} resamples, seed {test.seed}): "
        f"mAP difference {test.delta:+.3f}, {test.confidence:.0%} interval {test.interval}; the challenger "
        f"is better in {test.better_share:.0%} of the resamples.",
    ]


def _worst_images(
    evaluation: DetectionEvaluation, picture: Callable[[str], bytes | None] | None
) -> list[str]:
    worst = evaluation.worst(GALLERY)
    lines = [
        f"## Worst images ({len(worst)} shown of {evaluation.images}; lowest F1 first, perfect ones omitted)",
        "",
        f"F1 of the detections scored at least {SHOWN_SCORE} against the true boxes, matched at IoU "
        f"{MATCH_IOU}. True boxes in {COLOUR_NAMES[TRUE_COLOUR]}, predicted ones in "
        f"{COLOUR_NAMES[PREDICTED_COLOUR]} with label and score.",
        "",
        "| image | F1 | true boxes | predicted (shown) |",
        "|---|---|---|---|",
    ]
    for key, f1 in worst:
        png = picture(key) if picture else None
        image = f"![{key[:8]}](data:image/png;base64,{base64.b64encode(png).decode()})" if png else ""
        shown = sum(1 for d in evaluation.predictions[key] if d.score >= SHOWN_SCORE)
        lines.append(f"| {image} `{key[:12]}` | {f1:.2f} | {len(evaluation.truth[key])} | {shown} |")
    return lines
