"""Judging uploaded images: admission, decoding off the event loop, micro-batched inference.

Path of a request's images, once its body has arrived: admitted against
``Settings.inflight_limit`` (over it → 503 + Retry-After) → headers read for the decode budget
→ decoded in a bounded lane (undecodable or over budget → ``inconclusive`` verdict, still 200)
→ bounded queue (full → 503) → one batched ONNX Runtime + FAISS call on the inference thread.
``request_timeout_s`` covers all of it, decoding included (→ 504): a client is never held
longer, whatever its images cost to decode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import anyio

from brandguard.errors import ImageDecodeError
from brandguard.serve.admission import Admission, Ticket
from brandguard.serve.batching import MicroBatcher
from brandguard.serve.errors import InferenceTimeoutError
from brandguard.serve.metrics import Metrics
from brandguard.serve.schemas import ListingFields
from brandguard.serve.services.decoding import DecodeLanes, over_budget
from brandguard.serve.services.references import ReferenceCatalog
from brandguard.serve.settings import Settings

if TYPE_CHECKING:  # the engine loads ONNX Runtime: not at import time
    from brandguard.engine.decide import Verdict


@dataclass(frozen=True)
class Judged:
    """One image's verdict, and its header-declared decoded bytes (the lane for later work on it)."""

    verdict: Verdict
    decoded_bytes: int


class Inference:
    """Admission, the decode lanes and the batcher's judge function."""

    def __init__(self, settings: Settings, catalog: ReferenceCatalog, batcher: MicroBatcher, admission: Admission,
                 lanes: DecodeLanes, metrics: Metrics) -> None:
        self.settings = settings
        self.catalog = catalog
        self.pipeline = catalog.pipeline
        self.batcher = batcher
        self.admission = admission
        self.lanes = lanes
        self.metrics = metrics

    def judge_batch(self, items: Sequence[tuple]) -> list:
        """What the batcher runs: pick up other workers' index changes, then judge.

        Items are (prepared image or decode error, upload bytes, depth, hints, brand scope): the
        bytes let candidates be verified with local features exactly as the scanner does, so
        both give one verdict; a brand scope searches that brand's references only.
        """
        self.catalog.reload_if_changed()
        out: list = [None] * len(items)
        groups: dict = {}
        for i, item in enumerate(items):
            groups.setdefault((item[2], item[4]), []).append(i)
        for (depth, scope), idx in groups.items():  # one judge call per depth and scope in this micro-batch
            verdicts = self.pipeline.judge([items[i][0] for i in idx], [items[i][1] for i in idx],
                                           [items[i][3] for i in idx], depth, brand=scope)
            for i, v in zip(idx, verdicts):
                out[i] = v
        return out

    def _prepare(self, data: bytes, depth):  # noqa: ANN001 - DepthOptions (imported where used)
        """Decode (and, in thorough depth, describe keypoints and read the text) in a decode thread."""
        try:
            return self.pipeline.prepare(data, local=depth.depth == "thorough", depth=depth)
        except ImageDecodeError as exc:
            return exc

    async def judge(self, images: Sequence[bytes], listings: Sequence[ListingFields] | None = None,
                    brand: str | None = None) -> list[Judged]:
        """Admit, decode in the lanes, then judge all images as one admission to the queue.

        Each listing's depth (its ``depth`` field, else the service's) and hints travel with it;
        ``brand`` judges against that brand's references only (a brand key's checks)."""
        timeout = self.settings.request_timeout_s
        with self.admission.admit(len(images)) as ticket:
            deadline = time.monotonic() + timeout
            try:
                with anyio.fail_after(timeout):
                    return await self._judge_admitted(images, listings or [ListingFields()] * len(images), ticket,
                                                      deadline, brand)
            except TimeoutError as exc:
                raise InferenceTimeoutError(f"no verdict within {timeout:g}s (decoding and inference)") from exc

    async def _judge_admitted(self, images: Sequence[bytes], listings: Sequence[ListingFields], ticket: Ticket,
                              deadline: float, brand: str | None) -> list[Judged]:
        from brandguard.engine.routing import DepthOptions, ListingHints

        costs = await self.lanes.costs(images)
        prepared: list = over_budget(costs, self.settings.decode_budget_bytes)
        refused = sum(p is not None for p in prepared)
        self.metrics.decode_budget_refused += refused
        ticket.give_back(refused)  # answered without decoding: their in-flight slots serve others now
        depths = [DepthOptions(lst.depth or self.settings.depth, self.settings.audit_share) for lst in listings]

        async def one(i: int) -> None:
            prepared[i] = await self.lanes.run(costs[i], self._prepare, images[i], depths[i])

        async with anyio.create_task_group() as tg:
            for i in range(len(images)):
                if prepared[i] is None:
                    tg.start_soon(one, i)
        hints = [ListingHints(lst.brand_hint or "", lst.title or "") for lst in listings]
        verdicts = await self.batcher.submit_many([(p, im, d, h, brand) for p, im, d, h in
                                                   zip(prepared, images, depths, hints)],
                                                  max(0.001, deadline - time.monotonic()))
        for v in verdicts:
            self.metrics.count_verdict(v.verdict)
        return [Judged(v, c) for v, c in zip(verdicts, costs)]
