"""Build the labeled manifest's rows (``loopline.data.labeled``) from a Label Studio export: the collected
manifest's rows that people labeled, with consensus labels, annotation provenance and a deterministic
stratified split."""

from __future__ import annotations

from loopline.data.labeled import LabeledRow
from loopline.data.manifest import ManifestRow
from loopline.data.splits import SplitFractions, stratified_split
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
