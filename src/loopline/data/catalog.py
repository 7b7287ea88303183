"""What dataset versions exist under a data root."""

from __future__ import annotations

from dataclasses import dataclass

from loopline.data.manifest import parse_manifest
from loopline.data.store import DataStore


@dataclass(frozen=True)
class DatasetSummary:
    version: str
    manifest_uri: str
    images: int
    labelled: int


def list_datasets(store: DataStore) -> list[DatasetSummary]:
    summaries = []
    for key in store.list_keys("manifests"):
        if not key.endswith(".jsonl"):
            continue
        rows = parse_manifest(store.get_bytes(key))
        version = key.rsplit("/", 1)[-1].removesuffix(".jsonl")
        summaries.append(
            DatasetSummary(version, store.uri(key), len(rows), sum(1 for r in rows if r.source_label))
        )
    return summaries
