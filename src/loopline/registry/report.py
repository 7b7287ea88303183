"""What a reviewer reads before approving a model (pure functions): the model card and the evaluation
report (overall and per-class metrics, deltas against the champion, gate result, confident mistakes)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping

from loopline.registry.evaluation import Evaluation
from loopline.registry.gate import Comparison

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
    violations: list[str],
    thumbnail: Callable[[str], bytes | None] | None = None,
    min_class_support: int | None = None,
) -> str:
    """Markdown; ``thumbnail(content_hash)`` gives a PNG for the gallery of mistakes (optional)."""
    against = f"champion v{champion_version}" if champion else "no champion yet"
    lines = [
        f"# {name} v{version} against {against}",
        "",
        f"Test set `{challenger.test_set}` ({challenger.images} images), evaluated with ONNX Runtime.",
        "",
        "| metric | challenger | champion | delta |",
        "|---|---|---|---|",
        f"| accuracy | {challenger.accuracy:.3f} | {_value(champion, 'accuracy')} | "
        f"{_delta(comparison.accuracy_delta)} |",
        f"| expected calibration error | {challenger.ece:.3f} | {_value(champion, 'ece')} | "
        f"{_delta(comparison.ece_delta)} |",
        f"| latency per image (ms) | {challenger.latency_ms:.2f} | {_value(champion, 'latency_ms', 2)} | "
        f"{_delta(comparison.latency_delta_ms, 2)} |",
        "",
        "## Per class",
        "",
        "| label | precision | recall | f1 | support | recall delta |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['label']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} | "
            f"{_delta(comparison.recall_deltas.get(r['label']))} |"
            for r in challenger.per_class
        ),
        "",
        "## Gate",
        "",
        *([f"- FAILED: {v}" for v in violations] or ["- passed: every rule holds"]),
        *(
            [f"- the per-class rule judges classes with at least {min_class_support} test images"]
            if min_class_support
            else []
        ),
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


def _value(evaluation: Evaluation | None, attribute: str, digits: int = 3) -> str:
    return "-" if evaluation is None else f"{getattr(evaluation, attribute):.{digits}f}"
