"""Dynamic micro-batching in front of one model (after MLServer's adaptive batching).

Requests (each an ``n x ...`` array) wait in a bounded queue. A worker takes the first, then whatever
else arrives within ``max_wait_ms``, until the batch holds ``max_batch_size`` items; it runs the model on
the concatenation in the batcher's own thread, one batch at a time (the event loop keeps accepting
requests), and hands each request its own rows back. Under load batches fill without waiting; alone, a
request waits at most ``max_wait_ms`` (0: not at all). Only requests of one item shape share a batch; a
request of more than ``max_batch_size`` items runs alone, whole. A full queue refuses at once
(``QueueFull``: the HTTP layer answers 503 + Retry-After).

A batcher serves one model's ``predict``: a hot reload starts a new batcher and ``stop``s the old one,
which finishes everything already queued on the old model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from loopline.errors import QueueFull

logger = logging.getLogger(__name__)

__all__ = ["BatcherStopped", "MicroBatcher", "QueueFull"]


class BatcherStopped(RuntimeError):
    """``submit`` on a batcher that is not started or is stopping (a programming error of the caller)."""


@dataclass(frozen=True)
class _Request:
    inputs: np.ndarray
    answer: asyncio.Future[Any]


_STOP = object()  # queued by ``stop``: the worker finishes what is ahead of it, then exits


class MicroBatcher:
    """Concatenates concurrent ``submit`` calls into batches of at most ``max_batch_size`` items."""

    def __init__(
        self,
        predict: Callable[[np.ndarray], Any],
        max_batch_size: int = 32,
        max_wait_ms: float = 2.0,
        max_queue: int = 256,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_wait_ms < 0 or max_queue < 1:
            raise ValueError(
                f"MicroBatcher needs max_batch_size >= 1, max_wait_ms >= 0 and max_queue >= 1; got "
                f"{max_batch_size}, {max_wait_ms} and {max_queue}."
            )
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Request | object] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._accepting = False

    @property
    def queued(self) -> int:
        """Requests waiting (not counting the batch being predicted)."""
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        """Start the worker on the running event loop."""
        if self._worker is not None:
            raise BatcherStopped("This MicroBatcher was already started; make a new one per model.")
        # one slot more than max_queue, so that ``stop`` can always queue its marker
        self._queue = asyncio.Queue(maxsize=self.max_queue + 1)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._worker = asyncio.create_task(self._run(), name="micro-batcher")
        self._accepting = True

    async def stop(self) -> None:
        """Refuse new requests, answer every queued one, then end the worker."""
        if self._worker is None or self._queue is None:
            return
        if self._accepting:
            self._accepting = False
            self._queue.put_nowait(_STOP)  # the spare slot: never full
        await asyncio.shield(self._worker)
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    async def submit(self, inputs: np.ndarray) -> Any:
        """The model's outputs for ``inputs`` (``n x ...`` → ``n`` rows: an array, or a list of one output per
        item), batched with other requests.

        Raises:
            QueueFull: ``max_queue`` requests are already waiting; retry later.
            BatcherStopped: the batcher is not started, or stopping.
            Exception: whatever ``predict`` raised for the batch this request was in.
        """
        if not self._accepting or self._queue is None:
            raise BatcherStopped("This MicroBatcher is not accepting requests (not started, or stopping).")
        if self._queue.qsize() >= self.max_queue:
            raise QueueFull(
                f"The model server has {self.max_queue} requests waiting, its limit. To fix this, retry in a "
                "moment, send fewer concurrent requests, or run more replicas (or raise max_queue)."
            )
        request = _Request(inputs, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(request)
        return await request.answer

    async def _run(self) -> None:
        assert self._queue is not None
        queue, carried = self._queue, None
        while True:
            first = carried if carried is not None else await queue.get()
            carried = None
            if first is _STOP:
                return
            assert isinstance(first, _Request)
            batch, carried = await self._collect(first)
            await self._answer([r for r in batch if not r.answer.done()])  # skip callers that left

    async def _collect(self, first: _Request) -> tuple[list[_Request], object | None]:
        """``first`` and the requests that arrive within ``max_wait_ms`` and fit into the batch (room left,
        same item shape); the one that did not fit (or the stop marker) is carried over to the next batch."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_ms / 1000
        batch, size = [first], len(first.inputs)
        while size < self.max_batch_size:
            if not self._queue.empty():
                nxt = self._queue.get_nowait()
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if nxt is _STOP or not isinstance(nxt, _Request):
                return batch, nxt
            too_many = size + len(nxt.inputs) > self.max_batch_size
            if too_many or nxt.inputs.shape[1:] != first.inputs.shape[1:]:
                return batch, nxt
            batch.append(nxt)
            size += len(nxt.inputs)
        return batch, None

    async def _answer(self, batch: list[_Request]) -> None:
        if not batch:
            return
        counts = [len(r.inputs) for r in batch]
        total = sum(counts)
        if self.on_batch is not None:
            try:
                self.on_batch(total)
            except Exception:  # metrics must never stop the model from answering
                logger.exception("the on_batch callback failed")
        try:
            inputs = batch[0].inputs if len(batch) == 1 else np.concatenate([r.inputs for r in batch])
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self.predict, inputs)
            if len(outputs) != total:
                raise RuntimeError(f"predict returned {len(outputs)} rows for a batch of {total} inputs.")
        except Exception as exc:
            for request in batch:
                if not request.answer.done():
                    request.answer.set_exception(exc)
            return
        start = 0
        for request, count in zip(batch, counts, strict=True):
            if not request.answer.done():
                request.answer.set_result(outputs[start : start + count])
            start += count
