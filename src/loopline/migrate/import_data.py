"""Import a bundle's images, manifests and labeled manifests into the target data root.

Images first, then the manifests that name them (as collect does), each manifest's rows pointed at the
target's copies: the stored URI is provenance, not part of a version, so every version stays the same.
An image already there with the same content is skipped (an image's key holds its SHA-256, so being
there is enough; any other key is compared byte for byte); a key there with other content is a conflict
reported before anything is written.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from loopline.data.labeled import AnnotationRecord, LabeledRow, write_labeled_manifest
from loopline.data.manifest import content_version, manifest_key, parse_manifest, write_manifest
from loopline.data.store import DataStore
from loopline.errors import LooplineError
from loopline.migrate.bundle import BundleIndex, FileEntry, read_verified, sha256_bytes
from loopline.migrate.export_data import DATA

logger = logging.getLogger(__name__)


class ImportConflict(LooplineError):
    """The target data root holds other content under keys the bundle writes."""


@dataclass(frozen=True)
class ImportedData:
    images_written: int
    images_skipped: int
    manifests_written: int  # dataset and labeled manifests
    manifests_skipped: int


def labeled_key(version: str) -> str:
    return f"labels/{version}.jsonl"


def _content_addressed(key: str, entry: FileEntry) -> bool:
    return PurePosixPath(key).name.split(".", 1)[0] == entry.sha256


def _plan_images(bundle: Path, index: BundleIndex, store: DataStore, workers: int) -> list[str]:
    """The image keys to write (those the target lacks); ``ImportConflict`` naming every key the target
    holds with other content."""

    def needed(key: str) -> tuple[str, str]:  # (key, "write" | "skip" | "conflict")
        entry = index.files[f"{DATA}/{key}"]
        if not store.exists(key):
            return key, "write"
        if _content_addressed(key, entry) or sha256_bytes(store.get_bytes(key)) == entry.sha256:
            return key, "skip"
        return key, "conflict"

    with ThreadPoolExecutor(max(1, workers)) as pool:
        found = list(pool.map(needed, sorted(set(index.images.values()))))
    conflicts = [store.uri(k) for k, what in found if what == "conflict"]
    if conflicts:
        raise ImportConflict(
            f"{len(conflicts)} key(s) of the target data root {store.root!r} hold other content than the "
            f"bundle's: {conflicts[:5]}. Nothing was imported. To fix this, import into another data root "
            "(LOOPLINE_DATA_ROOT), or move those files aside if nothing refers to them."
        )
    return [k for k, what in found if what == "write"]


def _dataset_manifest(bundle: Path, index: BundleIndex, store: DataStore, version: str) -> bool:
    relative = f"{DATA}/{manifest_key(version)}"
    content = read_verified(bundle, relative, index.files[relative])
    rows = parse_manifest(content, relative)
    moved = [replace(r, stored_uri=store.uri(index.images[r.stored_uri])) for r in rows]
    _check_version(relative, version, content_version(moved))
    _, _, written = write_manifest(store, moved)
    return written


def _labeled_manifest(bundle: Path, index: BundleIndex, store: DataStore, version: str) -> bool:
    relative = f"{DATA}/{labeled_key(version)}"
    content = read_verified(bundle, relative, index.files[relative])
    rows = []
    for line in content.decode().splitlines():
        raw = json.loads(line)
        raw["annotations"] = tuple(AnnotationRecord(**a) for a in raw["annotations"])
        raw["stored_uri"] = store.uri(index.images[raw["stored_uri"]])
        rows.append(LabeledRow(**raw))
    there = store.exists(labeled_key(version))
    found, _ = write_labeled_manifest(store, rows)
    _check_version(relative, version, found)
    return not there


def _check_version(relative: str, expected: str, found: str) -> None:
    if found != expected:
        raise ImportConflict(
            f"The bundle's {relative} hashes to version {found}, not {expected}: it was written by a "
            "loopline that versions manifests differently. To fix this, export and import with the same "
            "loopline version."
        )


def import_data(bundle: Path, index: BundleIndex, store: DataStore, workers: int = 8) -> ImportedData:
    """Copy the bundle's images (skipping those there), then its manifests, into ``store``."""
    to_write = _plan_images(bundle, index, store, workers)

    def put(key: str) -> None:
        relative = f"{DATA}/{key}"
        store.put_bytes(key, read_verified(bundle, relative, index.files[relative]))

    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(put, to_write))
    written = sum(_dataset_manifest(bundle, index, store, v) for v in index.datasets)
    written += sum(_labeled_manifest(bundle, index, store, v) for v in index.labeled)
    manifests = len(index.datasets) + len(index.labeled)
    images = len(set(index.images.values()))
    logger.info("imported %d of %d images, %d of %d manifests", len(to_write), images, written, manifests)
    return ImportedData(len(to_write), images - len(to_write), written, manifests - written)
