"""Micro-batching: concurrent requests share model calls, each gets its own rows back, a full queue
refuses at once, a model error reaches every request of its batch, and stop answers what was queued."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
import pytest

from loopline.errors import QueueFull
from loopline.serving.batching import BatcherStopped, MicroBatcher

pytestmark = pytest.mark.unit

T = TypeVar("T")


def run(body: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(body(), timeout=10))


def doubled(inputs: np.ndarray) -> np.ndarray:
    """A model whose answer identifies its input: 2x, so a mixed-up row shows."""
    return inputs * 2


class Gate:
    """A model that blocks in its worker thread until released (to build up a queue)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[int] = []

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        self.calls.append(len(inputs))
        self.release.wait(5)
        return doubled(inputs)


def rows(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32).reshape(n, 1)


def test_concurrent_requests_share_batches_and_get_their_own_rows() -> None:
    sizes: list[int] = []

    async def body() -> list[np.ndarray]:
        batcher = MicroBatcher(doubled, max_batch_size=8, max_wait_ms=50, on_batch=sizes.append)
        await batcher.start()
        requests = [rows(10 * i, 1 + i % 3) for i in range(12)]  # 24 items, 1-3 per request
        answers = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.stop()
        return [a - r * 2 for a, r in zip(answers, requests, strict=True)]

    errors = run(body)
    assert all(e.shape[1] == 1 and not e.any() for e in errors)
    assert sum(sizes) == 24 and max(sizes) > 1 and max(sizes) <= 8
    assert len(sizes) < 12  # fewer model calls than requests


def test_a_lone_request_waits_at_most_max_wait() -> None:
    async def body() -> float:
        batcher = MicroBatcher(doubled, max_batch_size=32, max_wait_ms=20)
        await batcher.start()
        started = time.perf_counter()
        answer = await batcher.submit(rows(0, 2))
        elapsed = time.perf_counter() - started
        np.testing.assert_array_equal(answer, rows(0, 2) * 2)
        await batcher.stop()
        return elapsed

    assert run(body) < 2.0  # 20 ms, however loaded the machine; not for ever, waiting for a full batch


def test_the_model_runs_in_the_batchers_own_thread_which_ends_with_it() -> None:
    threads: list[threading.Thread] = []

    def recorded(inputs: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread())
        return doubled(inputs)

    async def body() -> None:
        batcher = MicroBatcher(recorded, max_batch_size=4, max_wait_ms=0)
        await batcher.start()
        for _ in range(3):  # one at a time: three batches
            await batcher.submit(rows(0, 1))
        await asyncio.gather(*(batcher.submit(rows(i, 1)) for i in range(8)))
        await batcher.stop()

    run(body)
    assert len(set(threads)) == 1 and threads[0] is not threading.main_thread()
    threads[0].join(timeout=5)
    assert not threads[0].is_alive()


def test_a_request_larger_than_the_batch_runs_alone_and_whole() -> None:
    sizes: list[int] = []

    async def body() -> np.ndarray:
        batcher = MicroBatcher(doubled, max_batch_size=4, max_wait_ms=1, on_batch=sizes.append)
        await batcher.start()
        answer = await batcher.submit(rows(0, 10))
        await batcher.stop()
        return answer

    np.testing.assert_array_equal(run(body), rows(0, 10) * 2)
    assert sizes == [10]


