"""Collect from and into a real S3 API server (moto_server), with authentication."""

from pathlib import Path

import pytest

from loopline.data.collect import collect
from loopline.data.manifest import read_manifest
from loopline.data.sources import open_source
from loopline.data.store import open_store
from loopline.errors import DataRootNotWritable, SourceAccessDenied, SourceNotFound
from loopline.settings import Settings, get_settings
from tests.helpers import image_bytes
from tests.integration.s3server import S3Server, s3_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with s3_server(tmp_path_factory.mktemp("moto")) as s3:
        client = s3.client()
        client.create_bucket(Bucket="raw")
        client.create_bucket(Bucket="lake")
        for i in range(30):
            client.put_object(
                Bucket="raw", Key=f"batch/{'cat' if i % 3 else 'dog'}/{i}.png", Body=image_bytes(200 + i)
            )
        client.put_object(Bucket="raw", Key="batch/cat/dup.png", Body=image_bytes(201))
        client.put_object(Bucket="raw", Key="batch/cat/broken.png", Body=image_bytes(300, (64, 64))[:150])
        yield s3


def settings_for(monkeypatch: pytest.MonkeyPatch, s3: S3Server, secret: str | None = None) -> Settings:
    monkeypatch.setenv("LOOPLINE_S3_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("LOOPLINE_S3_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("LOOPLINE_S3_SECRET_ACCESS_KEY", secret or s3.secret_key)
    return get_settings()


def test_collect_from_s3_into_s3(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(monkeypatch, server)
    store = open_store("s3://lake/datasets", settings)
    result = collect(open_source("s3://raw/batch", settings), store)
    assert (result.seen, result.kept, result.exact_duplicates) == (32, 30, 1)
    assert result.quarantined == {"truncated": 1}
    assert result.labels == {"cat": 20, "dog": 10}
    assert result.manifest_uri == f"s3://lake/datasets/manifests/{result.version}.jsonl"
    rows = read_manifest(store, result.version)
    assert all(r.stored_uri.startswith("s3://lake/datasets/images/") for r in rows)
    assert {r.split for r in rows} == {"train", "val", "test"}
    again = collect(open_source("s3://raw/batch", settings), store)
    assert again.version == result.version and again.images_written == 0 and not again.manifest_written


def test_collect_from_s3_into_a_local_root(
    server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = settings_for(monkeypatch, server)
    result = collect(open_source("s3://raw/batch/dog", settings), open_store(str(tmp_path), settings))
    assert result.kept == 10
    assert len(list((tmp_path / "images").rglob("*.png"))) == 10


def test_wrong_credentials_are_named(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(monkeypatch, server, secret="wrong-secret")
    with pytest.raises(SourceAccessDenied, match="LOOPLINE_S3_SECRET_ACCESS_KEY"):
        open_source("s3://raw/batch", settings).list_files()
    with pytest.raises(DataRootNotWritable, match="LOOPLINE_S3_ACCESS_KEY_ID"):
        open_store("s3://lake/x", settings).check_writable()


def test_missing_buckets_are_named(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(monkeypatch, server)
    with pytest.raises(SourceNotFound, match="s3://no-bucket/batch"):
        collect(open_source("s3://no-bucket/batch", settings), open_store("s3://lake/y", settings))
    with pytest.raises(DataRootNotWritable, match="create the bucket 'no-lake'"):
        collect(open_source("s3://raw/batch", settings), open_store("s3://no-lake/y", settings))


def test_a_missing_stored_image_is_named(
    server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from loopline.data.pixels import ImageReader
    from loopline.errors import StoredImageMissing

    reader = ImageReader(settings_for(monkeypatch, server), cache_dir=tmp_path / "cache")
    with pytest.raises(
        StoredImageMissing, match=r"s3://lake/images/gone\.png.*NoSuchKey.*LOOPLINE_DATA_ROOT"
    ):
        reader.read_bytes("s3://lake/images/gone.png")
    with pytest.raises(StoredImageMissing, match="create the bucket 'nowhere'"):
        reader.read_bytes("s3://nowhere/images/x.png")
    with pytest.raises(StoredImageMissing, match=r"gone\.png.*LOOPLINE_DATA_ROOT"):
        reader.read_bytes(str(tmp_path / "gone.png"))
