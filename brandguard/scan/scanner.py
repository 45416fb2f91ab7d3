"""Batch scanner: every listing image of a catalogue → one result row.

Decoding (the dominant cost) runs in worker processes on the DCT-downscaled path; the main
process embeds in batches with ONNX Runtime and searches FAISS in batches. Results are written
in parts (``OUT/parts/part-NNNNN.parquet``, each renamed into place when complete), so a scan
killed at any moment resumes where the last complete part ended and the final output holds
every listing exactly once.

Incremental: each result row records the image's size, mtime and sha256. Re-running over a
catalogue that has grown scans only listings that are new or whose image changed (same size and
mtime: unchanged without reading; otherwise re-hashed), and the final output keeps the latest
result per listing.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from brandguard.inputs import ListingRow, confinement_root, read_catalogue
from brandguard.errors import ImageDecodeError, InputError
from brandguard.scan.results import (FINAL_SCHEMA, FLAGGED, RESULT_SCHEMA, ResultRow, read_results,
                                     records_table, verdict_row)
from brandguard.scan.worker import Fingerprint, Prepared, fingerprint, init_worker, prepare_row
from brandguard.artifacts import atomic_write_bytes
from brandguard.engine.pipeline import Pipeline
from brandguard.engine.routing import ListingHints

if TYPE_CHECKING:  # the leads store is imported only when a scan records leads
    from brandguard.cases.policy import LeadDecision, LeadPolicy

STATE_FILE = "scan_state.json"
# Image bytes held for one judge call (they stay until the ORB check and local stage are done):
# a batch of 64 listings of up to 50 MB each must not hold 3 GB.
JUDGE_BYTE_BUDGET = 256 << 20


@dataclass(frozen=True)
class ScanOptions:
    """How to scan. ``workers=0`` decodes in the main process (debugging, tiny catalogues).

    ``engine="ray"`` runs decode + embed + search in ``workers`` Ray actors (one ONNX session
    and one index each) through Ray Data; output and resume semantics are the same.

    Listing images must lie under the catalogue's folder (a row naming another path becomes
    ``inconclusive``, ``path_outside_root``), or under ``image_root`` when given; with
    ``allow_absolute_paths`` any path is read (still only regular files, size-limited).
    """

    engine: str = "local"
    workers: int = 1
    threads: int = 1
    batch_size: int = 64
    part_size: int = 2048
    region_mode: str = "full"
    write_jsonl: bool = False
    progress: bool = True
    leads_db: Path | None = None  # flagged listings become leads there (status "new")
    brand_info: Path | None = None  # authorised sellers and reference prices per brand
    media_dir: Path | None = None  # leads' thumbnails and originals (default: media/ beside leads_db)
    image_root: Path | None = None
    allow_absolute_paths: bool = False

    def __post_init__(self) -> None:
        if self.engine not in ("local", "ray"):
            raise InputError(f"engine must be 'local' or 'ray', got {self.engine!r}")
        if self.image_root is not None and self.allow_absolute_paths:
            raise InputError("image_root and allow_absolute_paths exclude each other")
        if self.batch_size < 1 or self.part_size < 1 or self.threads < 1 or self.workers < 0:
            raise InputError("batch_size, part_size and threads must be >= 1 and workers >= 0")


class ScanStateMismatchError(InputError):
    """``--out`` holds a scan of other inputs: results of two models, indexes or catalogues must
    not be merged. ``changed`` names each input that differs, as (what, then, now)."""

    WHAT = {"catalogue": "the catalogue", "model_sha256": "the model (bundle's model.onnx)",
            "index_sha256": "the reference index (e.g. `brandguard index --add` made a new generation)",
            "region_mode": "--regions", "depth": "--depth",
            "calibration_sha256": "the bundle's thresholds (calibration.json, e.g. `brandguard calibrate`)",
            "local_index_sha256": "the descriptor index", "vocabulary_sha256": "the brands' vocabulary",
            "text": "--text", "audit_share": "--audit-share"}
    #: inputs that are command-line flags: the fix can be to run with the old value
    FLAGS = ("region_mode", "depth", "text", "audit_share")

    def __init__(self, out_dir: Path, previous: Any, state: dict[str, Any]) -> None:
        prev = previous if isinstance(previous, dict) else {}
        self.changed = [(k, prev.get(k), state[k]) for k in state if prev.get(k) != state[k]]
        parts = [f"{self.WHAT.get(k, k)} changed: {_short(then)} -> {_short(now)}" for k, then, now in self.changed]
        fix = "scan into a new --out folder (the leads database keeps its leads and their status across folders)"
        if self.changed and all(k in self.FLAGS for k, _, _ in self.changed):
            fix = "run with the " + " and ".join(_flag(k, then) for k, then, _ in self.changed) + \
                  f" it was scanned with, or {fix}"
        super().__init__(f"{out_dir} holds a scan of other inputs: {'; '.join(parts) or 'unreadable state'}. "
                         f"Its results cannot be extended: {fix}")


def _flag(key: str, value: Any) -> str:
    """The command-line flag that sets a state value, as a user would type it."""
    if key == "text":
        return "--text" if value else "--no-text"
    return f"{ScanStateMismatchError.WHAT[key]} {value}"


def _short(value: Any) -> str:
    """A state value for a message: hashes shortened, the rest as written."""
    text = str(value)
    return text[:12] + "…" if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


@dataclass
class ScanSummary:
    catalogue: str
    out: str
    total: int = 0
    scanned: int = 0
    resumed: int = 0
    unchanged: int = 0
    changed: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    inconclusive_reasons: dict[str, int] = field(default_factory=dict)
    leads: int = 0
    new_leads: int = 0
    authorized: int = 0
    removed: int = 0  # listings in earlier results that left the catalogue
    lead_errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    images_per_second: float = 0.0
    model_sha256: str = ""
    index_count: int = 0
    depth: str = "fast"
    # listings that went through the local stage, and why (auto: global score, brand hint, title, audit)
    local_stage: dict[str, int] = field(default_factory=dict)
    local_share: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


# ---------------------------------------------------------------------- main side
def _write_part(parts_dir: Path, number: int, rows: list[ResultRow]) -> None:
    table = records_table(rows)
    tmp = parts_dir / f".part-{number:05d}.parquet.tmp"
    pq.write_table(table, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, parts_dir / f"part-{number:05d}.parquet")


def _existing_parts(parts_dir: Path) -> tuple[dict[str, Fingerprint], int]:
    """Fingerprint of the latest result of every listing already written, and the part count."""
    done: dict[str, Fingerprint] = {}
    parts = sorted(parts_dir.glob("part-*.parquet"))
    cols = ["listing_id", "image_bytes", "image_mtime_ns", "image_sha256"]
    for p in parts:
        t = pq.read_table(p, columns=cols).to_pydict()
        for lid, size, mtime, sha in zip(*(t[c] for c in cols)):
            done[lid] = Fingerprint(size, mtime, sha)
    return done, len(parts)


def _unchanged(row: ListingRow, old: Fingerprint, max_bytes: int, root: str | None) -> bool:
    """True when ``row``'s image is the one already scanned (cheap stat first, hash if needed).

    A row whose earlier result had no image (missing file, bad row, unreadable) is rescanned
    once it is a valid row: the file may have arrived since. A row still in error is not.
    """
    if old.sha256 is None:
        return row.error is not None
    if row.error:
        return False  # was judged, now the row itself is broken: record that
    try:
        st = os.stat(row.image)
    except OSError:
        return False  # was readable, now is not: rescan to record that
    if st.st_size == old.size and st.st_mtime_ns == old.mtime_ns:
        return True
    try:
        return fingerprint(row.image, max_bytes, root).sha256 == old.sha256
    except ImageDecodeError:
        return False  # now outside the root, not a regular file, too large...: rescan to record that


def _state(catalogue: Path, pipeline: Pipeline, opts: ScanOptions) -> dict:
    """Everything a verdict depends on besides the listing itself: a scan resumes only when all
    of it is the same, so results decided by two sets of thresholds are never merged (a bundle
    recalibrated in place keeps its model and reference index)."""
    manifest = pipeline.index.manifest if pipeline.index else None
    local = (manifest.local or {}) if manifest else {}
    vocabulary = (manifest.vocabulary or {}) if manifest else {}
    return {"catalogue": str(catalogue.resolve()), "model_sha256": pipeline.card.sha256,
            "index_sha256": manifest.index_sha256 if manifest else "",
            "region_mode": opts.region_mode, "depth": pipeline.depth.depth,
            "calibration_sha256": hashlib.sha256(pipeline.calibration.to_json().encode()).hexdigest(),
            "local_index_sha256": local.get("index_sha256", ""), "vocabulary_sha256": vocabulary.get("sha256", ""),
            "text": pipeline.depth.text, "audit_share": pipeline.depth.audit_share}


def scan_root(catalogue: str | os.PathLike[str], opts: ScanOptions) -> str | None:
    """The folder the scan reads listing images from (None: any path); the report's too."""
    return confinement_root(catalogue, opts.image_root, opts.allow_absolute_paths)


