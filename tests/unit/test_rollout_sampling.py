"""The router's sample of served images: which requests are chosen (deterministic, at the rate), which
bodies are images, content-addressed storage in the data root with one row per request, never blocking
or raising on the request path, and what is queued written on close."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image

from loopline.data.sources import CombinedSource, LocalFolderSource
from loopline.data.store import LocalStore
from loopline.errors import EmptySource, SourceNotFound
from loopline.rollout.events import ServedSample
from loopline.rollout.sampling import ServedImageSampler, chosen, image_extension

pytestmark = pytest.mark.unit


def picture(kind: str, shade: int = 0) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 0, 0)).save(out, kind)
    return out.getvalue()


def test_requests_are_chosen_by_their_id_at_the_rate_the_same_way_every_time() -> None:
    ids = [f"req-{i}" for i in range(20_000)]
    share = sum(chosen(i, 0.1) for i in ids) / len(ids)
    assert 0.094 < share < 0.106  # 4 standard errors
    assert [chosen(i, 0.1) for i in ids[:500]] == [chosen(i, 0.1) for i in ids[:500]]
    assert not any(chosen(i, 0.0) for i in ids[:500]) and all(chosen(i, 1.0) for i in ids[:500])
    assert {i for i in ids if chosen(i, 0.05)} <= {i for i in ids if chosen(i, 0.1)}  # a higher rate adds


KINDS = [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tif")]


@pytest.mark.parametrize(("kind", "extension"), KINDS)
def test_image_bodies_are_recognised_by_their_first_bytes(kind: str, extension: str) -> None:
    assert image_extension(picture(kind)) == extension


def test_other_bodies_are_not_images() -> None:
    assert image_extension(b'{"inputs": []}') is None
    assert image_extension(b"--boundary\r\nContent-Disposition: form-data") is None
    assert image_extension(b"") is None


class Rows:
    def __init__(self, fail: bool = False) -> None:
        self.rows: list[ServedSample] = []
        self.fail = fail

    def __call__(self, rows: Sequence[ServedSample]) -> None:
        if self.fail:
            raise ConnectionError("the event store is down")
        self.rows += rows


def test_kept_images_are_content_addressed_once_with_a_row_per_request(tmp_path: Path) -> None:
    rows, store = Rows(), LocalStore(tmp_path)
    sampler = ServedImageSampler(1.0, store, rows)
    same, other = picture("PNG", 1), picture("JPEG", 2)
    for request_id, body in (("a", same), ("b", same), ("c", other), ("d", b"not an image")):
        sampler.offer(request_id, body)
    counters = sampler.close()
    assert (counters.kept, counters.dropped, counters.failed) == (3, 0, 0)
    digest = hashlib.sha256(same).hexdigest()
    stored = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert stored == sorted(
        [f"production/{digest}.png", f"production/{hashlib.sha256(other).hexdigest()}.jpg"]
    )
    assert [(r.request_id, r.content_hash) for r in rows.rows][:2] == [("a", digest), ("b", digest)]
    assert rows.rows[0].uri == str(tmp_path / "production" / f"{digest}.png")


def test_a_full_queue_drops_and_a_failing_store_counts_without_raising(tmp_path: Path) -> None:
    release = threading.Event()

    class SlowStore(LocalStore):
        def put_bytes(self, key: str, data: bytes) -> None:
            release.wait(10)
            super().put_bytes(key, data)

    sampler = ServedImageSampler(1.0, SlowStore(tmp_path), Rows(), max_pending=2)
    for i in range(6):  # one being written, two queued, three dropped
        sampler.offer(f"r{i}", picture("PNG", i))
    assert sampler.dropped >= 3
    release.set()
    assert sampler.close().kept <= 3
    failing = ServedImageSampler(1.0, LocalStore(tmp_path), Rows(fail=True))
    failing.offer("x", picture("PNG", 9))
    assert failing.close().failed == 1


def test_a_rate_outside_zero_to_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="LOOPLINE_ROUTER_SAMPLE_RATE"):
        ServedImageSampler(1.5, LocalStore(tmp_path), Rows())


def test_a_combined_source_skips_an_empty_or_missing_optional_source(tmp_path: Path) -> None:
    (tmp_path / "round" / "cat").mkdir(parents=True)
    (tmp_path / "round" / "cat" / "1.png").write_bytes(picture("PNG"))
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "ab.png").write_bytes(picture("PNG", 3))
    round_folder = LocalFolderSource(tmp_path / "round")
    combined = CombinedSource(round_folder, [LocalFolderSource(tmp_path / "served")])
    files = combined.list_files()
    assert [(Path(f.uri).name, f.label) for f in files] == [("1.png", "cat"), ("ab.png", None)]
    assert combined.read(files[1]) == picture("PNG", 3)
    (tmp_path / "empty").mkdir()
    for optional in ("missing", "empty"):
        alone = CombinedSource(round_folder, [LocalFolderSource(tmp_path / optional)])
        assert len(alone.list_files()) == 1
    with pytest.raises(SourceNotFound):
        CombinedSource(LocalFolderSource(tmp_path / "missing"), [round_folder]).list_files()
    only_served = CombinedSource(
        LocalFolderSource(tmp_path / "empty"), [LocalFolderSource(tmp_path / "served")]
    )
    assert [Path(f.uri).name for f in only_served.list_files()] == [
        "ab.png"
    ]  # nothing new landed, but served
    with pytest.raises(EmptySource, match="add images to"):
        CombinedSource(
            LocalFolderSource(tmp_path / "empty"), [LocalFolderSource(tmp_path / "missing")]
        ).list_files()
