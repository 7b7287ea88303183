"""The labeled manifest's records: one row per labeled image with its consensus label, split and every
annotation behind it; for detection, the consensus boxes too (``boxes``, in the image's pixels). Written
like the dataset manifest: ``labels/<version>.jsonl``, the version being the hash of the content. (Built
from a Label Studio export by ``loopline.labeling.labeled``.)"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from loopline.data.manifest import dataset_version
from loopline.data.splits import Split
from loopline.data.store import DataStore


@dataclass(frozen=True)
class AnnotationRecord:
    annotation_id: int
    annotator: int | None
    label: str
    created_at: str | None


@dataclass(frozen=True)
class PixelBox:
    """A labeled box in pixels of the decoded image (EXIF orientation applied): left, top, width, height."""

    label: str
    x: float
    y: float
    width: float
    height: float


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
    # detection only: the consensus boxes (empty: a labeled negative, no objects) and the image's size;
    # None for classification, and then left out of the file (classification versions are unchanged)
    boxes: tuple[PixelBox, ...] | None = None
    image_size: tuple[int, int] | None = None  # (width, height)


def _record(row: LabeledRow) -> dict[str, object]:
    record = asdict(row)
    for key in ("boxes", "image_size"):
        if record[key] is None:
            del record[key]
    return record


def write_labeled_manifest(store: DataStore, rows: list[LabeledRow]) -> tuple[str, str]:
    """Write ``labels/<version>.jsonl`` unless it exists; returns ``(version, uri)``. Like the dataset
    version, the labeled version hashes content only: every field but the stored URI (provenance)."""
    rows = sorted(rows, key=lambda r: r.content_hash)
    content = "".join(json.dumps(_record(r), sort_keys=True) + "\n" for r in rows).encode()
    version = dataset_version(
        "".join(
            json.dumps({k: v for k, v in _record(r).items() if k != "stored_uri"}, sort_keys=True) + "\n"
            for r in rows
        ).encode()
    )
    key = f"labels/{version}.jsonl"
    if not store.exists(key):
        store.put_bytes(key, content)
    return version, store.uri(key)


def read_labeled_manifest(store: DataStore, version: str) -> list[LabeledRow]:
    rows = []
    for line in store.get_bytes(f"labels/{version}.jsonl").decode().splitlines():
        raw = json.loads(line)
        raw["annotations"] = tuple(AnnotationRecord(**a) for a in raw["annotations"])
        if raw.get("boxes") is not None:
            raw["boxes"] = tuple(PixelBox(**b) for b in raw["boxes"])
        if raw.get("image_size") is not None:
            raw["image_size"] = tuple(raw["image_size"])
        rows.append(LabeledRow(**raw))
    return rows