def scan(catalogue: str | os.PathLike[str], pipeline: Pipeline, out: str | os.PathLike[str],
         opts: ScanOptions = ScanOptions()) -> ScanSummary:
    """Scan ``catalogue`` into ``out``; resumes a previous, interrupted scan of the same inputs.

    Raises :class:`InputError` (before writing anything) when the catalogue as a whole is
    unusable; a bad row only ever becomes an ``inconclusive`` result.
    """
    if pipeline.index is None:
        raise InputError("the bundle has no reference index: run `brandguard index` first")
    if opts.image_root is not None and not Path(opts.image_root).is_dir():
        raise InputError(f"image root {opts.image_root} is not a folder")
    cat = Path(catalogue)
    root = scan_root(cat, opts)
    rows = list(read_catalogue(cat, opts.image_root, opts.allow_absolute_paths))
    out_dir = Path(out)
    parts_dir = out_dir / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    state = _state(cat, pipeline, opts)
    state_path = out_dir / STATE_FILE
    if state_path.exists():
        try:
            previous = json.loads(state_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{state_path} is unreadable ({exc}); remove it to restart the scan") from exc
        if previous != state:
            raise ScanStateMismatchError(out_dir, previous, state)
    else:
        atomic_write_bytes(state_path, (json.dumps(state, indent=2) + "\n").encode())
    for debris in parts_dir.glob(".part-*.tmp"):  # a part being written when a previous run was killed
        debris.unlink()
    done, n_parts = _existing_parts(parts_dir)

    pending, unchanged, changed = [], 0, 0
    for r in rows:
        old = done.get(r.listing_id)
        if old is None:
            pending.append(r)
        elif _unchanged(r, old, pipeline.limits.max_bytes, root):
            unchanged += 1
        else:
            changed += 1
            pending.append(r)
    summary = ScanSummary(catalogue=str(cat), out=str(out_dir), total=len(rows), resumed=unchanged,
                          unchanged=unchanged, changed=changed,
                          model_sha256=pipeline.card.sha256, index_count=len(pipeline.index))
    t0 = time.perf_counter()
    buffer: list[ResultRow] = []
    flagged: dict[str, ResultRow] = {}  # this run's flags, ranked and recorded without decoding
    bar = tqdm(total=len(rows), initial=summary.resumed, unit="img", desc="scan", disable=not opts.progress,
               smoothing=0.05, dynamic_ncols=True)
    media = LeadMedia(opts, pipeline, root) if opts.leads_db is not None else None
    if opts.engine == "ray":
        from brandguard.scan.ray_engine import ray_judged_batches

        batches = ray_judged_batches(pending, pipeline, opts, root)  # media made at the end, from the files
    else:  # ScanOptions admits only "local" and "ray"
        batches = _judged_batches(pending, pipeline, opts, root, media)
    routes: Counter[str] = Counter()
    for results in batches:
        buffer.extend(results)
        flagged.update((r.listing_id, r) for r in results if r.flagged)
        bar.update(len(results))
        summary.scanned += len(results)
        if pipeline.depth.depth != "fast":
            routes.update(_local_route(r) for r in results)
        while len(buffer) >= opts.part_size:
            _write_part(parts_dir, n_parts, buffer[:opts.part_size])
            n_parts += 1
            buffer = buffer[opts.part_size:]
    if buffer:
        _write_part(parts_dir, n_parts, buffer)
    bar.close()
    summary.seconds = round(time.perf_counter() - t0, 3)
    summary.depth = pipeline.depth.depth
    routes.pop("", None)
    summary.local_stage = dict(sorted(routes.items()))
    summary.local_share = round(sum(routes.values()) / summary.scanned, 4) if summary.scanned else 0.0
    summary.images_per_second = round(summary.scanned / summary.seconds, 2) if summary.seconds > 0 else 0.0
    _finalise(out_dir, parts_dir, summary, opts, {r.listing_id for r in rows}, flagged, media)
    return summary


def _local_route(row: ResultRow) -> str:
    """Why a result row went through the local stage ("" if it did not), from its evidence: the
    rows are what both engines (local processes, Ray actors) hand back."""
    depth = row.evidence.get("depth", {})
    return depth.get("why", "") if depth.get("local") else ""


def _decoded_stream(pending: list[ListingRow], pipeline: Pipeline, opts: ScanOptions,
                    root: str | None) -> Iterator[Prepared]:
    # thorough: the decode workers describe keypoints too, in parallel with the embedder
    local = pipeline.local_config if pipeline.depth.depth == "thorough" and pipeline.has_local_stage() else None
    # ... and read the photos' text (the judge step would otherwise run every OCR in this process)
    text = pipeline.text_config if local is not None and pipeline.reads_text_while_preparing() else None
    # auto: the decode workers take the keypoint glance that routes each listing
    glance = pipeline.local_config if pipeline.takes_glance() else None
    init = (pipeline.card, opts.region_mode, pipeline.limits, local, root, text, glance)
    if opts.workers <= 0:
        init_worker(*init)
        yield from map(prepare_row, pending)
        return
    # spawn: the parent already holds ONNX Runtime and FAISS thread pools that must not be forked.
    ctx = mp.get_context("spawn")
    with ctx.Pool(opts.workers, initializer=init_worker, initargs=init) as pool:
        yield from pool.imap(prepare_row, pending, chunksize=8)


def judge_chunks(prepared: Iterable[Prepared], batch_size: int,
                 byte_budget: int = JUDGE_BYTE_BUDGET) -> Iterator[list[Prepared]]:
    """Group prepared listings for one judge call: ``batch_size`` of them, fewer when their
    image bytes reach ``byte_budget``."""
    batch: list[Prepared] = []
    held = 0
    for p in prepared:
        batch.append(p)
        held += len(p.data or b"")
        if len(batch) >= batch_size or held >= byte_budget:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


def judge_prepared(pipeline: Pipeline, batch: list[Prepared]) -> list[ResultRow]:
    """Result rows for prepared listings: embed, search and decide, with the bytes the decode
    worker read as the source of the ORB check and the local stage."""
    items = [p.item for p in batch]
    verdicts = pipeline.judge(items, [p.data for p in batch],
                              [ListingHints(p.row.brand_hint, p.row.title) for p in batch])
    return [verdict_row(p.row, v, pipeline.card.sha256, p.fp) for p, v in zip(batch, verdicts)]


def _judged_batches(pending: list[ListingRow], pipeline: Pipeline, opts: ScanOptions,
                    root: str | None, media: "LeadMedia | None" = None) -> Iterable[list[ResultRow]]:
    for batch in judge_chunks(_decoded_stream(pending, pipeline, opts, root), opts.batch_size):
        rows = judge_prepared(pipeline, batch)
        if media is not None:  # a flagged listing's images are stored while its bytes are in memory
            for p, r in zip(batch, rows):
                if r.flagged and p.data is not None:
                    media.keep(r.listing_id, p.data)
        yield rows


class LeadMedia:
    """The thumbnail and original a scan-made lead stores, as a service-made lead does
    (:class:`brandguard.cases.media.MediaFiles`, content-addressed, in the folder the service
    reads). Made from the bytes the decode worker already read; a flagged row of an earlier
    run (resume) or of a Ray actor is read once more, through the scan's confined reader."""

    def __init__(self, opts: ScanOptions, pipeline: Pipeline, root: str | None) -> None:
        from brandguard.cases.media import MediaFiles, default_media_dir

        assert opts.leads_db is not None
        self.files = MediaFiles(opts.media_dir if opts.media_dir is not None else default_media_dir(opts.leads_db))
        self.limits = pipeline.limits
        self.root = root
        self.paths: dict[str, tuple[str | None, str]] = {}

    def _decode(self, data: bytes, side: int):  # noqa: ANN202 - an RGB array
        from brandguard.vision.decode import decode_image

        return decode_image(data, target_side=side, limits=self.limits).rgb

    def keep(self, listing_id: str, data: bytes) -> None:
        self.paths[listing_id] = self.files.save_listing(data, self._decode)

    def of(self, row: ResultRow) -> tuple[str | None, str | None]:
        """(thumbnail, original) of a flagged row; (None, None) when its image is gone."""
        if row.listing_id not in self.paths:
            from brandguard.inputs import read_image_file

            try:
                self.keep(row.listing_id, read_image_file(row.image, self.limits.max_bytes, self.root).data)
            except ImageDecodeError:
                return None, None
        return self.paths[row.listing_id]


def _finalise(out_dir: Path, parts_dir: Path, summary: ScanSummary, opts: ScanOptions,
              current_ids: set[str], flagged: dict[str, ResultRow], media: LeadMedia | None = None) -> None:
    """Merge parts into results (latest result per listing still in the catalogue), rank, write,
    then record leads: the results never depend on the leads store being writable.

    The merge is columnar: parts' columns are taken as written. Only flagged rows are looked
    at, this run's from ``flagged``, earlier runs' decoded from their part.
    """
    parts = sorted(parts_dir.glob("part-*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in parts]) if parts else RESULT_SCHEMA.empty_table()
    ids = table.column("listing_id").to_pylist()
    # A rescanned (changed) listing appears in an older and a newer part: keep the newest; a
    # listing that left the catalogue is dropped (its parts stay, for the record).
    last = {lid: i for i, lid in enumerate(ids)}
    summary.removed = sum(1 for lid in last if lid not in current_ids)
    table = table.take(sorted(i for lid, i in last.items() if lid in current_ids))
    verdicts = table.column("verdict").to_pylist()
    brands = table.column("brand").to_pylist()
    to_rank: list[tuple[int, ResultRow]] = []
    for i, (v, b) in enumerate(zip(verdicts, brands)):
        if v in FLAGGED and b:
            lid = table.column("listing_id")[i].as_py()
            to_rank.append((i, flagged.get(lid) or ResultRow.from_record(table.slice(i, 1).to_pylist()[0])))
    policy = _policy(opts)
    ranks = _rank([row for _, row in to_rank], policy, summary)
    lead, risk, risk_parts = [""] * len(table), [None] * len(table), [None] * len(table)
    for (i, _), rank in zip(to_rank, ranks):
        lead[i], risk[i] = rank.outcome, rank.risk
        risk_parts[i] = json.dumps(rank.risk_parts, sort_keys=True) if rank.risk_parts is not None else None
    table = pa.Table.from_arrays(table.columns + [pa.array(lead, pa.string()), pa.array(risk, pa.float64()),
                                                  pa.array(risk_parts, pa.string())], schema=FINAL_SCHEMA)
    tmp = out_dir / ".results.parquet.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, out_dir / "results.parquet")
    if opts.write_jsonl:
        tmp_j = out_dir / ".results.jsonl.tmp"
        with open(tmp_j, "w", encoding="utf-8") as f:
            for batch in table.to_batches(4096):
                for r in batch.to_pylist():
                    f.write(json.dumps(r, sort_keys=True) + "\n")
        os.replace(tmp_j, out_dir / "results.jsonl")
    summary.verdicts = dict(Counter(verdicts))
    summary.inconclusive_reasons = dict(Counter(reason for v, reason in zip(verdicts, table.column("reason").to_pylist())
                                                if v == "inconclusive"))
    if opts.leads_db is not None:
        _record_leads([(row, rank) for (_, row), rank in zip(to_rank, ranks) if rank.is_lead],
                      opts.leads_db, summary, policy, media)
    atomic_write_bytes(out_dir / "summary.json", summary.to_json().encode())


def _policy(opts: ScanOptions) -> LeadPolicy:
    """The lead policy the service applies too: brands.json, and the leads store's seller history."""
    from brandguard.cases.leads import LeadStore
    from brandguard.cases.policy import LeadPolicy

    confirmed: dict[str, int] = {}
    if opts.leads_db is not None:
        store = LeadStore(opts.leads_db)
        try:
            confirmed = store.confirmed_by_seller()
        finally:
            store.close()
    return LeadPolicy.from_file(opts.brand_info, lambda seller: confirmed.get(seller, 0))


def verdict_dict(r: ResultRow) -> dict[str, Any]:
    """A result row's verdict in the shape of ``Verdict.to_dict()``: what a lead stores, and what
    the lead policy reads, whichever path made the verdict."""
    return {"verdict": r.verdict, "brand": r.brand, "confidence": r.confidence, "score": r.score,
            "top": [h.to_dict() for h in r.top], "evidence": r.evidence, "reason": r.reason}


def _rank(rows: list[ResultRow], policy: LeadPolicy, summary: ScanSummary) -> list[LeadDecision]:
    """The lead policy's decision for each flagged row (authorised seller, or a lead with its risk)."""
    out = []
    for r in rows:
        decision = policy.decide(verdict_dict(r), r.seller_id or None, r.price)
        summary.authorized += int(decision.outcome == "authorized")
        summary.leads += int(decision.is_lead)
        out.append(decision)
    return out


def _record_leads(leads: list[tuple[ResultRow, LeadDecision]], db: Path, summary: ScanSummary,
                  policy: LeadPolicy, media: LeadMedia | None) -> None:
    """Upsert every lead; keyed by (listing_id, brand), so re-finalising after a resume or an
    incremental rescan never duplicates a lead nor resets its workflow status. A row the store
    refuses (e.g. a brand name it does not accept) is counted, not fatal. Each lead holds what a
    service-made one holds: the verdict's dict, the listing's thumbnail and original, the risk."""
    from brandguard.errors import BrandguardError
    from brandguard.cases.leads import LeadStore
    from brandguard.cases.policy import ListingFacts

    store = LeadStore(db)
    try:
        for r, decision in leads:
            thumb, original = media.of(r) if media is not None else (None, None)
            try:
                _, created = store.upsert_lead(policy.lead_input(
                    verdict_dict(r), ListingFacts(r.listing_id, r.seller_id or None, r.price), decision,
                    model_sha256=r.model_sha256 or "", image_path=thumb, original_path=original))
                summary.new_leads += int(created)
            except BrandguardError as exc:
                summary.lead_errors[type(exc).__name__] = summary.lead_errors.get(type(exc).__name__, 0) + 1
    finally:
        store.close()


__all__ = ["ScanOptions", "ScanSummary", "ScanStateMismatchError", "scan", "scan_root", "read_results",
           "verdict_dict", "RESULT_SCHEMA"]
