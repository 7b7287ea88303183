"""The buffered event writer against an in-memory store: batching, drops, outages, bad rows, shutdown."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from loopline.rollout.events import Feedback, RoutedRequest
from loopline.rollout.store import EventStoreUnavailable
from loopline.rollout.writer import BufferedEventWriter, retry_delay

pytestmark = pytest.mark.unit


def request(i: int) -> RoutedRequest:
    return RoutedRequest(
        request_id=f"r{i}",
        experiment="exp",
        variant="champion",
        model_version="1",
        user_hash=f"u{i}",
        latency_ms=1.0,
        status=200,
    )


class MemoryStore:
    """Keeps rows in lists; can be taken down, slowed, or made to refuse one request id."""

    def __init__(self) -> None:
        self.requests: list[RoutedRequest] = []
        self.feedback: list[Feedback] = []
        self.batches: list[int] = []
        self.down = False
        self.gate = threading.Event()
        self.gate.set()
        self.refuse: str | None = None

    def insert_requests(self, rows: Sequence[RoutedRequest]) -> None:
        self.gate.wait()
        if self.down:
            raise EventStoreUnavailable("down")
        if any(row.request_id == self.refuse for row in rows):
            raise ValueError(f"refused {self.refuse}")
        self.batches.append(len(rows))
        self.requests.extend(rows)

    def insert_feedback(self, rows: Sequence[Feedback]) -> None:
        if self.down:
            raise EventStoreUnavailable("down")
        self.feedback.extend(rows)

    def feedback_is_known(self, request_id: str) -> bool:
        return any(row.request_id == request_id for row in self.requests)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def test_rows_are_written_in_batches_and_close_writes_the_rest() -> None:
    store = MemoryStore()
    writer = BufferedEventWriter(store, flush_interval=10, batch_size=100)
    for i in range(250):
        writer.record_request(request(i))
    writer.record_feedback(Feedback(request_id="r1", correct=True))
    wait_for(lambda: len(store.requests) >= 200)  # full batches go at once, not after flush_interval
    counters = writer.close()
    assert [row.request_id for row in store.requests] == [f"r{i}" for i in range(250)]
    assert store.batches[:2] == [100, 100] and sum(store.batches) == 250
    assert store.feedback == [Feedback(request_id="r1", correct=True, at=store.feedback[0].at)]
    assert (counters.written, counters.buffered, counters.dropped_full, counters.dropped_error) == (
        251,
        0,
        0,
        0,
    )


def test_a_full_buffer_drops_new_rows_and_counts_them() -> None:
    store = MemoryStore()
    store.gate.clear()  # the store is slow: the first insert waits
    writer = BufferedEventWriter(store, max_buffer=100, flush_interval=0.01, batch_size=50)
    for i in range(130):
        writer.record_request(request(i))
    assert (writer.buffered, writer.dropped_full, writer.dropped_error) == (100, 30, 0)
    store.gate.set()
    counters = writer.close()
    assert [row.request_id for row in store.requests] == [f"r{i}" for i in range(100)]  # the oldest kept
    assert (counters.written, counters.dropped_full) == (100, 30)


def test_an_outage_keeps_rows_buffered_logs_once_and_writes_them_when_the_store_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    store.down = True
    writer = BufferedEventWriter(
        store, max_buffer=50, flush_interval=0.01, batch_size=10, max_retry_delay=0.02
    )
    with caplog.at_level(logging.WARNING, logger="loopline.rollout.writer"):
        writer.record_request(request(0))
        wait_for(lambda: writer.flush_failures >= 3)
        for i in range(1, 60):
            writer.record_request(request(i))
        assert (writer.buffered, writer.dropped_error, writer.dropped_full) == (50, 10, 0)
        store.down = False
        wait_for(lambda: writer.buffered == 0)
        writer.record_request(request(99))
        counters = writer.close()
    assert [row.request_id for row in store.requests] == [f"r{i}" for i in [*range(50), 99]]
    assert counters.written == 51 and counters.flush_failures >= 3
    messages = [record.getMessage() for record in caplog.records]
    assert sum("Cannot write events" in m for m in messages) == 1, messages
    assert sum("writable again" in m for m in messages) == 1, messages


def test_a_row_the_store_refuses_is_dropped_and_the_rest_of_its_batch_written() -> None:
    store = MemoryStore()
    store.refuse = "r3"
    writer = BufferedEventWriter(store, flush_interval=0.01, batch_size=10)
    for i in range(10):
        writer.record_request(request(i))
    counters = writer.close()
    assert [row.request_id for row in store.requests] == [f"r{i}" for i in range(10) if i != 3]
    assert (counters.written, counters.dropped_error, counters.flush_failures) == (9, 1, 0)


def test_close_with_the_store_down_gives_up_at_the_timeout_and_counts_what_is_left() -> None:
    store = MemoryStore()
    store.down = True
    writer = BufferedEventWriter(store, flush_interval=0.01, max_retry_delay=0.02)
    for i in range(5):
        writer.record_request(request(i))
    started = time.monotonic()
    counters = writer.close(timeout=0.3)
    assert time.monotonic() - started < 10  # the store never comes back: without the timeout, never
    assert (counters.written, counters.buffered, counters.dropped_error) == (0, 0, 5)
    writer.record_request(request(6))  # after close: neither raises nor buffers
    assert (writer.buffered, writer.dropped_error) == (0, 6)


def test_feedback_may_name_a_request_still_in_the_buffer() -> None:
    store = MemoryStore()
    store.gate.clear()
    writer = BufferedEventWriter(store, flush_interval=0.01)
    writer.record_request(request(1))
    assert writer.feedback_is_known("r1")  # buffered, not written yet
    assert not writer.feedback_is_known("r2")
    store.gate.set()
    wait_for(lambda: writer.written == 1)
    assert writer.feedback_is_known("r1")  # now from the store
    writer.close()


def test_record_request_does_not_wait_for_a_stuck_store() -> None:
    store = MemoryStore()
    store.gate.clear()  # every insert blocks until released
    writer = BufferedEventWriter(store, max_buffer=20_000, flush_interval=0.001, batch_size=100)

    def record() -> None:
        for i in range(10_000):
            writer.record_request(request(i))

    caller = threading.Thread(target=record, daemon=True)
    caller.start()
    caller.join(timeout=60)  # a caller that waited on the store would wait for ever: the gate stays shut
    assert not caller.is_alive(), "record_request waited for the store"
    assert not store.requests and writer.buffered == 10_000  # all of them held, none lost, none written
    store.gate.set()
    assert writer.close().written == 10_000


def test_retry_delay_doubles_up_to_the_cap() -> None:
    assert [retry_delay(n, 0.5, 5.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        BufferedEventWriter(MemoryStore(), batch_size=0)
