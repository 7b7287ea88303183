"""Annotator agreement and consensus (pure functions). Label Studio Community computes none of these.

- Cohen's kappa for two annotators, Fleiss' kappa for a fixed number of annotators per item;
- per-label agreement (Fleiss' kappa of each label against the rest);
- IoU-matched precision / recall / F1 between two annotators' boxes;
- consensus by majority vote, ties sent back for review;
- a quality gate that lists every violated rule at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from loopline.errors import QualityGateFailed


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float:
    """Cohen's kappa of two annotators' labels on the same items (1 = perfect, 0 = chance)."""
    if len(first) != len(second) or not first:
        raise ValueError(f"need two equally long, non-empty label lists, got {len(first)} and {len(second)}")
    labels = sorted(set(first) | set(second))
    index = {label: i for i, label in enumerate(labels)}
    table = np.zeros((len(labels), len(labels)))
    for a, b in zip(first, second, strict=True):
        table[index[a], index[b]] += 1
    n = table.sum()
    observed = np.trace(table) / n
    expected = float((table.sum(axis=1) * table.sum(axis=0)).sum() / n**2)
    return 1.0 if expected == 1.0 else float((observed - expected) / (1.0 - expected))


def rating_table(ratings: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    """(items, labels) counts of how many annotators gave each label to each item."""
    index = {label: i for i, label in enumerate(labels)}
    table = np.zeros((len(ratings), len(labels)))
    for row, item in enumerate(ratings):
        for label in item:
            table[row, index[label]] += 1
    return table


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


def per_label_kappa(table: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """Fleiss' kappa of each label against all others (how reliably each label is recognised)."""
    counts = np.asarray(table, dtype=np.float64)
    result = {}
    for j, label in enumerate(labels):
        binary = np.stack([counts[:, j], counts.sum(axis=1) - counts[:, j]], axis=1)
        if binary[:, 0].sum() == 0:
            continue
        result[label] = fleiss_kappa(binary)
    return result


@dataclass(frozen=True)
class Consensus:
    labels: dict[str, str]  # item → majority label
    ties: tuple[str, ...]  # items whose top labels tie: back to review


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


def box_agreement(reference: Sequence[Box], other: Sequence[Box], threshold: float = 0.5) -> BoxAgreement:
    """One-to-one matching (Hungarian on IoU) of same-label boxes with IoU >= threshold."""
    from scipy.optimize import linear_sum_assignment

    if not reference and not other:
        return BoxAgreement(0, 1.0, 1.0, 1.0)
    matched = 0
    if reference and other:
        scores = np.array([[iou(a, b) if a.label == b.label else 0.0 for b in other] for a in reference])
        rows, cols = linear_sum_assignment(-scores)
        matched = int(sum(scores[r, c] >= threshold for r, c in zip(rows, cols, strict=True)))
    precision = matched / len(other) if other else 0.0
    recall = matched / len(reference) if reference else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return BoxAgreement(matched, precision, recall, f1)


@dataclass(frozen=True)
class AgreementReport:
    items: int
    annotators_per_item: int
    kappa: float | None
    kappa_method: str
    per_label: dict[str, float]
    consensus: Consensus
    raw_agreement: float
    notes: tuple[str, ...] = field(default_factory=tuple)


def agreement_report(ratings: Mapping[str, Sequence[str]], labels: Sequence[str]) -> AgreementReport:
    """Agreement of classification labels: items rated by the most common number of annotators."""
    counts = Counter(len(v) for v in ratings.values() if len(v) >= 2)
    consensus = majority_vote(ratings)
    if not counts:
        return AgreementReport(
            len(ratings), 1, None, "none", {}, consensus, 1.0, ("no item has two or more annotations",)
        )
    n = counts.most_common(1)[0][0]
    rated = [list(v) for v in ratings.values() if len(v) == n]
    notes = []
    if len(rated) < sum(counts.values()):
        notes.append(f"{sum(counts.values()) - len(rated)} items with another number of annotations left out")
    used = sorted({label for item in rated for label in item} | set(labels))
    table = rating_table(rated, used)
    raw = float(np.mean([len(set(item)) == 1 for item in rated]))
    if n == 2:
        kappa, method = cohen_kappa([i[0] for i in rated], [i[1] for i in rated]), "cohen"
    else:
        kappa, method = fleiss_kappa(table), "fleiss"
    return AgreementReport(
        len(rated), n, kappa, method, per_label_kappa(table, used), consensus, raw, tuple(notes)
    )


def check_agreement_gate(
    report: AgreementReport, min_kappa: float, min_label_kappa: float | None = None
) -> None:
    """Raise ``QualityGateFailed`` listing every violated rule (nothing is raised when all pass)."""
    violations = []
    if report.kappa is None:
        violations.append("no item has two or more annotations, so agreement cannot be measured")
    elif report.kappa < min_kappa:
        violations.append(f"{report.kappa_method} kappa {report.kappa:.3f} < minimum {min_kappa}")
    if min_label_kappa is not None:
        for label, value in sorted(report.per_label.items()):
            if value < min_label_kappa:
                violations.append(f"label {label!r}: kappa {value:.3f} < minimum {min_label_kappa}")
    if violations:
        raise QualityGateFailed(
            "The labels failed the agreement gate:\n" + "\n".join(f"- {v}" for v in violations) + "\n"
            "To fix this, send the batch back for review (clearer guidelines, more annotators per item) "
            "or lower the gate deliberately."
        )
