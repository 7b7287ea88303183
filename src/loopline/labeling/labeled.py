"""The labeled manifest: the collected manifest's rows that people labeled, with consensus labels,
annotation provenance and a deterministic stratified split. Written like the dataset manifest:
``labels/<version>.jsonl``, the version being the hash of the content."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from loopline.data.manifest import ManifestRow, dataset_version
from loopline.data.splits import Split, SplitFractions, stratified_split
from loopline.data.store import DataStore
from loopline.labeling.export import AnnotationRecord, LabeledItem


@dataclass(frozen=True)
class LabeledRow:
    content_hash: str
    stored_uri: str
    label: str
    split: Split
    dataset_version: str
    project_id: int
    export_id: int
    task_id: int
    annotations: tuple[AnnotationRecord, ...]


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


def write_labeled_manifest(store: DataStore, rows: list[LabeledRow]) -> tuple[str, str]:
    """Write ``labels/<version>.jsonl`` unless it exists; returns ``(version, uri)``."""
    content = "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in rows).encode()
    version = dataset_version(content)
    key = f"labels/{version}.jsonl"
    if not store.exists(key):
        store.put_bytes(key, content)
    return version, store.uri(key)


def read_labeled_manifest(store: DataStore, version: str) -> list[LabeledRow]:
    rows = []
    for line in store.get_bytes(f"labels/{version}.jsonl").decode().splitlines():
        raw = json.loads(line)
        raw["annotations"] = tuple(AnnotationRecord(**a) for a in raw["annotations"])
        rows.append(LabeledRow(**raw))
    return rows
