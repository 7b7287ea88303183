"""The bundle format: a folder with ``bundle.json`` (the index) beside the files it lists.

    bundle.json                          format, source, every file's SHA-256 and size, what is in it
    data/manifests/<version>.jsonl       dataset manifests, as the source wrote them
    data/labels/<version>.jsonl          labeled manifests
    data/images/...                      every image the manifests name, under its key in the data root
    models/<name>/model.json             registered model: description, tags, aliases, its versions
    models/<name>/<version>/...          a version's files: model/ (ONNX + MLmodel), class_mapping.json,
                                         splits.json (what loopline's stages read from a training run)

``bundle.json`` is written last, so a folder without one is an export that did not finish. Paths in the
index are relative POSIX paths; none may leave the bundle folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from loopline.errors import LooplineError

FORMAT = "loopline-bundle/1"
INDEX = "bundle.json"


class BundleMissing(LooplineError):
    """The folder holds no bundle index (not a bundle, or an export that did not finish)."""


class CorruptBundle(LooplineError):
    """Files of the bundle are missing or do not have the SHA-256 the index records."""

    def __init__(self, message: str, files: list[str]) -> None:
        super().__init__(message)
        self.files = files


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class BundleIndex:
    """What ``bundle.json`` holds.

    ``images`` maps each stored URI the source's manifests name to the image's key under the data root
    (its file is ``data/<key>``), so import can point the manifests at the target's copies."""

    source_data_root: str
    source_tracking_uri: str
    created: str
    datasets: tuple[str, ...] = ()
    labeled: tuple[str, ...] = ()
    images: dict[str, str] = field(default_factory=dict)
    models: tuple[str, ...] = ()
    files: dict[str, FileEntry] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> BundleIndex:
        return cls(
            source_data_root=str(raw["source_data_root"]),
            source_tracking_uri=str(raw["source_tracking_uri"]),
            created=str(raw["created"]),
            datasets=tuple(raw["datasets"]),
            labeled=tuple(raw["labeled"]),
            images={str(k): str(v) for k, v in raw["images"].items()},
            models=tuple(raw["models"]),
            files={str(p): FileEntry(str(e["sha256"]), int(e["size"])) for p, e in raw["files"].items()},
        )


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def combined_sha256(entries: dict[str, str]) -> str:
    """One hash for a set of files (relative path → SHA-256): what a model version's files are."""
    lines = "".join(f"{path} {digest}\n" for path, digest in sorted(entries.items()))
    return sha256_bytes(lines.encode())


def safe_path(bundle: Path, relative: str) -> Path:
    """``bundle/relative``, refusing a path that is absolute or climbs out of the bundle."""
    parts = PurePosixPath(relative).parts
    if not relative or PurePosixPath(relative).is_absolute() or ".." in parts or "\\" in relative:
        raise CorruptBundle(
            f"The bundle index names the path {relative!r}, which leaves the bundle folder. To fix this, "
            "export the bundle again with `loopline export` (an index is never written with such paths).",
            [relative],
        )
    return bundle.joinpath(*parts)


def write_file(bundle: Path, relative: str, data: bytes) -> FileEntry:
    """Write ``data`` at ``bundle/relative``; its index entry."""
    path = safe_path(bundle, relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return FileEntry(sha256_bytes(data), len(data))


def write_index(bundle: Path, index: BundleIndex) -> Path:
    """Write ``bundle.json`` atomically (the last step of an export)."""
    path = bundle / INDEX
    tmp = bundle / f".{INDEX}.tmp"
    tmp.write_text(json.dumps(index.to_json(), indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_index(bundle: Path) -> BundleIndex:
    """The index of the bundle at ``bundle``.

    Raises:
        BundleMissing: no folder, or no ``bundle.json`` in it.
        CorruptBundle: ``bundle.json`` is not an index this version of loopline reads.
    """
    path = bundle / INDEX
    if not path.is_file():
        what = "does not exist" if not bundle.is_dir() else f"has no {INDEX}"
        raise BundleMissing(
            f"The bundle folder {str(bundle)!r} {what}. To fix this, point at the folder `loopline export "
            f"BUNDLE_DIR` wrote (it writes {INDEX} last: a folder without one is an export that did not "
            "finish; export again)."
        )
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT!r}")
        return BundleIndex.from_json(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptBundle(
            f"{path} is not a loopline bundle index ({type(exc).__name__}: {exc}). To fix this, export the "
            "bundle again with `loopline export` (same loopline version on both sides).",
            [INDEX],
        ) from exc


def check_file(bundle: Path, relative: str, entry: FileEntry) -> str | None:
    """Why ``relative`` does not match its index entry, or None when it does."""
    path = safe_path(bundle, relative)
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != entry.size:
        return f"{size} bytes, expected {entry.size}"
    digest = sha256_file(path)
    if digest != entry.sha256:
        return f"sha256 {digest[:12]}…, expected {entry.sha256[:12]}…"
    return None


def verify_bundle(bundle: Path, index: BundleIndex) -> None:
    """Check every file the index lists; raise ``CorruptBundle`` naming every bad one."""
    problems = {
        rel: why for rel, entry in sorted(index.files.items()) if (why := check_file(bundle, rel, entry))
    }
    if problems:
        raise corrupt(bundle, problems)


def corrupt(bundle: Path, problems: dict[str, str], when: str = "Nothing was imported.") -> CorruptBundle:
    shown = "; ".join(f"{rel} ({why})" for rel, why in list(problems.items())[:20])
    more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
    return CorruptBundle(
        f"{len(problems)} file(s) of the bundle {str(bundle)!r} do not match {INDEX}: {shown}{more}. {when} "
        "To fix this, copy the bundle again from where it was exported (or export it "
        "again with `loopline export`), then import it.",
        list(problems),
    )


def read_verified(bundle: Path, relative: str, entry: FileEntry) -> bytes:
    """The bytes of ``relative``, checked against the index as they are read."""
    data = safe_path(bundle, relative).read_bytes()
    if sha256_bytes(data) != entry.sha256:
        raise corrupt(
            bundle,
            {relative: "changed while importing"},
            "It was not imported (what was imported before it stays; an import again skips it).",
        )
    return data
