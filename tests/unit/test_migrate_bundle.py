"""The bundle index and its hash checks: every bad file named at once, paths kept inside the bundle, a
folder without bundle.json named as an unfinished export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopline.migrate.bundle import (
    INDEX,
    BundleIndex,
    BundleMissing,
    CorruptBundle,
    combined_sha256,
    read_index,
    read_verified,
    sha256_bytes,
    verify_bundle,
    write_file,
    write_index,
)
from loopline.migrate.importer import check_complete

pytestmark = pytest.mark.unit


def make_bundle(folder: Path) -> BundleIndex:
    files = {
        "data/images/ab/ab.png": write_file(folder, "data/images/ab/ab.png", b"png bytes"),
        "data/manifests/v1.jsonl": write_file(folder, "data/manifests/v1.jsonl", b"{}\n"),
        "models/m/1/model/model.onnx": write_file(folder, "models/m/1/model/model.onnx", b"onnx"),
    }
    index = BundleIndex(
        source_data_root="/laptop/data",
        source_tracking_uri="http://127.0.0.1:5000",
        created="2026-11-29T00:00:00+00:00",
        datasets=("v1",),
        images={"/laptop/data/images/ab/ab.png": "images/ab/ab.png"},
        files=files,
    )
    write_index(folder, index)
    return index


def test_the_index_reads_back_as_written(tmp_path: Path) -> None:
    index = make_bundle(tmp_path)
    assert read_index(tmp_path) == index
    assert index.files["data/images/ab/ab.png"].sha256 == sha256_bytes(b"png bytes")
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left beside it
    verify_bundle(tmp_path, index)  # an untouched bundle passes


def test_every_changed_or_missing_file_is_named_at_once(tmp_path: Path) -> None:
    index = make_bundle(tmp_path)
    (tmp_path / "data/images/ab/ab.png").write_bytes(b"PNG bytes")  # same size, other content
    (tmp_path / "data/manifests/v1.jsonl").write_bytes(b"{}\n{}\n")
    (tmp_path / "models/m/1/model/model.onnx").unlink()
    with pytest.raises(CorruptBundle, match="3 file\\(s\\)") as caught:
        verify_bundle(tmp_path, index)
    assert caught.value.files == [
        "data/images/ab/ab.png",
        "data/manifests/v1.jsonl",
        "models/m/1/model/model.onnx",
    ]
    message = str(caught.value)
    assert "sha256" in message and "6 bytes, expected 3" in message and "(missing)" in message
    assert "Nothing was imported" in message and "To fix this" in message


def test_a_file_changed_after_the_check_is_refused_as_it_is_read(tmp_path: Path) -> None:
    index = make_bundle(tmp_path)
    entry = index.files["data/images/ab/ab.png"]
    assert read_verified(tmp_path, "data/images/ab/ab.png", entry) == b"png bytes"
    (tmp_path / "data/images/ab/ab.png").write_bytes(b"PNG bytes")
    with pytest.raises(CorruptBundle, match="changed while importing"):
        read_verified(tmp_path, "data/images/ab/ab.png", entry)


@pytest.mark.parametrize("path", ["../outside", "/etc/passwd", "data/../../x", "data\\x"])
def test_paths_outside_the_bundle_are_refused(tmp_path: Path, path: str) -> None:
    index = make_bundle(tmp_path / "b")
    raw = json.loads((tmp_path / "b" / INDEX).read_text())
    raw["files"][path] = {"sha256": "0" * 64, "size": 1}
    (tmp_path / "b" / INDEX).write_text(json.dumps(raw))
    with pytest.raises(CorruptBundle, match="leaves the bundle folder"):
        verify_bundle(tmp_path / "b", read_index(tmp_path / "b"))
    assert index.files  # the good files were there all along


def test_a_folder_without_an_index_is_named(tmp_path: Path) -> None:
    with pytest.raises(BundleMissing, match="does not exist"):
        read_index(tmp_path / "nowhere")
    write_file(tmp_path, "data/manifests/v1.jsonl", b"{}\n")  # an export that stopped before its index
    with pytest.raises(BundleMissing, match=r"has no bundle\.json.*did not finish"):
        read_index(tmp_path)
    (tmp_path / INDEX).write_text(json.dumps({"format": "something-else/9"}))
    with pytest.raises(CorruptBundle, match="not a loopline bundle index"):
        read_index(tmp_path)


def test_an_index_naming_content_without_its_file_is_refused(tmp_path: Path) -> None:
    index = make_bundle(tmp_path)
    check_complete(tmp_path, index)
    hand_edited = BundleIndex(**{**index.__dict__, "labeled": ("v9",), "models": ("m",)})
    with pytest.raises(CorruptBundle) as caught:
        check_complete(tmp_path, hand_edited)
    assert caught.value.files == ["data/labels/v9.jsonl", "models/m/model.json"]


def test_the_combined_hash_follows_names_and_contents_not_order() -> None:
    files = {"model/model.onnx": "a" * 64, "splits.json": "b" * 64}
    assert combined_sha256(files) == combined_sha256(dict(reversed(files.items())))
    assert combined_sha256(files) != combined_sha256({**files, "splits.json": "c" * 64})
    assert combined_sha256(files) != combined_sha256({"model/other.onnx": "a" * 64, "splits.json": "b" * 64})
