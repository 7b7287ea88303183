"""Annotator agreement and consensus (pure functions). Label Studio Community computes none of these.

- Krippendorff's alpha (nominal) over every item with two or more valid annotations, whatever the number
  of annotators per item and whoever they were (the pool changes from task to task, and a tied task gets
  one more annotator): it depends only on how many annotators gave each label to each item, never on
  the order the annotations come back in;
- per-label alpha (each label against the rest: how reliably each label is recognised);
- Fleiss' kappa as a secondary figure when every item has the same number of annotations;
- IoU-matched precision / recall / F1 between two annotators' boxes;
- consensus by majority vote (ties named, for one more annotator or a person);
- the agreement gate: a pure function returning a ``GateVerdict`` with every violated rule at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from loopline.verdict import GateVerdict


def rating_table(ratings: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    """(items, labels) counts of how many annotators gave each label to each item."""
    index = {label: i for i, label in enumerate(labels)}
    table = np.zeros((len(ratings), len(labels)))
    for row, item in enumerate(ratings):
        for label in item:
            table[row, index[label]] += 1
    return table


def krippendorff_alpha(table: np.ndarray) -> float | None:
    """Krippendorff's alpha (nominal) of an (items, labels) count table; any number of annotations per
    item (items with fewer than two are not pairable and do not count). ``None`` when it is undefined:
    no pairable item, or a single label used throughout (no variation to agree on)."""
    import krippendorff

    counts = np.asarray(table, dtype=np.float64)
    pairable = counts[counts.sum(axis=1) >= 2] if counts.size else counts
    if len(pairable) == 0 or np.count_nonzero(pairable.sum(axis=0)) < 2:
        return None
    return float(krippendorff.alpha(value_counts=pairable, level_of_measurement="nominal"))


def fleiss_kappa(table: np.ndarray) -> float:
    """Fleiss' kappa from an (items, labels) count table with the same number of ratings per item."""
    counts = np.asarray(table, dtype=np.float64)
    per_item = counts.sum(axis=1)
    if len(counts) == 0 or per_item.min() != per_item.max() or per_item[0] < 2:
        raise ValueError(
            "Fleiss' kappa needs at least one item and the same number (>= 2) of ratings per item"
        )
    n = per_item[0]
    p_item = ((counts**2).sum(axis=1) - n) / (n * (n - 1))
    p_label = counts.sum(axis=0) / counts.sum()
    observed, expected = p_item.mean(), float((p_label**2).sum())
    return 1.0 if expected == 1.0 else float((observed - expected) / (1.0 - expected))


def per_label_alpha(table: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """Alpha of each label against all others; labels never used (or used throughout) have none."""
    counts = np.asarray(table, dtype=np.float64)
    result = {}
    for j, label in enumerate(labels):
        binary = np.stack([counts[:, j], counts.sum(axis=1) - counts[:, j]], axis=1)
        value = krippendorff_alpha(binary)
        if value is not None:
            result[label] = value
    return result


@dataclass(frozen=True)
class Consensus:
    labels: dict[str, str]  # item → majority label
    ties: tuple[str, ...]  # items whose top labels tie: one more annotator, or a person decides


def majority_vote(ratings: Mapping[str, Sequence[str]]) -> Consensus:
    labels, ties = {}, []
    for item, given in ratings.items():
        ranked = Counter(given).most_common()
        if not ranked:
            continue
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            ties.append(item)
        else:
            labels[item] = ranked[0][0]
    return Consensus(labels, tuple(sorted(ties)))


@dataclass(frozen=True)
class Box:
    label: str
    x: float
    y: float
    width: float
    height: float


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x + a.width, b.x + b.width) - max(a.x, b.x))
    iy = max(0.0, min(a.y + a.height, b.y + b.height) - max(a.y, b.y))
    inter = ix * iy
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class BoxAgreement:
    matched: int
    precision: float
    recall: float
    f1: float


def match_boxes(
    reference: Sequence[Box], other: Sequence[Box], threshold: float = 0.5, same_label: bool = True
) -> list[tuple[int, int]]:
    """The fixed one-to-one matching: ``(reference index, other index)`` pairs with IoU >= threshold (and
    the same label, unless ``same_label`` is off), as many pairs as possible, ties between equally many
    pairs broken by the higher total IoU. Pairs below the threshold are ruled out before the assignment,
    so a high-IoU pair cannot block two pairs that both qualify."""
    from scipy.optimize import linear_sum_assignment

    if not reference or not other:
        return []
    overlap = np.array(
        [[iou(a, b) if not same_label or a.label == b.label else 0.0 for b in other] for a in reference]
    )
    allowed = overlap >= threshold
    # each allowed pair is worth more than any IoU total of fewer pairs: count first, then IoU
    weight = min(len(reference), len(other)) + 1
    rows, cols = linear_sum_assignment(-np.where(allowed, weight + overlap, 0.0))
    return sorted((int(r), int(c)) for r, c in zip(rows, cols, strict=True) if allowed[r, c])


