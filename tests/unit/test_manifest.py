import pytest

from loopline.data.manifest import (
    CorruptManifest,
    ManifestRow,
    content_version,
    read_manifest,
    write_manifest,
)
from loopline.data.store import LocalStore

pytestmark = pytest.mark.unit


def row(h: str, label: str | None = None, root: str = "/data", split: str | None = None) -> ManifestRow:
    return ManifestRow(h, f"/src/{h}.png", f"{root}/images/{h}.png", 32, 32, "PNG", label, split)  # type: ignore[arg-type]


def test_version_depends_on_content_not_order_or_paths() -> None:
    a, b = row("aa"), row("bb")
    assert content_version([a, b]) == content_version([b, a])
    assert content_version([a, b]) == content_version([row("aa", root="/elsewhere"), row("bb", root="/x")])
    assert content_version([a, b]) != content_version([a, row("bb", "cat")])
    assert content_version([a, row("bb", "cat", split="val")]) != content_version([a, row("bb", "cat")])


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


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"content_hash": "aa", "source_uri"', "line 1 is damaged: not JSON"),
        (b'{"content_hash": "aa"}\n', "line 1 is damaged: expected the fields"),
        (b"[1, 2]\n", "found list"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_a_damaged_manifest_is_named_with_the_fix(tmp_path, content: bytes, problem: str) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("manifests/0123456789abcdef.jsonl", content)
    with pytest.raises(CorruptManifest, match=f"0123456789abcdef.jsonl.*{problem}.*To fix this, delete"):
        read_manifest(store, "0123456789abcdef")
