"""Consensus boxes from several annotators, and the gate on box agreement (pure functions).

Per image and label, boxes are clustered by IoU: complete linkage (every two boxes of a cluster overlap
at IoU >= ``threshold``), at most one box per annotation, pairs joined from the highest IoU down in a
canonical order, so the result never depends on the order annotations or boxes come back in. A cluster's
box is the median of its members' corners. With ``n`` valid annotations on the image (an annotation
with no box counts: it says "nothing here"), a cluster drawn by

- more than half of them is **kept**;
- exactly half is **tied**: the image is sent back for one more annotator, like a classification tie
  (with two annotators, a box only one of them drew is tied);
- fewer than half is a **minority** box: outvoted, dropped and reported.

Two clusters of different labels overlapping at IoU >= ``threshold`` are a **label conflict**: reported,
and the image is sent back when neither side is kept. Sent-back images are ``TiedTask``s (votes: label →
annotations behind the undecided boxes of that label), so ``ties.more_annotators`` asks for the next
annotator exactly as for classification; what is still undecided at the cap goes to a person.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from statistics import median

from loopline.data.labeled import AnnotationRecord
from loopline.labeling.agreement import Box, iou
from loopline.labeling.detection import DetectionAgreement, DetectionSummary
from loopline.labeling.ties import TiedTask
from loopline.verdict import GateVerdict


@dataclass(frozen=True)
class BoxCluster:
    label: str
    box: Box  # the median of the members' corners (percent of the image)
    annotations: tuple[int, ...]  # ids of the annotations that drew it, sorted

    @property
    def votes(self) -> int:
        return len(self.annotations)


@dataclass(frozen=True)
class LabelConflict:
    first: BoxCluster  # the two clusters in label order
    second: BoxCluster
    iou: float
    resolved: bool  # one side is kept


@dataclass(frozen=True)
class ImageBoxes:
    """One image's consensus: what was kept, and everything else named."""

    annotators: int  # valid annotations on the image
    kept: tuple[BoxCluster, ...]
    tied: tuple[BoxCluster, ...]
    minority: tuple[BoxCluster, ...]
    conflicts: tuple[LabelConflict, ...]

    @property
    def boxes(self) -> tuple[Box, ...]:
        return tuple(cluster.box for cluster in self.kept)

    @property
    def settled(self) -> bool:
        """No tied box and no label conflict without a majority: the consensus may be written."""
        return not self.tied and all(c.resolved for c in self.conflicts)


def _canonical(annotations: Mapping[int, Sequence[Box]], label: str) -> list[tuple[int, Box]]:
    items = [(a, b) for a, boxes in annotations.items() for b in boxes if b.label == label]
    return sorted(items, key=lambda item: (item[0], item[1].x, item[1].y, item[1].width, item[1].height))


def _median_box(label: str, boxes: list[Box]) -> Box:
    x0, y0 = median(b.x for b in boxes), median(b.y for b in boxes)
    x1, y1 = median(b.x + b.width for b in boxes), median(b.y + b.height for b in boxes)
    return Box(label, x0, y0, x1 - x0, y1 - y0)


def cluster_label(annotations: Mapping[int, Sequence[Box]], label: str, threshold: float) -> list[BoxCluster]:
    """The clusters of one label's boxes (see the module docstring), in a canonical order."""
    items = _canonical(annotations, label)
    overlap = {
        (i, j): iou(items[i][1], items[j][1])
        for i, j in combinations(range(len(items)), 2)
        if items[i][0] != items[j][0]
    }
    member = list(range(len(items)))  # item → its cluster's id (the cluster's smallest item)
    for (i, j), value in sorted(overlap.items(), key=lambda kv: (-kv[1], kv[0])):
        if value < threshold:
            break
        a = [k for k in range(len(items)) if member[k] == member[i]]
        b = [k for k in range(len(items)) if member[k] == member[j]]
        if member[i] == member[j] or {items[k][0] for k in a} & {items[k][0] for k in b}:
            continue
        if all(overlap[min(p, q), max(p, q)] >= threshold for p in a for q in b):
            root = min(member[i], member[j])
            for k in a + b:
                member[k] = root
    clusters = []
    for root in sorted(set(member)):
        members = [items[k] for k in range(len(items)) if member[k] == root]
        clusters.append(
            BoxCluster(
                label, _median_box(label, [b for _, b in members]), tuple(sorted(a for a, _ in members))
            )
        )
    return clusters


