"""Writes the router's events off the request path: ``record_request``/``record_feedback`` append to a
bounded buffer and return at once; a background thread writes the buffer to the event store in batches.

What can be lost, and how it is counted:
- the buffer is full (the store cannot keep up, or is down): the new row is dropped (``dropped_full``,
  or ``dropped_error`` while the store is failing);
- the store rejects a row itself (bad data, not an outage): the batch is retried row by row and the
  rows it refuses are dropped (``dropped_error``); the others are written;
- the process dies: at most the rows still buffered (``buffered``), never a written row twice (inserts
  skip ids already stored, so a batch retried after an ambiguous failure is harmless);
- ``close`` cannot write what is left before its timeout: those rows count as ``dropped_error``, and so
  do rows recorded after ``close``.
An outage is logged once when it starts and once when it ends, not once per row or retry.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from loopline.rollout.events import Feedback, RoutedRequest
from loopline.rollout.store import EventStoreUnavailable

log = logging.getLogger(__name__)

Row = TypeVar("Row", RoutedRequest, Feedback)


class EventRows(Protocol):
    """What the writer needs of a store (``EventStore`` is one)."""

    def insert_requests(self, rows: Sequence[RoutedRequest]) -> None: ...

    def insert_feedback(self, rows: Sequence[Feedback]) -> None: ...

    def feedback_is_known(self, request_id: str) -> bool: ...


@dataclass(frozen=True)
class WriterCounters:
    """A snapshot of the writer's counters (the router publishes them as Prometheus metrics)."""

    written: int
    dropped_full: int
    dropped_error: int
    flush_failures: int
    buffered: int


