"""What a reviewer reads before approving a model (pure functions): the model card and the evaluation
report (overall and per-class metrics, deltas against the champion, gate result, confident mistakes)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping

from loopline.registry.evaluation import Evaluation
from loopline.registry.gate import Comparison
from loopline.registry.stats import PairedTest, wilson
from loopline.verdict import GateVerdict

GALLERY = 12


def _delta(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def render_model_card(name: str, version: str, lineage: Mapping[str, str], labels: tuple[str, ...]) -> str:
    rows = "\n".join(f"| {key} | `{value}` |" for key, value in sorted(lineage.items()))
    return (
        f"# {name} v{version}\n\nAn image classifier over {len(labels)} labels: {', '.join(labels)}.\n"
        "Served as ONNX (input `image`: N x 3 x S x S float32, ImageNet-normalised; output `logits`).\n\n"
        f"## Lineage\n\n| | |\n|---|---|\n{rows}\n"
    )


def render_evaluation(
    name: str,
    version: str,
    challenger: Evaluation,
    champion: Evaluation | None,
    champion_version: str | None,
    comparison: Comparison,
    verdict: GateVerdict,
    thumbnail: Callable[[str], bytes | None] | None = None,
    confidence: float = 0.95,
) -> str:
    """Markdown: metrics with Wilson intervals (``confidence``), deltas with McNemar's paired tests, the
    gate's verdict and notes, and the most confident mistakes; ``thumbnail(content_hash)`` gives a PNG
    shown inline as a ``data:`` URI (the Prefect 3.9 UI renders them, V1 and V2;
    ``scripts/screenshot_artifact.py`` checks it)."""
    against = f"champion v{champion_version}" if champion else "no champion yet"
    level = f"{confidence:.0%}"
    lines = [
        f"# {name} v{version} against {against}",
        "",
        f"Test set `{challenger.test_set}` ({challenger.images} images), evaluated with ONNX Runtime; "
        f"intervals are {level} Wilson intervals.",
        "",
        "| metric | challenger | champion | delta |",
        "|---|---|---|---|",
        f"| accuracy | {_accuracy(challenger, confidence)} | {_accuracy(champion, confidence)} | "
        f"{_delta(comparison.accuracy_delta)} |",
        f"| expected calibration error | {challenger.ece:.3f} | {_value(champion, 'ece')} | "
        f"{_delta(comparison.ece_delta)} |",
        f"| latency per image (ms) | {challenger.latency_ms:.2f} | {_value(champion, 'latency_ms', 2)} | "
        f"{_delta(comparison.latency_delta_ms, 2)} |",
        *_paired_summary(comparison.accuracy_test),
        "",
        "## Per class",
        "",
        f"| label | precision | recall ({level} interval) | f1 | support | recall delta | McNemar p (Holm) |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['label']} | {r['precision']:.3f} | {_recall(challenger, str(r['label']), confidence)} | "
            f"{r['f1']:.3f} | {r['support']} | {_delta(comparison.recall_deltas.get(r['label']))} | "
            f"{_p(comparison.class_tests.get(str(r['label'])))} |"
            for r in challenger.per_class
        ),
        "",
        "## Gate",
        "",
        *([f"- FAILED: {v}" for v in verdict.violations] or ["- passed: every rule holds"]),
        *(f"- note: {n}" for n in verdict.notes),
        "",
        f"## Mistakes ({len(challenger.mistakes)}; the most confident first)",
        "",
        "| image | true | predicted | confidence |",
        "|---|---|---|---|",
    ]
    for mistake in challenger.mistakes[:GALLERY]:
        png = thumbnail(mistake.content_hash) if thumbnail else None
        image = (
            f"![{mistake.content_hash[:8]}](data:image/png;base64,{base64.b64encode(png).decode()})"
            if png
            else ""
        )
        lines.append(
            f"| {image} `{mistake.content_hash[:12]}` | {mistake.truth} | {mistake.predicted} | "
            f"{mistake.confidence:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _paired_summary(test: PairedTest | None) -> list[str]:
    if test is None:
        return []
    form = "exact binomial" if test.exact else "chi-square, continuity-corrected"
    return [
        "",
        f"Paired on the same {test.images} images: the challenger gets {test.challenger_only} right that the "
        f"champion gets wrong and {test.champion_only} wrong that the champion gets right "
        f"(McNemar, {form}: p = {test.p_value:.3g}).",
    ]


def _accuracy(evaluation: Evaluation | None, confidence: float) -> str:
    if evaluation is None:
        return "-"
    right = sum(evaluation.correct().values())
    return f"{evaluation.accuracy:.3f} {wilson(right, evaluation.images, confidence)}"


def _recall(evaluation: Evaluation, label: str, confidence: float) -> str:
    outcomes = evaluation.correct(label)
    return f"{evaluation.recall_of(label):.3f} {wilson(sum(outcomes.values()), len(outcomes), confidence)}"


def _p(test: PairedTest | None) -> str:
    if test is None:
        return "-"
    return f"{test.p_value:.3g} ({test.judged_p:.3g})"


def _value(evaluation: Evaluation | None, attribute: str, digits: int = 3) -> str:
    return "-" if evaluation is None else f"{getattr(evaluation, attribute):.{digits}f}"
