"""Batch scanner: every listing image of a catalogue → one result row.

Decoding (the dominant cost) runs in worker processes on the DCT-downscaled path; the main
process embeds in batches with ONNX Runtime and searches FAISS in batches. Results are written
in parts (``OUT/parts/part-NNNNN.parquet``, each renamed into place when complete), so a scan
killed at any moment resumes where the last complete part ended and the final output holds
every listing exactly once.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from brandguard.datasets.readers import ListingRow, read_catalogue
from brandguard.errors import ImageDecodeError, InputError
from brandguard.vision.bundle import ModelCard
from brandguard.vision.decide import Verdict
from brandguard.vision.decode import DecodeLimits
from brandguard.vision.pipeline import Pipeline, PreparedImage, prepare_image

STATE_FILE = "scan_state.json"
RESULT_COLUMNS = [
    ("listing_id", pa.string()), ("seller_id", pa.string()), ("title", pa.string()), ("price", pa.float64()),
    ("image", pa.string()), ("verdict", pa.string()), ("brand", pa.string()), ("confidence", pa.float64()),
    ("score", pa.float64()), ("reason", pa.string()), ("top_reference_id", pa.string()),
    ("top_references", pa.string()), ("evidence", pa.string()), ("model_sha256", pa.string()),
]
RESULT_SCHEMA = pa.schema(RESULT_COLUMNS)


@dataclass(frozen=True)
class ScanOptions:
    """How to scan. ``workers=0`` decodes in the main process (debugging, tiny catalogues)."""

    workers: int = 1
    threads: int = 1
    batch_size: int = 64
    part_size: int = 2048
    region_mode: str = "full"
    write_jsonl: bool = False
    progress: bool = True


@dataclass
class ScanSummary:
    catalogue: str
    out: str
    total: int = 0
    scanned: int = 0
    resumed: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    inconclusive_reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    images_per_second: float = 0.0
    model_sha256: str = ""
    index_count: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


# ---------------------------------------------------------------------- worker side
_WORKER: dict = {}


def _init_worker(card: ModelCard, region_mode: str, limits: DecodeLimits) -> None:
    """Per-process setup: one OpenCV thread, since the parallelism is the processes."""
    import cv2

    cv2.setNumThreads(1)
    _WORKER.update(card=card, region_mode=region_mode, limits=limits)


def _prepare_row(row: ListingRow) -> tuple[ListingRow, PreparedImage | tuple[str, str]]:
    """Decode one listing; errors travel back as (reason, detail) since they must pickle."""
    if row.error:
        reason = "bad_row" if row.image else "missing_image"
        if row.error.startswith("bad price"):
            reason = "bad_price"
        return row, (reason, row.error)
    try:
        return row, prepare_image(row.image, _WORKER["card"], _WORKER["region_mode"], _WORKER["limits"])
    except ImageDecodeError as exc:
        return row, (exc.reason, exc.detail)


# ---------------------------------------------------------------------- main side
def _verdict_row(row: ListingRow, v: Verdict, model_sha: str) -> dict:
    return {
        "listing_id": row.listing_id, "seller_id": row.seller_id, "title": row.title, "price": row.price,
        "image": row.image, "verdict": v.verdict, "brand": v.brand, "confidence": v.confidence,
        "score": v.score, "reason": v.reason,
        "top_reference_id": v.top[0].reference_id if v.top else None,
        "top_references": json.dumps([asdict(h) for h in v.top]),
        "evidence": json.dumps(v.evidence, sort_keys=True), "model_sha256": model_sha,
    }


def _write_part(parts_dir: Path, number: int, rows: list[dict]) -> None:
    table = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
    tmp = parts_dir / f".part-{number:05d}.parquet.tmp"
    pq.write_table(table, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, parts_dir / f"part-{number:05d}.parquet")


def _existing_parts(parts_dir: Path) -> tuple[set[str], int]:
    done: set[str] = set()
    parts = sorted(parts_dir.glob("part-*.parquet"))
    for p in parts:
        done.update(pq.read_table(p, columns=["listing_id"]).column("listing_id").to_pylist())
    return done, len(parts)


def _state(catalogue: Path, pipeline: Pipeline, opts: ScanOptions) -> dict:
    return {"catalogue": str(catalogue.resolve()), "model_sha256": pipeline.card.sha256,
            "index_sha256": pipeline.index.manifest.index_sha256 if pipeline.index else "",
            "region_mode": opts.region_mode}


def scan(catalogue: str | os.PathLike[str], pipeline: Pipeline, out: str | os.PathLike[str],
         opts: ScanOptions = ScanOptions()) -> ScanSummary:
    """Scan ``catalogue`` into ``out``; resumes a previous, interrupted scan of the same inputs."""
    if pipeline.index is None:
        raise InputError("the bundle has no reference index: run `brandguard index` first")
    cat = Path(catalogue)
    out_dir = Path(out)
    parts_dir = out_dir / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    state = _state(cat, pipeline, opts)
    state_path = out_dir / STATE_FILE
    if state_path.exists():
        previous = json.loads(state_path.read_text())
        if previous != state:
            raise InputError(f"{out_dir} holds a scan of other inputs ({previous}); use a new --out folder")
    else:
        state_path.write_text(json.dumps(state, indent=2) + "\n")
    done, n_parts = _existing_parts(parts_dir)

    rows = list(read_catalogue(cat))
    pending = [r for r in rows if r.listing_id not in done]
    summary = ScanSummary(catalogue=str(cat), out=str(out_dir), total=len(rows), resumed=len(rows) - len(pending),
                          model_sha256=pipeline.card.sha256, index_count=len(pipeline.index))
    t0 = time.perf_counter()
    buffer: list[dict] = []
    bar = tqdm(total=len(rows), initial=summary.resumed, unit="img", desc="scan", disable=not opts.progress,
               smoothing=0.05, dynamic_ncols=True)
    for results in _judged_batches(pending, pipeline, opts):
        buffer.extend(results)
        bar.update(len(results))
        summary.scanned += len(results)
        while len(buffer) >= opts.part_size:
            _write_part(parts_dir, n_parts, buffer[:opts.part_size])
            n_parts += 1
            buffer = buffer[opts.part_size:]
    if buffer:
        _write_part(parts_dir, n_parts, buffer)
    bar.close()
    summary.seconds = round(time.perf_counter() - t0, 3)
    summary.images_per_second = round(summary.scanned / summary.seconds, 2) if summary.seconds > 0 else 0.0
    _finalise(out_dir, parts_dir, summary, opts)
    return summary


def _decoded_stream(pending: list[ListingRow], pipeline: Pipeline, opts: ScanOptions
                    ) -> Iterator[tuple[ListingRow, PreparedImage | tuple[str, str]]]:
    init = (pipeline.card, opts.region_mode, pipeline.limits)
    if opts.workers <= 0:
        _init_worker(*init)
        yield from map(_prepare_row, pending)
        return
    # spawn: the parent already holds ONNX Runtime and FAISS thread pools that must not be forked.
    ctx = mp.get_context("spawn")
    with ctx.Pool(opts.workers, initializer=_init_worker, initargs=init) as pool:
        yield from pool.imap(_prepare_row, pending, chunksize=8)


def _judged_batches(pending: list[ListingRow], pipeline: Pipeline, opts: ScanOptions) -> Iterable[list[dict]]:
    batch: list[tuple[ListingRow, PreparedImage | tuple[str, str]]] = []

    def judge() -> list[dict]:
        items = [it if isinstance(it, PreparedImage) else ImageDecodeError(*it) for _, it in batch]
        verdicts = pipeline.judge(items)
        rows = [_verdict_row(r, v, pipeline.card.sha256) for (r, _), v in zip(batch, verdicts)]
        batch.clear()
        return rows

    for pair in _decoded_stream(pending, pipeline, opts):
        batch.append(pair)
        if len(batch) >= opts.batch_size:
            yield judge()
    if batch:
        yield judge()


def _finalise(out_dir: Path, parts_dir: Path, summary: ScanSummary, opts: ScanOptions) -> None:
    parts = sorted(parts_dir.glob("part-*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in parts]) if parts else RESULT_SCHEMA.empty_table()
    ids = table.column("listing_id").to_pylist()
    if len(ids) != len(set(ids)):
        raise InputError("internal error: duplicate listing ids across parts")
    tmp = out_dir / ".results.parquet.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, out_dir / "results.parquet")
    rows = table.to_pylist()
    if opts.write_jsonl:
        tmp_j = out_dir / ".results.jsonl.tmp"
        with open(tmp_j, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, sort_keys=True) + "\n")
        os.replace(tmp_j, out_dir / "results.jsonl")
    summary.verdicts = dict(Counter(r["verdict"] for r in rows))
    summary.inconclusive_reasons = dict(Counter(r["reason"] for r in rows if r["verdict"] == "inconclusive"))
    (out_dir / "summary.json").write_text(summary.to_json())


def read_results(out: str | os.PathLike[str]) -> list[dict]:
    return pq.read_table(Path(out) / "results.parquet").to_pylist()
