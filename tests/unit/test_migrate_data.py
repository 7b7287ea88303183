"""Data through a bundle between two local data roots (no servers): images arrive under the same keys
with the same bytes, manifests keep their versions and point at the target's copies, a second import
writes nothing, other content under a key the bundle writes is a conflict refused before any write."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from loopline.data.labeled import LabeledRow, read_labeled_manifest, write_labeled_manifest
from loopline.data.manifest import ManifestRow, read_manifest, write_manifest
from loopline.data.store import LocalStore
from loopline.errors import StoredImageMissing
from loopline.migrate.bundle import BundleIndex, verify_bundle
from loopline.migrate.export_data import export_data
from loopline.migrate.export_models import ModelExport
from loopline.migrate.import_data import ImportConflict, import_data
from tests.helpers import image_bytes

pytestmark = pytest.mark.unit


def source_root(root: Path, plain_key: bool = False) -> tuple[LocalStore, str, str]:
    """Three images (content-addressed keys, or one under a plain key), a manifest, a labeled manifest."""
    store = LocalStore(root)
    rows = []
    for i in range(3):
        data = image_bytes(i)
        sha = hashlib.sha256(data).hexdigest()
        key = f"images/plain-{i}.png" if plain_key and i == 0 else f"images/{sha[:2]}/{sha}.png"
        store.put_bytes(key, data)
        rows.append(ManifestRow(sha, f"/incoming/{i}.png", store.uri(key), 32, 32, "PNG", "cat", "train"))
    dataset, _, _ = write_manifest(store, rows)
    labeled, _ = write_labeled_manifest(
        store, [LabeledRow(r.content_hash, r.stored_uri, "cat", "train", dataset, 1, 2, 3, ()) for r in rows]
    )
    return store, dataset, labeled


def bundle_of(store: LocalStore, folder: Path) -> BundleIndex:
    data = export_data(store, folder)
    return BundleIndex(store.root, "", "now", data.datasets, data.labeled, data.images, (), data.files)


def test_data_moves_to_another_root_with_versions_and_bytes_unchanged(tmp_path: Path) -> None:
    source, dataset, labeled = source_root(tmp_path / "laptop")
    index = bundle_of(source, tmp_path / "bundle")
    verify_bundle(tmp_path / "bundle", index)
    assert (index.datasets, index.labeled) == ((dataset,), (labeled,))
    target = LocalStore(tmp_path / "team")
    first = import_data(tmp_path / "bundle", index, target)
    assert (first.images_written, first.images_skipped, first.manifests_written) == (3, 0, 2)
    for key in source.list_keys("images"):
        assert target.get_bytes(key) == source.get_bytes(key)
    rows = read_manifest(target, dataset)
    assert [r.content_hash for r in rows] == [r.content_hash for r in read_manifest(source, dataset)]
    assert all(r.stored_uri.startswith(target.root + "/images/") for r in rows)
    assert [r.source_uri for r in rows] == [r.source_uri for r in read_manifest(source, dataset)]
    assert {r.stored_uri for r in read_labeled_manifest(target, labeled)} == {r.stored_uri for r in rows}

    again = import_data(tmp_path / "bundle", index, target)
    assert (again.images_written, again.images_skipped, again.manifests_written) == (0, 3, 0)


def test_other_content_under_a_plain_key_is_a_conflict_and_nothing_is_written(tmp_path: Path) -> None:
    source, _, _ = source_root(tmp_path / "laptop", plain_key=True)
    index = bundle_of(source, tmp_path / "bundle")
    target = LocalStore(tmp_path / "team")
    target.put_bytes("images/plain-0.png", b"the team's own picture")
    with pytest.raises(ImportConflict, match=r"plain-0\.png.*Nothing was imported"):
        import_data(tmp_path / "bundle", index, target)
    assert target.list_keys("") == ["images/plain-0.png"]
    target.put_bytes("images/plain-0.png", source.get_bytes("images/plain-0.png"))  # the same bytes: fine
    assert import_data(tmp_path / "bundle", index, target).images_skipped == 1


def test_images_missing_or_outside_the_root_are_named_at_export(tmp_path: Path) -> None:
    source, _, _ = source_root(tmp_path / "laptop")
    gone = source.list_keys("images")[:2]
    for key in gone:
        source.delete(key)
    with pytest.raises(StoredImageMissing, match=r"2 image\(s\).*are gone") as caught:
        export_data(source, tmp_path / "bundle")
    assert all(source.uri(key) in str(caught.value) for key in gone)
    elsewhere = LocalStore(tmp_path / "other")  # a root the manifests' images are not under
    elsewhere.put_bytes("manifests/x.jsonl", source.get_bytes(source.list_keys("manifests")[0]))
    with pytest.raises(StoredImageMissing, match="outside the data root"):
        export_data(elsewhere, tmp_path / "bundle2")


def test_an_unwritable_root_or_a_silent_mlflow_is_named_before_anything_is_written(tmp_path: Path) -> None:
    import socket

    from loopline.errors import DataRootNotWritable, RegistryError
    from loopline.migrate.bundle import write_file, write_index
    from loopline.migrate.importer import import_bundle
    from loopline.settings import Settings

    source, _, _ = source_root(tmp_path / "laptop")
    index = bundle_of(source, tmp_path / "bundle")
    model = write_file(
        tmp_path / "bundle",
        "models/m/model.json",
        json.dumps(ModelExport("m", "", {}, {}).to_json()).encode(),
    )
    files = {**index.files, "models/m/model.json": model}
    write_index(tmp_path / "bundle", BundleIndex(**{**index.__dict__, "models": ("m",), "files": files}))
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DataRootNotWritable, match="To fix this"):
        import_bundle(Settings(data_root=str(tmp_path / "a-file" / "data")), tmp_path / "bundle")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    target = tmp_path / "team"
    with pytest.raises(RegistryError, match=r"does not answer.*To fix this"):
        import_bundle(Settings(data_root=str(target), mlflow_tracking_uri=closed), tmp_path / "bundle", 1)
    assert LocalStore(target).list_keys("") == []
