"""The dataset manifest: one JSON line per image, sorted by content hash.

The dataset version is the SHA-256 of the manifest's bytes (first 16 hex digits), so the same images
collected twice give the same version, and the manifest lives at ``manifests/<version>.jsonl`` under the
data root: a second collection of the same images writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from loopline.data.splits import Split
from loopline.data.store import DataStore


@dataclass(frozen=True)
class ManifestRow:
    content_hash: str
    source_uri: str
    stored_uri: str
    width: int
    height: int
    format: str
    source_label: str | None
    split: Split | None


def manifest_bytes(rows: list[ManifestRow]) -> bytes:
    ordered = sorted(rows, key=lambda r: r.content_hash)
    return "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in ordered).encode()


def dataset_version(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:16]


def manifest_key(version: str) -> str:
    return f"manifests/{version}.jsonl"


def write_manifest(store: DataStore, rows: list[ManifestRow]) -> tuple[str, str, bool]:
    """Write the manifest atomically unless it exists; returns ``(version, uri, written)``."""
    content = manifest_bytes(rows)
    version = dataset_version(content)
    key = manifest_key(version)
    written = not store.exists(key)
    if written:
        store.put_bytes(key, content)
    return version, store.uri(key), written


def parse_manifest(content: bytes) -> list[ManifestRow]:
    return [ManifestRow(**json.loads(line)) for line in content.decode().splitlines() if line.strip()]


def read_manifest(store: DataStore, version: str) -> list[ManifestRow]:
    return parse_manifest(store.get_bytes(manifest_key(version)))
