"""Turn a Label Studio JSON export into labels: one consensus label per image, every decision counted.

Cancelled (skipped) annotations, empty results and labels outside the label set are never silently
dropped: each is counted. Items whose annotators tie get no label here: they are returned as
``TiedTask``s (task id, votes) for one more annotator or for a person to decide.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from loopline.data.labeled import AnnotationRecord
from loopline.labeling.agreement import majority_vote
from loopline.labeling.configs import LabelConfig
from loopline.labeling.ties import TiedTask


@dataclass(frozen=True)
class LabeledItem:
    content_hash: str
    task_id: int
    label: str
    annotations: tuple[AnnotationRecord, ...]


@dataclass(frozen=True)
class ExportSummary:
    items: tuple[LabeledItem, ...]
    ratings: dict[str, list[str]]  # content hash → every valid label given
    ties: tuple[TiedTask, ...]  # no label: still tied after this export
    counts: dict[str, int]
    unknown_labels: dict[str, int]


def _choice_label(result: list[dict[str, Any]], config: LabelConfig) -> list[str]:
    labels: list[str] = []
    for region in result:
        if region.get("from_name") == config.control_name and region.get("type") == config.result_type:
            labels.extend(region.get("value", {}).get("choices", []))
    return labels


def parse_classification_export(tasks: list[dict[str, Any]], config: LabelConfig) -> ExportSummary:
    counts: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    ratings: dict[str, list[str]] = {}
    records: dict[str, list[AnnotationRecord]] = {}
    task_ids: dict[str, int] = {}
    looked: Counter[str] = Counter()  # content hash → every annotation, skips included
    for task in tasks:
        counts["tasks"] += 1
        content_hash = (task.get("data") or {}).get("content_hash")
        if not content_hash:
            counts["tasks without content_hash"] += 1
            continue
        task_ids[content_hash] = int(task["id"])
        for annotation in task.get("annotations", []):
            counts["annotations"] += 1
            looked[content_hash] += 1
            if annotation.get("was_cancelled"):
                counts["skipped or cancelled"] += 1
                continue
            labels = _choice_label(annotation.get("result") or [], config)
            if not labels:
                counts["empty results"] += 1
                continue
            label = labels[0]
            if label not in config.labels:
                counts["unknown labels"] += 1
                unknown[label] += 1
                continue
            ratings.setdefault(content_hash, []).append(label)
            records.setdefault(content_hash, []).append(
                AnnotationRecord(
                    int(annotation["id"]), annotation.get("completed_by"), label, annotation.get("created_at")
                )
            )
    consensus = majority_vote(ratings)
    counts["labeled"] = len(consensus.labels)
    counts["ties (no label yet)"] = len(consensus.ties)
    counts["without a valid annotation"] = len(task_ids) - len(ratings)
    items = tuple(
        LabeledItem(h, task_ids[h], label, tuple(records[h])) for h, label in sorted(consensus.labels.items())
    )
    ties = tuple(
        TiedTask(h, task_ids[h], looked[h], dict(sorted(Counter(ratings[h]).items()))) for h in consensus.ties
    )
    return ExportSummary(items, ratings, ties, dict(counts), dict(unknown))