def test_a_full_queue_refuses_at_once_and_the_queued_requests_still_finish() -> None:
    gate = Gate()

    async def body() -> None:
        batcher = MicroBatcher(gate, max_batch_size=1, max_wait_ms=0, max_queue=3)
        await batcher.start()
        busy = asyncio.create_task(batcher.submit(rows(0, 1)))
        while not gate.calls:  # the first request is in the model; the next three fill the queue
            await asyncio.sleep(0.001)
        waiting = [asyncio.create_task(batcher.submit(rows(i, 1))) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        assert batcher.queued == 3
        started = time.perf_counter()
        with pytest.raises(QueueFull, match="3 requests waiting"):
            await batcher.submit(rows(9, 1))
        assert time.perf_counter() - started < 2.0  # at once: not when the model frees a place
        gate.release.set()
        answers = await asyncio.gather(busy, *waiting)
        assert [float(a[0, 0]) for a in answers] == [0.0, 2.0, 4.0, 6.0]
        await batcher.stop()

    run(body)


def test_a_model_error_reaches_every_request_of_its_batch_and_the_batcher_goes_on() -> None:
    calls: list[int] = []

    def flaky(inputs: np.ndarray) -> np.ndarray:
        calls.append(len(inputs))
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory")
        return doubled(inputs)

    async def body() -> None:
        batcher = MicroBatcher(flaky, max_batch_size=8, max_wait_ms=50)
        await batcher.start()
        failed = await asyncio.gather(*(batcher.submit(rows(i, 1)) for i in range(3)), return_exceptions=True)
        assert calls == [3]
        assert all(isinstance(f, RuntimeError) and "out of memory" in str(f) for f in failed)
        np.testing.assert_array_equal(await batcher.submit(rows(5, 1)), rows(5, 1) * 2)
        await batcher.stop()

    run(body)


def test_a_model_answering_the_wrong_number_of_rows_fails_the_batch() -> None:
    async def body() -> None:
        batcher = MicroBatcher(lambda inputs: inputs[:1], max_batch_size=8, max_wait_ms=1)
        await batcher.start()
        with pytest.raises(RuntimeError, match="returned 1 rows for a batch of 2"):
            await batcher.submit(rows(0, 2))
        await batcher.stop()

    run(body)


def test_requests_of_different_item_shapes_never_share_a_batch() -> None:
    sizes: list[int] = []

    async def body() -> None:
        batcher = MicroBatcher(doubled, max_batch_size=8, max_wait_ms=30, on_batch=sizes.append)
        await batcher.start()
        small, wide = np.ones((2, 1), np.float32), np.ones((2, 3), np.float32)
        answers = await asyncio.gather(batcher.submit(small), batcher.submit(wide))
        assert [a.shape for a in answers] == [(2, 1), (2, 3)]
        await batcher.stop()

    run(body)
    assert sizes == [2, 2]


def test_stop_answers_every_queued_request_then_refuses_new_ones() -> None:
    gate = Gate()

    async def body() -> None:
        batcher = MicroBatcher(gate, max_batch_size=2, max_wait_ms=0, max_queue=10)
        await batcher.start()
        pending = [asyncio.create_task(batcher.submit(rows(i, 1))) for i in range(6)]
        while not gate.calls:
            await asyncio.sleep(0.001)
        stopping = asyncio.create_task(batcher.stop())
        await asyncio.sleep(0.01)
        with pytest.raises(BatcherStopped, match="not accepting"):
            await batcher.submit(rows(0, 1))
        assert not stopping.done()  # still draining behind the blocked model
        gate.release.set()
        await stopping
        answers = [t.result() for t in pending]  # all answered by the time stop returns
        assert [float(a[0, 0]) for a in answers] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]

    run(body)


def test_a_caller_that_left_is_skipped_and_a_failing_callback_does_not_stop_answers() -> None:
    gate, sizes = Gate(), []

    def on_batch(size: int) -> None:
        sizes.append(size)
        raise ValueError("metrics backend down")

    async def body() -> None:
        batcher = MicroBatcher(gate, max_batch_size=8, max_wait_ms=0, on_batch=on_batch)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(rows(0, 1)))
        while not gate.calls:
            await asyncio.sleep(0.001)
        gone = asyncio.create_task(batcher.submit(rows(1, 1)))
        kept = asyncio.create_task(batcher.submit(rows(2, 1)))
        await asyncio.sleep(0)
        gone.cancel()
        gate.release.set()
        assert float((await first)[0, 0]) == 0.0 and float((await kept)[0, 0]) == 4.0
        await batcher.stop()

    run(body)
    assert gate.calls == [1, 1] and sizes == [1, 1]


def test_submit_before_start_and_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch_size >= 1"):
        MicroBatcher(doubled, max_batch_size=0)

    async def body() -> None:
        with pytest.raises(BatcherStopped):
            await MicroBatcher(doubled).submit(rows(0, 1))

    run(body)
