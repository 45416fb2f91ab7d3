"""The service's parts, built once by the app's lifespan and kept on ``app.state.service``.

:class:`Service` holds them together: the reference catalog (index, versions), inference
(admission, decoding, batching), media files, the check/complaint flows and evidence packages.
Nothing is loaded at import time; :meth:`Service.start` loads ONE verified bundle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import anyio

from brandguard.cases.leads import LeadStore
from brandguard.cases.policy import LeadPolicy
from brandguard.quarantine import Quarantine
from brandguard.serve.admission import Admission
from brandguard.serve.batching import MicroBatcher
from brandguard.serve.metrics import Metrics
from brandguard.serve.services.checks import Checks
from brandguard.serve.services.decoding import DecodeLanes
from brandguard.serve.services.evidence import EvidenceBuilder
from brandguard.serve.services.inference import Inference
from brandguard.serve.services.media import MediaStore
from brandguard.serve.services.references import ReferenceCatalog, reference_map
from brandguard.serve.settings import Settings

log = logging.getLogger("brandguard.serve")


@dataclass
class Service:
    """Everything a request needs."""

    settings: Settings
    store: LeadStore
    batcher: MicroBatcher
    catalog: ReferenceCatalog
    inference: Inference
    media: MediaStore
    checks: Checks
    evidence: EvidenceBuilder
    lanes: DecodeLanes
    metrics: Metrics

    @property
    def info(self) -> dict[str, Any]:
        return self.catalog.info

    @classmethod
    async def start(cls, settings: Settings, metrics: Metrics, admission: Admission) -> "Service":
        """Load the bundle (verified, index required) and the leads database; start the batcher."""
        import cv2

        from brandguard.engine.pipeline import Pipeline
        from brandguard.engine.routing import DepthOptions
        from brandguard.vision.decode import DecodeLimits

        cv2.setNumThreads(settings.threads)
        limits = DecodeLimits(max_pixels=settings.max_pixels, max_bytes=settings.max_upload_bytes)

        def load():
            pipe = Pipeline.from_bundle(settings.bundle_path(), threads=settings.threads, device=settings.device,
                                        region_mode=settings.region_mode, require_index=True, limits=limits,
                                        depth=DepthOptions(settings.depth, settings.audit_share))
            if pipe.depth.depth != "fast":
                pipe.shape_table()  # built before the first request, not during it
            # Sources are stored relative to the bundle (copied in at index time) or absolute.
            return pipe, reference_map(pipe), Quarantine(pipe.bundle.path)

        pipeline, references, quarantine = await anyio.to_thread.run_sync(load)
        store = await anyio.to_thread.run_sync(LeadStore, settings.leads_db)
        # the lead policy the scanner applies too; the seller history is read per check (it changes)
        policy = LeadPolicy.from_file(settings.brand_info, store.confirmed_counterfeits)
        inference: Inference | None = None

        def judge(items):
            assert inference is not None  # the batcher takes work only once the service exists
            return inference.judge_batch(items)

        batcher = MicroBatcher(judge, max_batch=settings.max_batch, window_s=settings.batch_window_ms / 1000.0,
                               queue_size=settings.queue_size, retry_after_s=settings.retry_after_s)
        catalog = ReferenceCatalog(settings, pipeline, batcher, references, quarantine)
        await anyio.to_thread.run_sync(catalog.clean_leftovers)
        lanes = DecodeLanes(settings)
        inference = Inference(settings, catalog, batcher, admission, lanes, metrics)
        media = MediaStore(settings)
        service = cls(settings, store, batcher, catalog, inference, media,
                      Checks(inference, catalog, media, store, metrics, policy), EvidenceBuilder(catalog, media, store),
                      lanes, metrics)
        await batcher.start()
        log.info("ready", extra={k: service.info.get(k) for k in ("model", "model_sha256", "index_count",
                                                                    "index_generation", "providers", "device")})
        return service

    async def stop(self) -> None:
        """Fail what still waits, release the inference thread, close the database and the index."""
        await self.batcher.stop()
        self.lanes.shutdown()
        self.store.close()
        self.catalog.quarantine.close()
        self.catalog.pipeline.index.close()
