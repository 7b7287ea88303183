"""Export the data root's manifests, labeled manifests and every image they name into a bundle."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from loopline.data.manifest import CorruptManifest, parse_manifest
from loopline.data.store import DataStore
from loopline.errors import StoredImageMissing
from loopline.migrate.bundle import FileEntry, write_file

logger = logging.getLogger(__name__)

DATA = "data"


@dataclass(frozen=True)
class ExportedData:
    datasets: tuple[str, ...]
    labeled: tuple[str, ...]
    images: dict[str, str]  # stored URI in the source → key under the data root
    files: dict[str, FileEntry]


def _versions(store: DataStore, folder: str) -> list[str]:
    keys = store.list_keys(folder)
    return sorted(k.rsplit("/", 1)[-1].removesuffix(".jsonl") for k in keys if k.endswith(".jsonl"))


def labeled_uris(content: bytes, uri: str) -> list[str]:
    """The stored URI of every row of a labeled manifest; ``CorruptManifest`` if it is damaged."""
    uris = []
    for number, line in enumerate(content.decode(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            uris.append(str(json.loads(line)["stored_uri"]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CorruptManifest(
                f"The labeled manifest {uri}, line {number} is damaged ({type(exc).__name__}: {exc}). To fix "
                "this, delete the file and run the label stage again for its dataset, or restore it from a "
                "backup; then export again."
            ) from exc
    return uris


def image_keys(store: DataStore, uris: set[str]) -> dict[str, str]:
    """The key under the data root of each stored URI; every image outside the data root is named."""
    prefix = store.uri("")
    outside = sorted(u for u in uris if not u.startswith(prefix))
    if outside:
        raise StoredImageMissing(
            f"{len(outside)} image(s) the manifests name lie outside the data root {store.root!r}: "
            f"{outside[:5]}. To fix this, point LOOPLINE_DATA_ROOT at the data root they were collected "
            "into, or collect their source again into this one; then export again."
        )
    return {u: u[len(prefix) :] for u in uris}


def export_data(store: DataStore, bundle: Path, workers: int = 8) -> ExportedData:
    """Copy ``manifests/``, ``labels/`` and the images they name from ``store`` into ``bundle/data/``."""
    files: dict[str, FileEntry] = {}
    uris: set[str] = set()
    datasets, labeled = _versions(store, "manifests"), _versions(store, "labels")
    for folder, versions in (("manifests", datasets), ("labels", labeled)):
        for version in versions:
            key = f"{folder}/{version}.jsonl"
            content = store.get_bytes(key)
            if folder == "manifests":
                uris.update(r.stored_uri for r in parse_manifest(content, store.uri(key)))
            else:
                uris.update(labeled_uris(content, store.uri(key)))
            files[f"{DATA}/{key}"] = write_file(bundle, f"{DATA}/{key}", content)
    keys = image_keys(store, uris)
    missing: list[str] = []

    def copy(key: str) -> tuple[str, FileEntry | None]:
        try:
            data = store.get_bytes(key)
        except Exception:  # FileNotFoundError locally, NoSuchKey on S3: listed together below
            if store.exists(key):
                raise
            return key, None
        return key, write_file(bundle, f"{DATA}/{key}", data)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for key, entry in pool.map(copy, sorted(set(keys.values()))):
            if entry is None:
                missing.append(store.uri(key))
            else:
                files[f"{DATA}/{key}"] = entry
    if missing:
        raise StoredImageMissing(
            f"{len(missing)} image(s) the manifests name are gone from the data root: {missing[:5]}. To fix "
            "this, restore them from a backup, or collect their source again (collect stores them anew); "
            "then export again."
        )
    logger.info(
        "exported %d manifests, %d labeled manifests, %d images", len(datasets), len(labeled), len(keys)
    )
    return ExportedData(tuple(datasets), tuple(labeled), keys, files)