def retry_delay(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after ``failures`` failed flushes in a row: doubling from ``base`` up to ``cap``."""
    return min(cap, base * 2 ** max(0, failures - 1))


class BufferedEventWriter:
    """An ``EventSink`` that never blocks or raises on the request path.

    Args:
        store: where rows go (an ``EventStore``).
        max_buffer: rows held (requests and feedback together) before new rows are dropped.
        flush_interval: seconds between flushes when fewer than ``batch_size`` rows wait.
        batch_size: rows per insert statement (and per transaction).
        max_retry_delay: the longest wait between retries while the store is down.
    """

    def __init__(
        self,
        store: EventRows,
        max_buffer: int = 10_000,
        flush_interval: float = 0.5,
        batch_size: int = 500,
        max_retry_delay: float = 5.0,
    ) -> None:
        if max_buffer < 1 or batch_size < 1 or flush_interval <= 0:
            raise ValueError(
                f"max_buffer ({max_buffer}) and batch_size ({batch_size}) must be at least 1 and "
                f"flush_interval ({flush_interval}) above 0"
            )
        self.store = store
        self.max_buffer = max_buffer
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.max_retry_delay = max_retry_delay
        self.written = 0
        self.dropped_full = 0
        self.dropped_error = 0
        self.flush_failures = 0
        self._requests: deque[RoutedRequest] = deque()
        self._feedback: deque[Feedback] = deque()
        self._pending_ids: set[str] = set()  # request ids buffered, not yet written
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._failing_since: float | None = None  # monotonic time of the first failed flush of an outage
        self._outage_failures = 0
        self._thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
        self._thread.start()

    @property
    def buffered(self) -> int:
        return len(self._requests) + len(self._feedback)

    def counters(self) -> WriterCounters:
        with self._lock:
            return WriterCounters(
                self.written, self.dropped_full, self.dropped_error, self.flush_failures, self.buffered
            )

    # --- the request path: append and return ---------------------------------------------------------

    def record_request(self, row: RoutedRequest) -> None:
        with self._lock:
            if self._accept():
                self._requests.append(row)
                self._pending_ids.add(row.request_id)
                self._wake_if_batch_ready()

    def record_feedback(self, row: Feedback) -> None:
        with self._lock:
            if self._accept():
                self._feedback.append(row)
                self._wake_if_batch_ready()

    def _accept(self) -> bool:
        """Whether there is room for one more row; counts the drop when there is not (lock held)."""
        if self._closing.is_set():
            self.dropped_error += 1
            return False
        if len(self._requests) + len(self._feedback) < self.max_buffer:
            return True
        if self._failing_since is None:
            self.dropped_full += 1
        else:
            self.dropped_error += 1
        return False

    def _wake_if_batch_ready(self) -> None:
        if len(self._requests) + len(self._feedback) >= self.batch_size and self._failing_since is None:
            self._wake.set()

    def feedback_is_known(self, request_id: str) -> bool:
        """Whether feedback may name this request id: routed and buffered here, or stored.
        Raises ``EventStoreUnavailable`` when it has to ask the store and the store is down."""
        with self._lock:
            if request_id in self._pending_ids:
                return True
        return self.store.feedback_is_known(request_id)

    # --- the background thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closing.is_set():
            if self._failing_since is None:
                delay = self.flush_interval
            else:
                delay = retry_delay(self._outage_failures, self.flush_interval, self.max_retry_delay)
            self._wake.wait(delay)
            self._wake.clear()
            if not self._closing.is_set():
                self._flush_all()

    def _flush_all(self) -> bool:
        """Write everything buffered, batch by batch; False when the store failed (rows stay buffered)."""
        wrote = False
        try:
            while self._flush_batch(self._requests, self.store.insert_requests, requests=True):
                wrote = True
            while self._flush_batch(self._feedback, self.store.insert_feedback, requests=False):
                wrote = True
        except EventStoreUnavailable as error:
            self._note_failure(error)
            return False
        except Exception as error:  # never let the thread die: anything unexpected is an outage too
            self._note_failure(error)
            return False
        if wrote:  # an empty buffer proves nothing about an outage
            self._note_success()
        return True

    def _flush_batch(
        self, buffer: deque[Row], insert: Callable[[Sequence[Row]], None], *, requests: bool
    ) -> bool:
        """Write the oldest batch; True when one was written. Only this thread removes rows, so the
        batch is still at the head of the buffer after the insert."""
        with self._lock:
            batch = list(itertools.islice(buffer, self.batch_size))
        if not batch:
            return False
        try:
            insert(batch)
            rejected = 0
        except EventStoreUnavailable:
            raise
        except Exception as error:  # the store refused the data itself: keep the rows it accepts
            rejected = self._insert_one_by_one(batch, insert, error)
        with self._lock:
            for _ in batch:
                buffer.popleft()
            if requests:
                self._pending_ids.difference_update(row.request_id for row in batch)
            self.written += len(batch) - rejected
            self.dropped_error += rejected
        return True

    def _insert_one_by_one(
        self, batch: list[Row], insert: Callable[[Sequence[Row]], None], error: Exception
    ) -> int:
        rejected = 0
        for row in batch:
            try:
                insert([row])
            except EventStoreUnavailable:
                raise
            except Exception:
                rejected += 1
        log.error("The event store refused %d of %d rows (dropped): %s", rejected, len(batch), error)
        return rejected

    def _note_failure(self, error: Exception) -> None:
        with self._lock:
            self.flush_failures += 1
            self._outage_failures += 1
            first = self._failing_since is None
            if first:
                self._failing_since = time.monotonic()
            buffered = self.buffered
        if first:
            log.warning(
                "Cannot write events to the store (%s); %d rows buffered (at most %d kept), retrying up to "
                "every %.1f s. Requests are still served.",
                error,
                buffered,
                self.max_buffer,
                self.max_retry_delay,
            )

    def _note_success(self) -> None:
        if self._failing_since is None:
            return
        with self._lock:
            lasted, failures = time.monotonic() - self._failing_since, self._outage_failures
            self._failing_since, self._outage_failures = None, 0
            dropped = self.dropped_error
        log.warning(
            "Event store writable again after %.1f s (%d failed flushes); events dropped so far: %d",
            lasted,
            failures,
            dropped,
        )

    # --- shutdown ------------------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> WriterCounters:
        """Stop taking rows, write what is buffered (retrying until ``timeout``), and return the final
        counters; rows still buffered at the timeout count as ``dropped_error``."""
        deadline = time.monotonic() + timeout
        self._closing.set()
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        while self.buffered and time.monotonic() < deadline and not self._thread.is_alive():
            if not self._flush_all():
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        with self._lock:
            if self.buffered and not self._thread.is_alive():
                log.error("Closing the event writer with %d rows not written (dropped)", self.buffered)
                self.dropped_error += self.buffered
                self._requests.clear()
                self._feedback.clear()
                self._pending_ids.clear()
        return self.counters()