def box_agreement(reference: Sequence[Box], other: Sequence[Box], threshold: float = 0.5) -> BoxAgreement:
    """Precision, recall and F1 of ``other`` against ``reference`` under ``match_boxes``."""
    if not reference and not other:
        return BoxAgreement(0, 1.0, 1.0, 1.0)
    matched = len(match_boxes(reference, other, threshold))
    precision = matched / len(other) if other else 0.0
    recall = matched / len(reference) if reference else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return BoxAgreement(matched, precision, recall, f1)


@dataclass(frozen=True)
class AgreementReport:
    items: int  # items with two or more valid annotations: every one of them is in alpha
    single: int  # items with exactly one valid annotation (labeled, but not pairable)
    annotations_per_item: dict[int, int]  # number of valid annotations → items (the pairable ones)
    alpha: float | None  # Krippendorff's alpha, nominal
    per_label: dict[str, float]  # label → alpha of that label against the rest
    fleiss_kappa: float | None  # only when every pairable item has the same number of annotations
    unanimous: float | None  # share of pairable items whose annotations all agree
    consensus: Consensus
    notes: tuple[str, ...] = field(default_factory=tuple)


def agreement_report(ratings: Mapping[str, Sequence[str]], labels: Sequence[str]) -> AgreementReport:
    """Agreement of classification labels over every item with two or more valid annotations."""
    consensus = majority_vote(ratings)
    pairable = [list(given) for _, given in sorted(ratings.items()) if len(given) >= 2]
    single = sum(len(given) == 1 for given in ratings.values())
    notes = []
    if single:
        notes.append(f"{single} items have a single valid annotation: labeled, but not in the agreement")
    if not pairable:
        notes.append("no item has two or more valid annotations, so agreement cannot be measured")
        return AgreementReport(0, single, {}, None, {}, None, None, consensus, tuple(notes))
    used = sorted({label for item in pairable for label in item} | set(labels))
    table = rating_table(pairable, used)
    sizes = Counter(len(item) for item in pairable)
    alpha = krippendorff_alpha(table)
    if alpha is None:
        notes.append("every annotation has the same label: there is no variation to measure agreement on")
    kappa = fleiss_kappa(table) if len(sizes) == 1 else None
    if kappa is None:
        notes.append("Fleiss' kappa is not given: the items have different numbers of annotations")
    return AgreementReport(
        items=len(pairable),
        single=single,
        annotations_per_item=dict(sorted(sizes.items())),
        alpha=alpha,
        per_label=per_label_alpha(table, used),
        fleiss_kappa=kappa,
        unanimous=float(np.mean([len(set(item)) == 1 for item in pairable])),
        consensus=consensus,
        notes=tuple(notes),
    )


def agreement_gate(
    report: AgreementReport, min_agreement: float | None, min_label_agreement: float | None = None
) -> GateVerdict:
    """Judge the labels: alpha >= ``min_agreement`` and every label's alpha >= ``min_label_agreement``
    (``None`` turns a rule off). Every violated rule is listed; the report's notes qualify the verdict."""
    violations = []
    if min_agreement is not None:
        if report.alpha is None:
            violations.append(
                f"Krippendorff's alpha cannot be measured over {report.items} items with 2+ annotations"
            )
        elif report.alpha < min_agreement:
            violations.append(
                f"Krippendorff's alpha {report.alpha:.3f} < minimum {min_agreement} "
                f"(over {report.items} items with 2+ annotations)"
            )
    if min_label_agreement is not None:
        for label, value in sorted(report.per_label.items()):
            if value < min_label_agreement:
                violations.append(f"label {label!r}: alpha {value:.3f} < minimum {min_label_agreement}")
    return GateVerdict("agreement", tuple(violations), report.notes)


def agreement_parameter_problems(
    labels: Sequence[str],
    annotators_per_task: int,
    max_annotators_per_task: int,
    min_agreement: float | None,
    min_label_agreement: float | None,
) -> list[str]:
    """Every problem with a label set and annotation plan that would only show after people worked."""
    problems = []
    if not labels:
        problems.append("the label set is empty. To fix this, list the labels, e.g. labels=['cat', 'dog']")
    duplicates = sorted(label for label, n in Counter(labels).items() if n > 1)
    if duplicates:
        problems.append(f"labels {duplicates} appear more than once. To fix this, list each label once")
    gated = [
        name
        for name, value in (("min_agreement", min_agreement), ("min_label_agreement", min_label_agreement))
        if value is not None
    ]
    if annotators_per_task < 2 and gated:
        problems.append(
            f"annotators_per_task={annotators_per_task} gives no image two annotations, so the agreement "
            f"gate ({', '.join(gated)}) cannot be measured. To fix this, set annotators_per_task to 2 or "
            f"more, or turn the gate off ({', '.join(f'{name}=None' for name in gated)})"
        )
    if max_annotators_per_task < annotators_per_task:
        problems.append(
            f"max_annotators_per_task={max_annotators_per_task} is below annotators_per_task="
            f"{annotators_per_task}. To fix this, set max_annotators_per_task to {annotators_per_task} (no "
            "tie-breaking) or more (one more annotator per tied image up to that many)"
        )
    return problems


AGREEMENT_FIX = (
    "send the batch back for review (clearer guidelines, more annotators per image) or lower the gate "
    "deliberately (min_agreement, min_label_agreement; None turns a rule off)."
)
