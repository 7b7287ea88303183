"""Training reads pixels the way every stage does: EXIF orientation applied, S3 URIs through the image
reader with a local cache (a moto S3 server in this process)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from loopline.data.demo import labeled_digit_rows
from loopline.data.labeled import LabeledRow
from loopline.data.pixels import ImageReader
from loopline.data.s3 import make_s3_client
from loopline.data.store import LocalStore, S3Store
from loopline.settings import Settings, get_settings
from loopline.training.data import (
    ClassMapping,
    LabeledImages,
    check_labeled_rows,
    load_image,
    loader_factory,
)
from tests.helpers import phone_photo

pytestmark = pytest.mark.unit


def test_training_sees_a_phone_photo_upright(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("images/phone.jpg", phone_photo(40, 20, orientation=6))
    uri = store.uri("images/phone.jpg")
    row = LabeledRow("h", uri, "cat", "train", "dv", 0, 0, 0, ())
    mapping = ClassMapping(("cat",))
    dataset = LabeledImages([row], mapping, transform=lambda image: image)
    image, target = dataset[0]
    assert image.size == (20, 40) and target == 0
    # orientation 6 turns the stored picture clockwise: its red left half ends up on top
    top, bottom = image.getpixel((10, 5)), image.getpixel((10, 35))
    assert top[0] > 200 and bottom[0] < 50, (top, bottom)
    assert load_image(uri).size == (20, 40)


@pytest.fixture
def s3_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        monkeypatch.setenv("LOOPLINE_S3_ENDPOINT_URL", f"http://{host}:{port}")
        monkeypatch.setenv("LOOPLINE_S3_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("LOOPLINE_S3_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path / "home"))
        settings = get_settings()
        make_s3_client(settings).create_bucket(Bucket="lake")
        yield settings
    finally:
        server.stop()


def test_training_reads_s3_images_through_a_local_cache(s3_settings: Settings, tmp_path: Path) -> None:
    from loopline.training.engine import TrainConfig, fit
    from loopline.training.models import build_model

    store = S3Store("s3://lake/data", make_s3_client(s3_settings))
    rows = labeled_digit_rows(store, 120, val=0.15, test=0.15)
    assert rows[0].stored_uri.startswith("s3://lake/data/images/")
    mapping = check_labeled_rows(rows)

    make = loader_factory(rows, mapping)  # the reader comes from the settings (endpoint, keys, cache)
    train, val = make(32, 16, "train"), make(32, 64, "val")
    images, targets = next(iter(train))
    assert images.shape == (16, 3, 32, 32) and targets.shape == (16,)
    result = fit(
        build_model("small_cnn", len(mapping.labels)), train, val, TrainConfig(epochs=1), tmp_path / "ck"
    )
    assert len(result.history) == 1

    cache = s3_settings.resolved_home / "cache" / "images" / "lake" / "data" / "images"
    cached = sorted(p.name for p in cache.iterdir())
    assert len(cached) == sum(1 for r in rows if r.split in {"train", "val"})
    # a second reader finds the cached bytes without asking S3 (its endpoint does not answer)
    offline = ImageReader(s3_settings.model_copy(update={"s3_endpoint_url": "http://127.0.0.1:9"}))
    some = [r for r in rows if r.split == "train"][:3]
    assert [offline.open(r.stored_uri).size for r in some] == [(32, 32)] * 3
