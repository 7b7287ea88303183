"""Collect: turn a folder or S3 prefix of raw files into a clean, content-addressed, versioned dataset.

Every file is read and decoded; bad files are copied to ``quarantine/<sha256><ext>`` with a reason
record beside them, ``quarantine/<sha256>.reason.json`` (a stored file's key has at most one dot after
the hash, so a record never collides with a quarantined file, not even one named ``notes.json``); the
source is never changed. Exact duplicates (same SHA-256) and near duplicates (perceptual hashes within a
Hamming threshold) are left out of the manifest, one representative kept. Each file is read once:
good images are stored as they are checked, under ``images/<hh>/<sha256>.<ext>`` (so a near duplicate's
blob stays stored, unreferenced); the manifest is written last, so a failure leaves no partial manifest.
The dataset version depends on content, labels and splits only (see ``loopline.data.manifest``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import PurePosixPath

from loopline.data.dedupe import near_duplicate_groups
from loopline.data.images import ImageInfo, ImageLimits, QuarantineReason, Rejection, inspect_image
from loopline.data.manifest import ManifestRow, write_manifest
from loopline.data.s3 import is_transient
from loopline.data.sources import LocalFolderSource, Source, SourceFile
from loopline.data.spawn import lean_spawn_context
from loopline.data.splits import SplitFractions, stratified_split
from loopline.data.store import DataStore, LocalStore

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]

EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


@dataclass(frozen=True)
class CollectOptions:
    limits: ImageLimits = field(default_factory=ImageLimits)
    near_duplicate_threshold: int = 4
    fractions: SplitFractions = field(default_factory=SplitFractions)
    seed: int = 0
    workers: int = 4  # threads for I/O (reads, writes, S3)
    processes: int | None = None  # decode-check processes for local sources; None: one per CPU
    min_files_for_processes: int = 1_000  # below this, starting processes costs more than it saves


@dataclass(frozen=True)
class QuarantinedFile:
    source_uri: str
    reason: QuarantineReason
    detail: str
    stored_uri: str | None


@dataclass(frozen=True)
class DuplicateGroup:
    kind: str  # "exact" or "near"
    kept_uri: str
    removed_uris: tuple[str, ...]


@dataclass(frozen=True)
class CollectResult:
    source_uri: str
    data_root: str
    version: str
    manifest_uri: str
    manifest_written: bool
    seen: int
    kept: int
    exact_duplicates: int
    near_duplicates: int
    quarantined: dict[str, int]
    images_written: int
    labels: dict[str, int]
    splits: dict[str, int]
    duplicate_groups: tuple[DuplicateGroup, ...]
    quarantined_files: tuple[QuarantinedFile, ...]


@dataclass(frozen=True)
class _Scanned:
    """One file after its single read: checked, hashed, and stored (image) or quarantined (with reason)."""

    file: SourceFile
    sha256: str | None
    result: ImageInfo | Rejection
    stored_uri: str | None
    written: bool


def _read(source: Source, file: SourceFile) -> bytes | Rejection:
    try:
        return source.read(file)
    except Exception as exc:  # any read failure of one file is quarantined, unless worth a retry
        if is_transient(exc):
            raise
        return Rejection("unreadable", f"{type(exc).__name__}: {exc}")


@contextmanager
def _scan_pool(
    source: Source, store: DataStore, total: int, options: CollectOptions
) -> Iterator[ProcessPoolExecutor | None]:
    """Processes for the CPU-bound decode-check of local files into a local store (spawned: safe
    beside the threads of a Prefect run; lean: they skip re-importing the caller's main module, see
    ``loopline.data.spawn``). Anything touching S3 uses threads instead."""
    processes = options.processes if options.processes is not None else (os.cpu_count() or 1)
    local = isinstance(source, LocalFolderSource) and isinstance(store, LocalStore)
    if not local or processes < 2 or total < options.min_files_for_processes:
        yield None
        return
    with ProcessPoolExecutor(max_workers=processes, mp_context=lean_spawn_context()) as pool:
        yield pool


def _suffix(uri: str) -> str:
    return PurePosixPath(uri).suffix.lower()[:10]


def quarantine_record_key(key_hash: str) -> str:
    """Where the reason for quarantining a file is recorded (never the key of a quarantined file)."""
    return f"quarantine/{key_hash}.reason.json"


def _put_once(store: DataStore, key: str, data: bytes) -> bool:
    """Write ``key`` unless it exists (content-addressed keys make this idempotent)."""
    if store.exists(key):
        return False
    store.put_bytes(key, data)
    return True


def _scan(source: Source, store: DataStore, file: SourceFile, limits: ImageLimits) -> _Scanned:
    """Read the file once; store it content-addressed if it is a good image, else quarantine it."""
    data = _read(source, file)
    result: ImageInfo | Rejection
    sha: str | None = None
    if isinstance(data, Rejection):
        key_hash, result = hashlib.sha256(file.uri.encode()).hexdigest(), data
    else:
        sha = key_hash = hashlib.sha256(data).hexdigest()
        result = inspect_image(data, limits)
        if isinstance(result, ImageInfo):
            key = f"images/{key_hash[:2]}/{key_hash}{EXTENSIONS.get(result.format, '.img')}"
            return _Scanned(file, sha, result, store.uri(key), _put_once(store, key, data))
    # Quarantine: a copy of the bytes (when they could be read) and a record of the reason.
    stored = None
    if isinstance(data, bytes):
        stored = f"quarantine/{key_hash}{_suffix(file.uri)}"
        _put_once(store, stored, data)
    record = {"source_uri": file.uri, "reason": result.reason, "detail": result.detail}
    record_bytes = json.dumps(record, sort_keys=True).encode()
    written = _put_once(store, quarantine_record_key(key_hash), record_bytes)
    return _Scanned(file, sha, result, store.uri(stored) if stored else None, written)


def _dedupe(good: list[_Scanned], threshold: int) -> tuple[list[_Scanned], list[DuplicateGroup], int, int]:
    """Keep one image per exact and per near-duplicate group; returns (kept, groups, n_exact, n_near)."""
    by_hash: dict[str, list[_Scanned]] = defaultdict(list)
    for item in good:
        by_hash[item.sha256 or ""].append(item)
    groups: list[DuplicateGroup] = []
    unique: list[_Scanned] = []
    for items in by_hash.values():
        unique.append(items[0])  # files arrive sorted by URI: the first is the representative
        if len(items) > 1:
            groups.append(DuplicateGroup("exact", items[0].file.uri, tuple(i.file.uri for i in items[1:])))
    n_exact = sum(len(g.removed_uris) for g in groups)
    unique.sort(key=lambda i: i.file.uri)
    infos = [i.result for i in unique]
    near = near_duplicate_groups([i.phash for i in infos if isinstance(i, ImageInfo)], threshold)
    dropped: set[int] = set()
    n_near = 0
    for group in near:
        ranked = sorted(group, key=lambda k: (-_area(unique[k]), unique[k].file.uri))
        dropped.update(ranked[1:])
        n_near += len(ranked) - 1
        groups.append(
            DuplicateGroup("near", unique[ranked[0]].file.uri, tuple(unique[k].file.uri for k in ranked[1:]))
        )
    kept = [item for k, item in enumerate(unique) if k not in dropped]
    return kept, groups, n_exact, n_near


def _area(item: _Scanned) -> int:
    return item.result.width * item.result.height if isinstance(item.result, ImageInfo) else 0


def collect(
    source: Source,
    store: DataStore,
    options: CollectOptions | None = None,
    on_progress: ProgressCallback | None = None,
) -> CollectResult:
    """Collect every file of ``source`` into ``store``; see the module docstring."""
    options = options or CollectOptions()
    started = time.perf_counter()
    store.check_writable()
    files = source.list_files()
    total = len(files)
    logger.info("collecting %d files from %s into %s", total, source.uri, store.root)
    scanned: list[_Scanned] = []
    threads = ThreadPoolExecutor(max(1, options.workers))
    with threads, _scan_pool(source, store, total, options) as procs:
        scan = partial(_scan, source, store, limits=options.limits)
        results = procs.map(scan, files, chunksize=64) if procs else threads.map(scan, files)
        for done, item in enumerate(results, start=1):
            scanned.append(item)
            if on_progress:
                on_progress(done, total)
    scanned_at = time.perf_counter()
    good = [s for s in scanned if isinstance(s.result, ImageInfo)]
    quarantined = [
        QuarantinedFile(s.file.uri, s.result.reason, s.result.detail, s.stored_uri)
        for s in scanned
        if isinstance(s.result, Rejection)
    ]
    kept, groups, n_exact, n_near = _dedupe(good, options.near_duplicate_threshold)
    deduped_at = time.perf_counter()

    labelled = [(s.sha256 or "", s.file.label) for s in kept if s.file.label is not None]
    splits = stratified_split(labelled, options.fractions, options.seed) if labelled else {}
    rows = []
    for item in kept:
        assert isinstance(item.result, ImageInfo) and item.sha256 and item.stored_uri
        rows.append(
            ManifestRow(
                content_hash=item.sha256,
                source_uri=item.file.uri,
                stored_uri=item.stored_uri,
                width=item.result.width,
                height=item.result.height,
                format=item.result.format,
                source_label=item.file.label,
                split=splits.get(item.sha256),
            )
        )
    version, manifest_uri, written = write_manifest(store, rows)
    logger.info(
        "collect timings: list+check+store %.2f s, de-duplicate %.2f s, manifest %.2f s",
        scanned_at - started,
        deduped_at - scanned_at,
        time.perf_counter() - deduped_at,
    )
    return CollectResult(
        source_uri=source.uri,
        data_root=store.root,
        version=version,
        manifest_uri=manifest_uri,
        manifest_written=written,
        seen=total,
        kept=len(rows),
        exact_duplicates=n_exact,
        near_duplicates=n_near,
        quarantined=dict(sorted(Counter(q.reason for q in quarantined).items())),
        images_written=sum(1 for s in good if s.written),
        labels=dict(sorted(Counter(r.source_label for r in rows if r.source_label).items())),
        splits=dict(sorted(Counter(r.split for r in rows if r.split).items())),
        duplicate_groups=tuple(groups),
        quarantined_files=tuple(quarantined),
    )
