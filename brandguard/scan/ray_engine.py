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
from brandguard.engine.pipeline import Pipeline
from brandguard.scan.results import ResultRow


class _ScanActor:
    """One per Ray worker: holds the pipeline for the actor's lifetime."""

    def __init__(self, bundle_dir: str, region_mode: str, threads: int, limits, depth,  # noqa: ANN001
                 root: str | None = None) -> None:
        from brandguard.scan.worker import init_worker

        self.pipe = Pipeline.from_bundle(bundle_dir, threads=threads, region_mode=region_mode, require_index=True,
                                         depth=depth)
        self.pipe.limits = limits
        local = self.pipe.local_config if depth.depth == "thorough" and self.pipe.has_local_stage() else None
        glance = self.pipe.local_config if self.pipe.takes_glance() else None
        init_worker(self.pipe.card, region_mode, limits, local, root, glance=glance)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from brandguard.scan.worker import prepare_row
        from brandguard.scan.results import records_table
        from brandguard.scan.scanner import judge_chunks, judge_prepared

        rows = [ListingRow(**r) for r in batch.to_pylist()]
        out = []
        for chunk in judge_chunks(map(prepare_row, rows), batch_size=len(rows) or 1):
            out.extend(judge_prepared(self.pipe, chunk))
        return records_table(out)


def ray_judged_batches(pending: list[ListingRow], pipeline: Pipeline, opts,  # noqa: ANN001
                       root: str | None = None) -> Iterator[list[ResultRow]]:
    """Yield result rows in batches, computed by ``opts.workers`` Ray actors; ``root``: the
    folder listing images must lie under (None: any path)."""
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
                                   "threads": opts.threads, "limits": pipeline.limits, "depth": pipeline.depth,
                                   "root": root},
            batch_size=opts.batch_size, batch_format="pyarrow", concurrency=max(opts.workers, 1),
            num_cpus=1,
        )
        for batch in ds.iter_batches(batch_size=opts.batch_size, batch_format="pyarrow"):
            yield [ResultRow.from_record(r) for r in batch.to_pylist()]
    finally:
        if started_here:
            ray.shutdown()
