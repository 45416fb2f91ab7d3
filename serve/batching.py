"""Micro-batching: many concurrent requests, one ONNX Runtime call per batch.

Requests put their already-decoded images into a bounded asyncio queue and await a future.
One batcher task takes the first waiting image, lets the queue fill for at most ``window_s``
(or until ``max_batch`` images wait), and runs ``judge`` on the whole batch in a single
dedicated inference thread, so the event loop never blocks and the model (and the index's
SQLite handle) is only ever used by one thread. The queue bound is the service's
back-pressure: when it is full, :class:`QueueFullError` tells the caller to come back later
instead of letting latency grow without limit.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

from brandguard.serve.errors import BatcherStoppedError, InferenceTimeoutError, QueueFullError

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class BatchStats:
    """Counters the metrics endpoint reads; updated only on the event loop thread."""

    batches: int = 0
    images: int = 0
    rejected: int = 0
    failed_batches: int = 0
    inference_seconds: float = 0.0
    batch_sizes: dict[int, int] = field(default_factory=dict)


@dataclass
class _Job(Generic[Item]):
    item: Item
    future: asyncio.Future
    enqueued: float


class MicroBatcher(Generic[Item, Result]):
    """Collects items from concurrent callers into batches for ``judge(items) -> results``."""

    def __init__(self, judge: Callable[[Sequence[Item]], list[Result]], *, max_batch: int, window_s: float,
                 queue_size: int, retry_after_s: int = 1) -> None:
        if max_batch < 1 or queue_size < 1 or window_s < 0:
            raise ValueError("max_batch and queue_size must be >= 1, window_s >= 0")
        self._judge = judge
        self.max_batch = max_batch
        self.window_s = window_s
        self.queue_size = queue_size
        self.retry_after_s = retry_after_s
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Job[Item]] | None = None
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Create the queue and the batcher task (on the running loop) and the inference thread."""
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="brandguard-infer")
        self._task = asyncio.create_task(self._run(), name="brandguard-batcher")

    async def stop(self) -> None:
        """Stop taking work; fail whatever still waits; release the inference thread."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._queue is not None:
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if not job.future.done():
                    job.future.set_exception(BatcherStoppedError("service is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    # ------------------------------------------------------------------ callers
    async def submit_many(self, items: Sequence[Item], timeout_s: float) -> list[Result]:
        """Results for ``items``, in order. All are admitted or none (:class:`QueueFullError`)."""
        if not self.running or self._queue is None:
            raise BatcherStoppedError("inference is not running")
        free = self._queue.maxsize - self._queue.qsize()
        if len(items) > free:
            self.stats.rejected += len(items)
            raise QueueFullError(len(items), free, self.retry_after_s)
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        jobs = [_Job(it, loop.create_future(), now) for it in items]
        for job in jobs:  # cannot raise QueueFull: checked above, and nothing awaits in between
            self._queue.put_nowait(job)
        if self._arrived is not None:
            self._arrived.set()
        try:
            return list(await asyncio.wait_for(asyncio.gather(*(j.future for j in jobs)), timeout_s))
        except asyncio.TimeoutError as exc:
            raise InferenceTimeoutError(f"no verdict within {timeout_s:g}s") from exc

    async def submit(self, item: Item, timeout_s: float) -> Result:
        return (await self.submit_many([item], timeout_s))[0]

    async def run_exclusive(self, fn: Callable[[], Result]) -> Result:
        """Run ``fn`` on the inference thread, between batches.

        Index writes go through here: FAISS and the index's SQLite handle are then only ever
        touched by one thread, and a batch never searches a half-applied change.
        """
        if not self.running or self._executor is None:
            raise BatcherStoppedError("inference is not running")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # ------------------------------------------------------------------ the batcher
    async def _collect(self) -> list[_Job[Item]]:
        """Wait for one job, then up to ``window_s`` for the queue to hold a full batch."""
        if self._queue is None or self._arrived is None:
            raise BatcherStoppedError("batcher used before start()")
        first = await self._queue.get()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window_s
        while self._queue.qsize() < self.max_batch - 1:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        batch = [first]
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        # Callers that gave up (timeout, disconnect) cancelled their futures: skip their work.
        return [j for j in batch if not j.future.done()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._judge, [j.item for j in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"judge returned {len(results)} results for {len(batch)} items")
            except asyncio.CancelledError:
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(BatcherStoppedError("service is shutting down"))
                raise
            except Exception as exc:  # noqa: BLE001 - one failed batch must not kill the batcher
                self.stats.failed_batches += 1
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(exc)
                continue
            finally:
                self.stats.inference_seconds += time.perf_counter() - t0
            self.stats.batches += 1
            self.stats.images += len(batch)
            self.stats.batch_sizes[len(batch)] = self.stats.batch_sizes.get(len(batch), 0) + 1
            for j, r in zip(batch, results):
                if not j.future.done():
                    j.future.set_result(r)
