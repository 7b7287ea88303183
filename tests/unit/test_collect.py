import json
import shutil
from pathlib import Path

import pytest

from loopline.data.collect import CollectOptions, collect, quarantine_record_key
from loopline.data.manifest import read_manifest
from loopline.data.sources import LocalFolderSource
from loopline.data.store import LocalStore
from loopline.errors import DataRootNotWritable, EmptySource, SourceNotFound
from tests.helpers import brighter_jpeg, image_bytes, phone_photo, write

pytestmark = pytest.mark.unit


def files_under(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for i in range(6):
        write(src / f"img-{i}.png", image_bytes(i))
    write(src / "x-copy-of-0.png", image_bytes(0))
    write(src / "x-sub" / "another-copy-of-0.png", image_bytes(0))
    write(src / "rescan-1.jpg", brighter_jpeg(image_bytes(1)))
    write(src / "empty.png", b"")
    write(src / "notes.png", b"plain text")
    write(src / "cut.png", image_bytes(9, (64, 64))[:200])
    write(src / ".hidden.png", image_bytes(10))
    return src


def test_collect_cleans_dedupes_and_versions(messy_folder: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    progress: list[tuple[int, int]] = []
    result = collect(LocalFolderSource(messy_folder), store, on_progress=lambda d, t: progress.append((d, t)))

    assert result.seen == 12  # the hidden file is skipped
    assert result.kept == 6
    assert result.exact_duplicates == 2
    assert result.near_duplicates == 1
    assert result.quarantined == {"not_an_image": 1, "truncated": 1, "zero_byte": 1}
    assert progress[-1] == (12, 12)
    rows = read_manifest(store, result.version)
    assert {Path(r.source_uri).name for r in rows} == {f"img-{i}.png" for i in range(6)}
    for r in rows:
        assert Path(r.stored_uri).read_bytes() == (messy_folder / Path(r.source_uri).name).read_bytes()
        assert r.content_hash in r.stored_uri
    exact = next(g for g in result.duplicate_groups if g.kind == "exact")
    assert exact.kept_uri.endswith("/img-0.png") and len(exact.removed_uris) == 2
    near = next(g for g in result.duplicate_groups if g.kind == "near")
    assert {Path(near.kept_uri).name, *(Path(u).name for u in near.removed_uris)} == {
        "img-1.png",
        "rescan-1.jpg",
    }
    # quarantined files are copied with their reason; the source is untouched
    records = [json.loads(p.read_text()) for p in (tmp_path / "data" / "quarantine").glob("*.reason.json")]
    assert sorted(r["reason"] for r in records) == ["not_an_image", "truncated", "zero_byte"]
    assert (messy_folder / "cut.png").exists()


def test_collecting_again_gives_the_same_version_and_writes_nothing(
    messy_folder: Path, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "data")
    first = collect(LocalFolderSource(messy_folder), store)
    before = files_under(tmp_path / "data")
    second = collect(LocalFolderSource(messy_folder), store)
    assert second.version == first.version
    assert not second.manifest_written and second.images_written == 0
    assert files_under(tmp_path / "data") == before


def test_folder_names_become_labels_with_stratified_splits(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(40):
        write(src / ("cat" if i % 2 else "dog") / f"{i}.png", image_bytes(100 + i))
    store = LocalStore(tmp_path / "data")
    result = collect(LocalFolderSource(src), store, CollectOptions(near_duplicate_threshold=-1))
    assert result.labels == {"cat": 20, "dog": 20}
    rows = read_manifest(store, result.version)
    for label in ("cat", "dog"):
        splits = sorted(r.split or "" for r in rows if r.source_label == label)
        assert splits.count("test") == 3 and splits.count("val") == 3 and splits.count("train") == 14


def test_near_duplicate_threshold_is_a_parameter(messy_folder: Path, tmp_path: Path) -> None:
    off = collect(
        LocalFolderSource(messy_folder),
        LocalStore(tmp_path / "a"),
        CollectOptions(near_duplicate_threshold=-1),
    )
    assert off.near_duplicates == 0 and off.kept == 7


def test_missing_and_empty_sources_are_named(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    with pytest.raises(SourceNotFound, match="no-such-folder"):
        collect(LocalFolderSource(tmp_path / "no-such-folder"), store)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptySource, match="holds no files"):
        collect(LocalFolderSource(tmp_path / "empty"), store)
    assert not (tmp_path / "data" / "manifests").exists()


def test_unwritable_data_root_fails_before_any_work(messy_folder: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DataRootNotWritable, match="LOOPLINE_DATA_ROOT"):
        collect(LocalFolderSource(messy_folder), LocalStore(blocker / "data"))


def test_unreadable_files_are_quarantined(messy_folder: Path, tmp_path: Path) -> None:
    class FlakySource(LocalFolderSource):
        def read(self, file):  # type: ignore[no-untyped-def]
            if file.uri.endswith("img-3.png"):
                raise PermissionError(13, "Permission denied", file.uri)
            return super().read(file)

    result = collect(FlakySource(messy_folder), LocalStore(tmp_path / "data"))
    bad = [q for q in result.quarantined_files if q.reason == "unreadable"]
    assert [Path(q.source_uri).name for q in bad] == ["img-3.png"]
    assert "Permission denied" in bad[0].detail


def test_a_phone_photo_is_measured_upright(tmp_path: Path) -> None:
    write(tmp_path / "src" / "phone.jpg", phone_photo(40, 20, orientation=6))
    store = LocalStore(tmp_path / "data")
    result = collect(LocalFolderSource(tmp_path / "src"), store)
    (row,) = read_manifest(store, result.version)
    assert (row.width, row.height) == (20, 40)


def test_the_version_depends_on_content_not_on_paths(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(12):
        write(src / ("cat" if i % 2 else "dog") / f"{i}.png", image_bytes(400 + i))
    write(src / "unlabeled.png", image_bytes(500))
    options = CollectOptions(near_duplicate_threshold=-1)
    first = collect(LocalFolderSource(src), LocalStore(tmp_path / "data"), options)

    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(src, moved)
    copy = tmp_path / "a-copy"
    shutil.copytree(moved, copy)
    again = collect(LocalFolderSource(moved), LocalStore(tmp_path / "data"), options)
    other_root = collect(LocalFolderSource(copy), LocalStore(tmp_path / "other-root"), options)
    assert again.version == other_root.version == first.version
    # the manifest keeps provenance and says where the images are now
    rows = read_manifest(LocalStore(tmp_path / "data"), again.version)
    assert again.manifest_written and all(r.source_uri.startswith(str(moved)) for r in rows)
    assert all(r.stored_uri.startswith(str(tmp_path / "data")) for r in rows)
    assert all(
        r.stored_uri.startswith(str(tmp_path / "other-root"))
        for r in read_manifest(LocalStore(tmp_path / "other-root"), other_root.version)
    )

    (copy / "dog" / "0.png").rename(copy / "cat" / "0.png")  # one label changed
    relabeled = collect(LocalFolderSource(copy), LocalStore(tmp_path / "other-root"), options)
    assert relabeled.version != first.version
    other_split = collect(
        LocalFolderSource(moved),
        LocalStore(tmp_path / "data"),
        CollectOptions(near_duplicate_threshold=-1, seed=1),
    )
    assert other_split.version != first.version


def test_a_quarantined_json_file_keeps_its_reason_record(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "img.png", image_bytes(1))
    write(src / "notes.json", b'{"taken_by": "someone"}')
    store = LocalStore(tmp_path / "data")
    result = collect(LocalFolderSource(src), store)
    (bad,) = result.quarantined_files
    assert bad.reason == "not_an_image" and bad.stored_uri is not None
    assert Path(bad.stored_uri).read_bytes() == b'{"taken_by": "someone"}'  # the file, as it was
    key_hash = Path(bad.stored_uri).name.removesuffix(".json")
    record = json.loads(store.get_bytes(quarantine_record_key(key_hash)))
    assert record == {"source_uri": str(src / "notes.json"), "reason": "not_an_image", "detail": bad.detail}


MAIN_MODULE = """
import os, sys
with open(os.environ["MARKER"], "a") as marker:
    marker.write(f"imported in {os.getpid()}\\n")
if __name__ == "__main__":
    from loopline.data.collect import CollectOptions, collect
    from loopline.data.sources import LocalFolderSource
    from loopline.data.store import LocalStore
    options = CollectOptions(processes=2, min_files_for_processes=1)
    result = collect(LocalFolderSource(sys.argv[1]), LocalStore(sys.argv[2]), options)
    print(result.kept)
"""


def test_worker_processes_do_not_rerun_the_callers_main_module(tmp_path: Path) -> None:
    """Under Prefect the main module is prefect.engine (or flows.collect): each worker importing it again
    costs about a second of CPU. The workers must import only what their work needs."""
    import os
    import subprocess
    import sys

    for i in range(6):
        write(tmp_path / "src" / f"{i}.png", image_bytes(900 + i))
    (tmp_path / "heavy_main.py").write_text(MAIN_MODULE)
    marker = tmp_path / "imports.txt"
    env = {**os.environ, "MARKER": str(marker), "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "heavy_main", str(tmp_path / "src"), str(tmp_path / "data")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6"
    assert len(marker.read_text().splitlines()) == 1, marker.read_text()  # the parent only
