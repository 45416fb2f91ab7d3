"""Judging uploaded images: admission, decoding off the event loop, micro-batched inference.

Path of an image: admitted against ``Settings.inflight_limit`` (over it → 503 + Retry-After)
→ decoded in a bounded threadpool (undecodable → ``inconclusive`` verdict, still 200) →
bounded queue (full → 503) → one batched ONNX Runtime + FAISS call on the inference thread.
"""

from __future__ import annotations

from typing import Sequence

import anyio

from brandguard.errors import ImageDecodeError
from brandguard.serve.batching import MicroBatcher
from brandguard.serve.errors import QueueFullError
from brandguard.serve.metrics import Metrics
from brandguard.serve.schemas import ListingFields
from brandguard.serve.services.references import ReferenceCatalog
from brandguard.serve.settings import Settings


class Inference:
    """Admission counters, the decode threads and the batcher's judge function."""

    def __init__(self, settings: Settings, catalog: ReferenceCatalog, batcher: MicroBatcher,
                 metrics: Metrics) -> None:
        self.settings = settings
        self.catalog = catalog
        self.pipeline = catalog.pipeline
        self.batcher = batcher
        self.metrics = metrics
        self.decode_limiter = anyio.CapacityLimiter(settings.decode_threads)
        self.inflight = 0  # images admitted and not answered; event-loop thread only
        self.admission_rejected = 0
        self.at_door = 0  # image-judging requests inside the door; event-loop thread only

    def judge_batch(self, items: Sequence[tuple]) -> list:
        """What the batcher runs: pick up other workers' index changes, then judge.

        Items are (prepared image or decode error, upload bytes, depth, hints): the bytes let
        candidates be verified with local features exactly as the scanner does, so both give
        one verdict.
        """
        self.catalog.reload_if_changed()
        out: list = [None] * len(items)
        by_depth: dict = {}
        for i, item in enumerate(items):
            by_depth.setdefault(item[2], []).append(i)
        for depth, idx in by_depth.items():  # one judge call per depth in this micro-batch
            verdicts = self.pipeline.judge([items[i][0] for i in idx], [items[i][1] for i in idx],
                                           [items[i][3] for i in idx], depth)
            for i, v in zip(idx, verdicts):
                out[i] = v
        return out

    def _prepare(self, data: bytes, depth: str):
        """Decode (and, in thorough depth, describe keypoints) in a decode thread."""
        try:
            return self.pipeline.prepare(data, local=depth == "thorough")
        except ImageDecodeError as exc:
            return exc

    async def judge(self, images: Sequence[bytes], listings: Sequence[ListingFields] | None = None) -> list:
        """Admit, decode in the threadpool (bounded), then judge all images as one admission to the queue.

        Each listing's depth (its ``depth`` field, else the service's) and hints travel with it."""
        n, limit = len(images), self.settings.inflight_limit
        if self.inflight + n > limit:
            self.admission_rejected += n
            raise QueueFullError(n, max(0, limit - self.inflight), self.settings.retry_after_s)
        self.inflight += n
        try:
            return await self._judge_admitted(images, listings or [ListingFields()] * n)
        finally:
            self.inflight -= n

    async def _judge_admitted(self, images: Sequence[bytes], listings: Sequence[ListingFields]) -> list:
        from brandguard.engine.pipeline import DepthOptions, ListingHints

        prepared = [None] * len(images)
        depths = [DepthOptions(lst.depth or self.settings.depth, self.settings.audit_share) for lst in listings]

        async def one(i: int, data: bytes) -> None:
            prepared[i] = await anyio.to_thread.run_sync(self._prepare, data, depths[i].depth,
                                                         limiter=self.decode_limiter)

        async with anyio.create_task_group() as tg:
            for i, data in enumerate(images):
                tg.start_soon(one, i, data)
        hints = [ListingHints(lst.brand_hint or "", lst.title or "") for lst in listings]
        verdicts = await self.batcher.submit_many(list(zip(prepared, images, depths, hints)),
                                                  self.settings.request_timeout_s)
        for v in verdicts:
            self.metrics.count_verdict(v.verdict)
        return verdicts
