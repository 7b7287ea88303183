"""The dataset manifest: one JSON line per image, sorted by content hash.

The dataset version depends on the dataset's content only, never on where it was collected from or
stored: it is the SHA-256 (first 16 hex digits) of, for every image in content-hash order,

- the image's content hash (SHA-256 of its bytes),
- its upright width, height and format (what a model sees; they follow from the bytes and from how
  loopline decodes them, so a change of decoding, such as applying EXIF orientation, is a new version),
- its source label (the folder name) and its split (which carries the seed and fractions used).

Source and stored URIs are provenance, kept in the manifest rows but left out of the version: the same
images with the same labels and splits give the same version from any source folder or bucket, into any
data root; one changed label or split gives a new one. Quarantined files and removed duplicates are not
part of the dataset and do not enter the version (their effect on which images are kept does).

The manifest lives at ``manifests/<version>.jsonl`` under the data root. Collecting the same images
again writes nothing; collecting them from a moved folder rewrites the manifest in place (same version)
so its URIs say where the images are now.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from loopline.data.splits import Split
from loopline.data.store import DataStore
from loopline.errors import LooplineError

VERSION_SCHEME = "loopline-dataset/2"  # changes if what enters the version ever changes


class CorruptManifest(LooplineError):
    """A manifest file under the data root cannot be parsed."""


@dataclass(frozen=True)
class ManifestRow:
    content_hash: str
    source_uri: str  # provenance: not part of the version
    stored_uri: str  # provenance and location: not part of the version
    width: int
    height: int
    format: str
    source_label: str | None
    split: Split | None


_CONTENT_FIELDS = ("content_hash", "width", "height", "format", "source_label", "split")
_ROW_FIELDS = frozenset(f.name for f in fields(ManifestRow))


def manifest_bytes(rows: list[ManifestRow]) -> bytes:
    ordered = sorted(rows, key=lambda r: r.content_hash)
    return "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in ordered).encode()


def dataset_version(content: bytes) -> str:
    """The version of a byte string: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(content).hexdigest()[:16]


def content_version(rows: list[ManifestRow]) -> str:
    """The dataset version of ``rows``: their content, labels and splits, not their URIs."""
    lines = [VERSION_SCHEME]
    for row in sorted(rows, key=lambda r: r.content_hash):
        lines.append(json.dumps([getattr(row, name) for name in _CONTENT_FIELDS]))
    return dataset_version("\n".join(lines).encode())


def manifest_key(version: str) -> str:
    return f"manifests/{version}.jsonl"


def write_manifest(store: DataStore, rows: list[ManifestRow]) -> tuple[str, str, bool]:
    """Write the manifest atomically unless the same bytes are there; returns ``(version, uri, written)``.

    A manifest of the same version with other URIs (the source folder or the data root moved) is
    replaced, so its rows point at where the images are now.
    """
    content = manifest_bytes(rows)
    version = content_version(rows)
    key = manifest_key(version)
    written = not store.exists(key) or store.get_bytes(key) != content
    if written:
        store.put_bytes(key, content)
    return version, store.uri(key), written


def parse_manifest(content: bytes, uri: str = "the manifest") -> list[ManifestRow]:
    """Parse manifest lines; anything that is not a manifest row raises ``CorruptManifest``."""
    rows = []
    try:
        text = content.decode()
    except UnicodeDecodeError as exc:
        raise _corrupt(uri, 0, f"not UTF-8 text ({exc})") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _corrupt(uri, number, f"not JSON ({exc.msg})") from exc
        if not isinstance(raw, dict) or set(raw) != _ROW_FIELDS:
            found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            raise _corrupt(uri, number, f"expected the fields {sorted(_ROW_FIELDS)}, found {found}")
        rows.append(ManifestRow(**raw))
    return rows


def _corrupt(uri: str, line: int, problem: str) -> CorruptManifest:
    where = f"{uri}, line {line}" if line else uri
    return CorruptManifest(
        f"The manifest {where} is damaged: {problem}. To fix this, delete the file and collect its "
        "source again (collect writes the manifest anew; stored images are reused), or restore it "
        "from a backup."
    )


def read_manifest(store: DataStore, version: str) -> list[ManifestRow]:
    key = manifest_key(version)
    return parse_manifest(store.get_bytes(key), store.uri(key))
