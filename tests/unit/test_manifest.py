import pytest

from loopline.data.manifest import ManifestRow, dataset_version, manifest_bytes, read_manifest, write_manifest
from loopline.data.store import LocalStore

pytestmark = pytest.mark.unit


def row(h: str, label: str | None = None) -> ManifestRow:
    return ManifestRow(h, f"/src/{h}.png", f"/data/images/{h}.png", 32, 32, "PNG", label, None)


def test_version_depends_on_content_not_order() -> None:
    a, b = row("aa"), row("bb")
    assert dataset_version(manifest_bytes([a, b])) == dataset_version(manifest_bytes([b, a]))
    assert dataset_version(manifest_bytes([a, b])) != dataset_version(manifest_bytes([a, row("bb", "cat")]))


def test_write_is_idempotent_and_readable(tmp_path) -> None:
    store = LocalStore(tmp_path)
    rows = [row("bb", "dog"), row("aa", "cat")]
    version, uri, written = write_manifest(store, rows)
    assert written and uri.endswith(f"manifests/{version}.jsonl")
    mtime = (tmp_path / "manifests" / f"{version}.jsonl").stat().st_mtime_ns
    assert write_manifest(store, rows) == (version, uri, False)
    assert (tmp_path / "manifests" / f"{version}.jsonl").stat().st_mtime_ns == mtime
    assert read_manifest(store, version) == sorted(rows, key=lambda r: r.content_hash)
    assert not [p for p in (tmp_path / "manifests").iterdir() if p.name.endswith(".tmp")]
