"""Build the labeled manifest's rows (``loopline.data.labeled``) from a Label Studio export: the collected
manifest's rows that people labeled, with consensus labels (detection: consensus boxes in pixels),
annotation provenance and a deterministic stratified split."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from loopline.data.labeled import LabeledRow, PixelBox
from loopline.data.manifest import ManifestRow
from loopline.data.splits import SplitFractions, stratified_split
from loopline.labeling.agreement import Box
from loopline.labeling.box_consensus import BoxConsensus
from loopline.labeling.export import LabeledItem


def build_labeled_rows(
    manifest: list[ManifestRow],
    items: tuple[LabeledItem, ...],
    dataset: str,
    project_id: int,
    export_id: int,
    fractions: SplitFractions,
    seed: int = 0,
) -> list[LabeledRow]:
    by_hash = {row.content_hash: row for row in manifest}
    known = [item for item in items if item.content_hash in by_hash]
    splits = stratified_split([(i.content_hash, i.label) for i in known], fractions, seed)
    return [
        LabeledRow(
            i.content_hash,
            by_hash[i.content_hash].stored_uri,
            i.label,
            splits[i.content_hash],
            dataset,
            project_id,
            export_id,
            i.task_id,
            i.annotations,
        )
        for i in sorted(known, key=lambda i: i.content_hash)
    ]


def stratification_label(boxes: Sequence[PixelBox]) -> str:
    """A detection row's split key: its most frequent box label, ties by natural order ("" for none)."""
    counts = Counter(box.label for box in boxes)
    if not counts:
        return ""
    top = max(counts.values())
    return min((label for label, n in counts.items() if n == top), key=natural_key)


def natural_key(label: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order: "2" before "10", numbers before words."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", label) if p)


def to_pixels(box: Box, width: int, height: int) -> PixelBox:
    """A Label Studio box (percent of the image) in pixels of a ``width`` x ``height`` image."""
    return PixelBox(
        box.label,
        box.x * width / 100,
        box.y * height / 100,
        box.width * width / 100,
        box.height * height / 100,
    )


def build_detection_rows(
    manifest: list[ManifestRow],
    consensus: BoxConsensus,
    dataset: str,
    project_id: int,
    export_id: int,
    fractions: SplitFractions,
    seed: int = 0,
) -> list[LabeledRow]:
    """The labeled rows of a detection export: each settled image's consensus boxes in pixels of the
    collected image (its size from the manifest; Label Studio's percent coordinates are size-free), its
    ``image_size``, a stratification label (``stratification_label``) for a deterministic split, and the
    annotations behind it. Images sent back (``consensus.ties``) and images not in the manifest get none."""
    by_hash = {row.content_hash: row for row in manifest}
    known = [image for image in consensus.images if image.content_hash in by_hash]
    boxes = {
        i.content_hash: tuple(
            to_pixels(box, by_hash[i.content_hash].width, by_hash[i.content_hash].height)
            for box in i.consensus.boxes
        )
        for i in known
    }
    keys = {h: stratification_label(b) for h, b in boxes.items()}
    splits = stratified_split(sorted(keys.items()), fractions, seed)
    return [
        LabeledRow(
            i.content_hash,
            by_hash[i.content_hash].stored_uri,
            keys[i.content_hash],
            splits[i.content_hash],
            dataset,
            project_id,
            export_id,
            i.task_id,
            i.annotations,
            boxes=boxes[i.content_hash],
            image_size=(by_hash[i.content_hash].width, by_hash[i.content_hash].height),
        )
        for i in sorted(known, key=lambda i: i.content_hash)
    ]
