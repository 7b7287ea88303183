"""The router's sample of served images, for monitoring and for labeling: production data back into the
loop. Off unless ``LOOPLINE_ROUTER_SAMPLE_RATE`` is above 0.

Which requests: a ``POST /v1/predict`` answered 200 with a raw image body (PNG, JPEG, GIF, BMP, TIFF or
WebP, recognised by its first bytes; multipart uploads and v2 tensors are not sampled), chosen when the
sha256 of its request id, read as a number in [0, 1), is below the rate — the same request is chosen on
every replica, and the share converges to the rate.

Where: the bytes content-addressed in the data root, ``production/<sha256>.<ext>`` (one flat folder, so
collecting it gives images without a source label: they go to labeling; an image served twice is stored
once), and a ``ServedSample`` row (request id, hash, where) in the event store, whose routed request holds
the prediction and confidence. Both are written by a thread of their own, never on the request path: a
bounded queue, and what does not fit is dropped and counted (``dropped``), like a failed write
(``failed``, logged once per outage).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loopline.data.store import DataStore
from loopline.rollout.events import ServedSample

log = logging.getLogger(__name__)

PREFIX = "production"
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tif"),
    (b"MM\x00*", "tif"),
)


def chosen(request_id: str, rate: float) -> bool:
    """Whether the request is in the sample: its id's sha256 as a number in [0, 1) below ``rate``."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(request_id.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def image_extension(body: bytes) -> str | None:
    """The file extension of an image body by its first bytes; None when it is not one we keep."""
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "webp"
    return next((ext for magic, ext in _SIGNATURES if body.startswith(magic)), None)


def sample_key(content_hash: str, extension: str) -> str:
    return f"{PREFIX}/{content_hash}.{extension}"


@dataclass(frozen=True)
class SamplerCounters:
    kept: int
    dropped: int
    failed: int


class ServedImageSampler:
    """Keeps a sample of served images (see the module docstring).

    Args:
        rate: the share of requests kept, 0..1.
        images: the data root's store.
        record: writes sample rows (``EventStore.insert_samples``); called from the sampler's thread.
        max_pending: images waiting to be written before new ones are dropped.
    """

    def __init__(
        self,
        rate: float,
        images: DataStore,
        record: Callable[[Sequence[ServedSample]], None],
        max_pending: int = 64,
    ) -> None:
        if not 0 <= rate <= 1:
            raise ValueError(f"The sample rate {rate} is outside 0..1 (LOOPLINE_ROUTER_SAMPLE_RATE).")
        self.rate, self.images, self.record = rate, images, record
        self.kept = self.dropped = self.failed = 0
        self._failing = False
        self._queue: queue.Queue[tuple[str, bytes, str] | None] = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._run, name="served-image-sampler", daemon=True)
        self._thread.start()

    def offer(self, request_id: str, body: bytes) -> None:
        """Called on the request path after the answer was sent: never blocks, never raises."""
        if not chosen(request_id, self.rate):
            return
        extension = image_extension(body)
        if extension is None:
            return
        try:
            self._queue.put_nowait((request_id, body, extension))
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            request_id, body, extension = item
            content_hash = hashlib.sha256(body).hexdigest()
            key = sample_key(content_hash, extension)
            try:
                if not self.images.exists(key):
                    self.images.put_bytes(key, body)
                self.record([ServedSample(request_id, content_hash, self.images.uri(key))])
            except Exception as exc:  # the store's trouble must not stop the router
                self.failed += 1
                if not self._failing:
                    log.warning("could not keep served image %s (%s); counting until it works", key, exc)
                self._failing = True
            else:
                self.kept += 1
                if self._failing:
                    log.info("served images are kept again")
                self._failing = False

    def close(self, timeout: float = 10.0) -> SamplerCounters:
        """Write what is queued (within ``timeout``), stop the thread; the counters."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        return SamplerCounters(self.kept, self.dropped + self._queue.qsize(), self.failed)
