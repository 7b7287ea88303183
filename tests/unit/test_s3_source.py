"""S3 listing and storage against moto's in-process mock of the S3 API (no server)."""

import boto3
import pytest
from moto import mock_aws

from loopline.data.sources import S3PrefixSource
from loopline.data.store import S3Store
from loopline.errors import EmptySource, SourceNotFound

pytestmark = pytest.mark.unit


@pytest.fixture
def s3(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="raw")
        yield client


def test_listing_follows_every_page(s3) -> None:  # type: ignore[no-untyped-def]
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]  # straight into moto: 2,345 PUTs through boto3 take 30 s
    for i in range(2_345):
        backend.put_object("raw", f"batch/{'cat' if i % 2 else 'dog'}/{i:05d}.png", b"x")
    s3.put_object(Bucket="raw", Key="other/0.png", Body=b"x")
    files = S3PrefixSource("s3://raw/batch", s3).list_files()
    assert len(files) == 2_345  # more than the 1,000 keys of one page
    assert files[0].uri == "s3://raw/batch/cat/00001.png"
    assert {f.label for f in files} == {"cat", "dog"}


def test_missing_bucket_and_empty_prefix(s3) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SourceNotFound, match="s3://nope/x"):
        S3PrefixSource("s3://nope/x", s3).list_files()
    with pytest.raises(EmptySource, match="s3://raw/empty"):
        S3PrefixSource("s3://raw/empty", s3).list_files()


def test_store_round_trip(s3) -> None:  # type: ignore[no-untyped-def]
    store = S3Store("s3://raw/data", s3)
    store.check_writable()
    assert not store.exists("images/a.png")
    store.put_bytes("images/a.png", b"abc")
    assert store.exists("images/a.png") and store.get_bytes("images/a.png") == b"abc"
    assert store.list_keys("images") == ["images/a.png"]
    assert store.uri("images/a.png") == "s3://raw/data/images/a.png"