def image_consensus(annotations: Mapping[int, Sequence[Box]], threshold: float = 0.5) -> ImageBoxes:
    """Consensus of one image's valid annotations (annotation id → boxes in percent)."""
    n = len(annotations)
    labels = sorted({b.label for boxes in annotations.values() for b in boxes})
    clusters = [c for label in labels for c in cluster_label(annotations, label, threshold)]
    kept = tuple(c for c in clusters if 2 * c.votes > n)
    conflicts = []
    for a, b in combinations(clusters, 2):
        value = iou(a.box, b.box)
        if a.label != b.label and value >= threshold:
            conflicts.append(LabelConflict(a, b, value, a in kept or b in kept))
    return ImageBoxes(
        n,
        kept,
        tuple(c for c in clusters if 2 * c.votes == n),
        tuple(c for c in clusters if 2 * c.votes < n),
        tuple(conflicts),
    )


@dataclass(frozen=True)
class ConsensusImage:
    content_hash: str
    task_id: int
    consensus: ImageBoxes
    annotations: tuple[AnnotationRecord, ...]  # provenance: every valid annotation, earliest first


@dataclass(frozen=True)
class BoxConsensus:
    images: tuple[ConsensusImage, ...]  # settled images (their consensus may be written), by hash
    ties: tuple[TiedTask, ...]  # sent back: one more annotator, or a person at the cap
    counts: dict[str, int]


def _tie(image: ConsensusImage, looked: int) -> TiedTask:
    votes: Counter[str] = Counter()
    undecided = [*image.consensus.tied]
    for conflict in image.consensus.conflicts:
        if not conflict.resolved:
            undecided += [conflict.first, conflict.second]
    for cluster in {id(c): c for c in undecided}.values():
        votes[cluster.label] += cluster.votes
    return TiedTask(image.content_hash, image.task_id, looked, dict(sorted(votes.items())))


def box_consensus(summary: DetectionSummary, threshold: float = 0.5) -> BoxConsensus:
    """Every image's consensus boxes; unsettled images become ``TiedTask``s; every decision counted."""
    counts: Counter[str] = Counter()
    images, ties = [], []
    for task in sorted(summary.tasks, key=lambda t: t.content_hash):
        if not task.annotations:
            counts["without a valid annotation"] += 1
            continue
        records = tuple(task.records[a] for a in task.annotations if a in task.records)
        image = ConsensusImage(
            task.content_hash, task.task_id, image_consensus(task.annotations, threshold), records
        )
        consensus = image.consensus
        counts["boxes kept"] += len(consensus.kept)
        counts["boxes tied"] += len(consensus.tied)
        counts["minority boxes dropped"] += len(consensus.minority)
        counts["label conflicts"] += len(consensus.conflicts)
        counts["label conflicts without a majority"] += sum(not c.resolved for c in consensus.conflicts)
        if consensus.settled:
            images.append(image)
            counts["negatives (no box kept)"] += not consensus.kept
        else:
            ties.append(_tie(image, task.looked))
    counts["labeled"] = len(images)
    counts["ties (no label yet)"] = len(ties)
    return BoxConsensus(tuple(images), tuple(ties), dict(counts))


def box_agreement_gate(
    report: DetectionAgreement, min_f1: float | None, min_label_f1: float | None = None
) -> GateVerdict:
    """Judge the boxes: mean IoU-matched F1 >= ``min_f1`` and every label's >= ``min_label_f1``
    (``None`` turns a rule off). Every violated rule is listed at once, like ``agreement_gate``."""
    violations, notes = [], []
    if report.single:
        notes.append(f"{report.single} images have a single valid annotation: labeled, not in the agreement")
    if min_f1 is not None:
        if report.f1 is None:
            violations.append("box agreement cannot be measured: no image has two valid annotations")
        elif report.f1 < min_f1:
            violations.append(
                f"box F1 {report.f1:.3f} < minimum {min_f1} (IoU >= {report.threshold}, over "
                f"{report.pairs} annotation pairs on {report.images} images)"
            )
    if min_label_f1 is not None:
        for label, value in sorted(report.per_label.items()):
            if value < min_label_f1:
                violations.append(f"label {label!r}: box F1 {value:.3f} < minimum {min_label_f1}")
    return GateVerdict("agreement", tuple(violations), tuple(notes))


@dataclass(frozen=True)
class BoxLabels:
    """A detection export as the label stage uses it: the parsed boxes and their consensus (the
    counterpart of ``ExportSummary`` for classification: ``items``, ``ties``, ``counts``)."""

    summary: DetectionSummary
    consensus: BoxConsensus

    @property
    def items(self) -> tuple[ConsensusImage, ...]:
        return self.consensus.images

    @property
    def ties(self) -> tuple[TiedTask, ...]:
        return self.consensus.ties

    @property
    def counts(self) -> dict[str, int]:
        return {**self.summary.counts, **self.consensus.counts}

    @property
    def unknown_labels(self) -> dict[str, int]:
        return self.summary.unknown_labels


def box_labels(summary: DetectionSummary, threshold: float = 0.5) -> BoxLabels:
    return BoxLabels(summary, box_consensus(summary, threshold))
