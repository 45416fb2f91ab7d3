"""The scanner's Ray engine: the same scan, spread over Ray actors with Ray Data.

Each actor loads the bundle once (one ONNX Runtime session, one FAISS index) and judges
whole batches: decode → embed → search → decide, exactly the local code path. The driver
receives result rows in catalogue order and writes the same parts and outputs as the local
engine, so resume and incremental rescans behave identically.

On a real cluster, start Ray on the nodes (``ray start --head`` / ``ray start --address=…``),
put the catalogue, images and bundle on storage every node can read, and run the same
``brandguard scan … --engine ray --workers N`` on the head node with ``RAY_ADDRESS`` set.
"""

from __future__ import annotations

import os
from typing import Iterator

import pyarrow as pa

from brandguard.inputs import ListingRow
from brandguard.errors import ImageDecodeError
from brandguard.engine.pipeline import ListingHints, Pipeline
from brandguard.vision.prepare import PreparedImage


class _ScanActor:
    """One per Ray worker: holds the pipeline for the actor's lifetime."""

    def __init__(self, bundle_dir: str, region_mode: str, threads: int, limits, depth) -> None:  # noqa: ANN001
        from brandguard.scan.worker import init_worker

        self.pipe = Pipeline.from_bundle(bundle_dir, threads=threads, region_mode=region_mode, require_index=True,
                                         depth=depth)
        self.pipe.limits = limits
        local = self.pipe.local_config if depth.depth == "thorough" and self.pipe.has_local_stage() else None
        init_worker(self.pipe.card, region_mode, limits, local)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from brandguard.scan.worker import prepare_row
        from brandguard.scan.scanner import RESULT_SCHEMA, verdict_row

        rows = [ListingRow(**r) for r in batch.to_pylist()]
        prepared = [prepare_row(r) for r in rows]
        items = [it if isinstance(it, PreparedImage) else ImageDecodeError(*it) for _, it, _ in prepared]
        verdicts = self.pipe.judge(items, [r.image if isinstance(it, PreparedImage) else None
                                           for r, it, _ in prepared],
                                   [ListingHints(r.brand_hint, r.title) for r, _, _ in prepared])
        out = [verdict_row(r, v, self.pipe.card.sha256, fp) for (r, _, fp), v in zip(prepared, verdicts)]
        return pa.Table.from_pylist(out, schema=RESULT_SCHEMA)


def ray_judged_batches(pending: list[ListingRow], pipeline: Pipeline, opts) -> Iterator[list[dict]]:
    """Yield result rows in batches, computed by ``opts.workers`` Ray actors."""
    import ray

    if not pending:
        return
    started_here = False
    if not ray.is_initialized():
        # Local instance unless RAY_ADDRESS points at a cluster; threads stay explicit per actor.
        address = os.environ.get("RAY_ADDRESS")
        kwargs = {} if address else {"num_cpus": max(opts.workers, 1)}
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, **kwargs)
        started_here = True
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = opts.progress
        rows = [{f: getattr(r, f) for f in ListingRow.__dataclass_fields__} for r in pending]
        ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // opts.batch_size, 1024)))
        ds = ds.map_batches(
            _ScanActor,
            fn_constructor_kwargs={"bundle_dir": str(pipeline.bundle.path), "region_mode": opts.region_mode,
                                   "threads": opts.threads, "limits": pipeline.limits, "depth": pipeline.depth},
            batch_size=opts.batch_size, batch_format="pyarrow", concurrency=max(opts.workers, 1),
            num_cpus=1,
        )
        for batch in ds.iter_batches(batch_size=opts.batch_size, batch_format="pyarrow"):
            yield batch.to_pylist()
    finally:
        if started_here:
            ray.shutdown()
