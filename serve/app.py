"""The brandguard HTTP service: one verified bundle, micro-batched inference, leads and complaints.

``create_app(settings)`` builds the app; nothing is loaded until its lifespan starts, which
loads ONE bundle (verified, index required), opens the leads database and starts the batcher.
Request path of a check: body size capped while it streams (413) → images decoded in a
bounded threadpool, off the event loop (undecodable → ``inconclusive`` verdict, still 200) →
bounded queue (full → 503 + Retry-After) → one batched ONNX Runtime + FAISS call → verdict.
Domain errors become HTTP answers in exactly one place, :func:`_install_error_handlers`.
Metrics are written by hand in the Prometheus text format (``prometheus_client`` is not a
dependency), from counters kept in this process.

Admission: image-judging requests (checks, complaints) pass a door in the ASGI guard, before
authentication or reading the body; at most ``Settings.inflight_limit`` are inside at once and
the rest get 503 + Retry-After straight away. Inside, images in flight (decoding, queued or in
inference) are capped by the same bound. Overload is thus shed at the door wherever the
bottleneck is (event loop, auth threadpool, decode threads or the model), and latency of the
admitted requests stays bounded instead of growing with the backlog.

Reference writes (add, remove) run on the inference thread between batches, one at a time
(an asyncio lock in this process, an ``fcntl`` lock on the bundle across worker processes);
each is one committed index generation, and the next batch searches it. A worker that sees
the manifest change under it (another worker wrote) reloads the index before its next batch.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import math
import os
import re
import time
import uuid
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, AsyncIterator, Iterator, Sequence

import anyio
from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from brandguard.errors import BrandguardError, BundleError, ImageDecodeError, InputError, ReferenceIndexError
from brandguard.cases.leads import (FLAGGED_VERDICTS, LEAD_STATUSES, TRANSITIONS, Complaint, IllegalTransitionError, Lead,
                              LeadInput, LeadStore, NotFoundError, validate_brand)
from brandguard.serve.auth import (Checker, Complainer, ComplaintDecider, ForbiddenError, LeadReader, Principal,
                                   ReferenceManager, StoreDep, UnauthenticatedError)
from brandguard.serve.batching import BatcherStoppedError, InferenceTimeoutError, MicroBatcher, QueueFullError
from brandguard.serve.evidence import EvidencePackage, safe_name
from brandguard.serve.logs import ACCESS_LOGGER
from brandguard.serve.settings import Settings

if TYPE_CHECKING:  # index.store loads FAISS: not at import time
    from brandguard.index.store import ReferenceRecord

REVIEW_PAGE = Path(__file__).with_name("review.html")
THUMB_SIDE = 480
JSON_BODY_LIMIT = 64 * 1024
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MANIFEST_NAME = "index.json"  # brandguard.index.store.MANIFEST_FILE (not imported: it pulls in FAISS)
LOCK_NAME = ".references.lock"
INCOMING_DIR = ".incoming"
REFERENCE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)+$")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
IMAGE_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}
# SQLite integers are 64-bit: larger ids or offsets are refused by validation (422), not by SQLite (500).
MAX_ID = 2**63 - 1
MAX_OFFSET = 10**9
RecordId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
access_log = logging.getLogger(ACCESS_LOGGER)
log = logging.getLogger("brandguard.serve")


class PayloadTooLargeError(BrandguardError):
    """A request body or an uploaded image is over the configured limit (HTTP 413)."""


class UnsupportedMediaError(BrandguardError):
    """The request body is neither multipart nor raw image bytes (HTTP 415)."""


class ReferenceExistsError(BrandguardError):
    """A reference with this id is already indexed: remove it first (HTTP 409)."""


def image_suffix(data: bytes) -> str | None:
    """File suffix of an image by its content (header only), None when PIL does not know it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return IMAGE_SUFFIXES.get(img.format or "")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


# ============================================================================ metrics
@dataclass
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1
        self.total += value
        self.n += 1


class Metrics:
    """Process-local counters, touched only from the event loop thread (no locks needed)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[str, _Histogram] = {}
        self.verdicts: dict[str, int] = {}
        self.leads_upserted: dict[str, int] = {"created": 0, "updated": 0}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency.setdefault(route, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def render(self, batcher: MicroBatcher | None, info: dict[str, Any],
               admission: tuple[int, int, int] | None = None) -> str:
        out: list[str] = []

        def head(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")

        def scalar(name: str, kind: str, help_: str, value: object) -> None:
            head(name, kind, help_)
            out.append(f"{name} {value}")

        head("brandguard_http_requests_total", "counter", "HTTP requests by method, route template and status.")
        for (m, r, s), v in sorted(self.requests.items()):
            out.append(f'brandguard_http_requests_total{{method="{m}",route="{_esc(r)}",status="{s}"}} {v}')
        head("brandguard_http_request_duration_seconds", "histogram", "HTTP request latency by route template.")
        for r, h in sorted(self.latency.items()):
            for b, c in zip(h.buckets, h.counts):
                out.append(f'brandguard_http_request_duration_seconds_bucket{{route="{_esc(r)}",le="{b}"}} {c}')
            out.append(f'brandguard_http_request_duration_seconds_bucket{{route="{_esc(r)}",le="+Inf"}} {h.n}')
            out.append(f'brandguard_http_request_duration_seconds_sum{{route="{_esc(r)}"}} {h.total:.6f}')
            out.append(f'brandguard_http_request_duration_seconds_count{{route="{_esc(r)}"}} {h.n}')
        head("brandguard_verdicts_total", "counter", "Verdicts returned, by kind.")
        for k, v in sorted(self.verdicts.items()):
            out.append(f'brandguard_verdicts_total{{verdict="{k}"}} {v}')
        head("brandguard_leads_upserted_total", "counter", "Leads written by checks (created or refreshed).")
        for k, v in sorted(self.leads_upserted.items()):
            out.append(f'brandguard_leads_upserted_total{{result="{k}"}} {v}')
        if batcher is not None:
            st = batcher.stats
            scalar("brandguard_batches_total", "counter", "Inference batches run.", st.batches)
            scalar("brandguard_batch_images_total", "counter", "Images judged in batches.", st.images)
            head("brandguard_batch_size", "histogram", "Images per inference batch.")
            cum = 0
            for size in sorted(st.batch_sizes):
                cum += st.batch_sizes[size]
                out.append(f'brandguard_batch_size_bucket{{le="{size}"}} {cum}')
            out.append(f'brandguard_batch_size_bucket{{le="+Inf"}} {st.batches}')
            out.append(f"brandguard_batch_size_sum {st.images}")
            out.append(f"brandguard_batch_size_count {st.batches}")
            scalar("brandguard_failed_batches_total", "counter", "Inference batches that raised.", st.failed_batches)
            scalar("brandguard_inference_seconds_total", "counter", "Time spent in batched inference.",
                   f"{st.inference_seconds:.6f}")
            scalar("brandguard_queue_rejected_total", "counter", "Images refused because the queue was full (503).",
                   st.rejected)
            scalar("brandguard_queue_depth", "gauge", "Images waiting for inference now.", batcher.depth)
            scalar("brandguard_queue_capacity", "gauge", "Inference queue bound.", batcher.queue_size)
        if admission is not None:
            inflight, limit, rejected = admission
            scalar("brandguard_inflight_images", "gauge", "Images admitted and not answered yet.", inflight)
            scalar("brandguard_inflight_limit", "gauge", "Admission bound on images in flight.", limit)
            scalar("brandguard_admission_rejected_total", "counter", "Images refused at admission (503).", rejected)
        head("brandguard_model_info", "gauge", "The loaded model and index (value is always 1).")
        labels = ",".join(f'{k}="{_esc(str(info.get(k, "")))}"' for k in
                          ("model", "model_version", "model_sha256", "index_sha256", "index_count",
                           "index_generation"))
        out.append(f"brandguard_model_info{{{labels}}} 1")
        return "\n".join(out) + "\n"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# ============================================================================ service state
@dataclass(frozen=True)
class ListingFields:
    """Optional listing data sent with an image; with a ``listing_id`` a flagged check becomes a lead."""

    listing_id: str | None = None
    seller_id: str | None = None
    price: float | None = None
    title: str | None = None  # routes auto depth when it names a registered brand
    brand_hint: str | None = None
    depth: str | None = None  # fast | thorough | auto; None = the service's default

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> "ListingFields":
        def text(name: str) -> str | None:
            v = raw.get(name)
            if v is None or str(v).strip() == "":
                return None
            v = str(v).strip()
            if len(v) > 512:
                raise InputError(f"{name} is limited to 512 characters")
            return v

        price = raw.get("price")
        if price is not None and str(price).strip() != "":
            try:
                price = float(price)
            except (TypeError, ValueError) as exc:
                raise InputError(f"price must be a number, got {price!r}") from exc
            if not math.isfinite(price) or price < 0:
                raise InputError(f"price must be a finite number >= 0, got {price}")
        else:
            price = None
        depth = text("depth")
        if depth is not None and depth not in ("fast", "thorough", "auto"):
            raise InputError(f"depth must be fast, thorough or auto, got {depth!r}")
        return cls(text("listing_id"), text("seller_id"), price, text("title"), text("brand_hint"), depth)


@dataclass(frozen=True)
class NewReference:
    """A validated request to register one reference image."""

    reference_id: str
    brand: str
    sku: str
    kind: str

    @classmethod
    def parse(cls, fields: dict[str, str], brand: str, image_sha256: str) -> "NewReference":
        validate_brand(brand)
        labels = {}
        for name in ("sku", "kind"):
            v = (fields.get(name) or "").strip()
            if len(v) > 200 or any(ord(ch) < 32 for ch in v):
                raise InputError(f"{name} must be at most 200 printable characters")
            labels[name] = v
        rid = (fields.get("reference_id") or "").strip() or f"{brand}/{image_sha256[:16]}"
        if len(rid) > 200 or not REFERENCE_ID_RE.match(rid) or not rid.startswith(f"{brand}/"):
            raise InputError(f"reference_id must look like '{brand}/<name>' (letters, digits, '_', '.', '-', '/'; "
                             f"at most 200 characters), got {rid!r}")
        return cls(rid, brand, labels["sku"], labels["kind"])


def _reference_map(pipe) -> dict[str, ReferenceRecord]:
    """id → record of every visible reference, its ``source`` made an absolute path."""
    out = {}
    for r in pipe.index.records():
        out[r.reference_id] = replace(r, source=pipe.source_path(r.source))
    return out


class Service:
    """Everything a request needs, created by the lifespan and kept on ``app.state.service``."""

    def __init__(self, settings: Settings, pipeline, store: LeadStore, batcher: MicroBatcher,
                 references: dict[str, ReferenceRecord], metrics: Metrics) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.store = store
        self.batcher = batcher
        self.references = references
        self.metrics = metrics
        self.info: dict[str, Any] = self._describe()
        self.decode_limiter = anyio.CapacityLimiter(settings.decode_threads)
        self._ref_thumbs: dict[str, bytes] = {}
        self.inflight = 0  # images admitted and not answered; event-loop thread only
        self.admission_rejected = 0
        self.at_door = 0  # image-judging requests inside the door; event-loop thread only
        self._write_lock = anyio.Lock()
        self._index_stamp = self._manifest_stamp()

    def _describe(self) -> dict[str, Any]:
        info = self.pipeline.describe()
        info.update(index_generation=self.pipeline.index.generation, device=self.pipeline.embedder.info.device,
                    requested_device=self.settings.device)
        return info

    # ------------------------------------------------------------------ the index on disk
    def _manifest_stamp(self) -> tuple[int, int, int] | None:
        """Identity of the committed manifest (it is replaced by rename, so the inode changes)."""
        try:
            st = os.stat(self.pipeline.bundle.path / MANIFEST_NAME)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    @contextmanager
    def _bundle_lock(self, exclusive: bool) -> Iterator[None]:
        """Cross-process lock on the bundle: one writer at a time; readers load whole generations."""
        try:
            f = open(self.pipeline.bundle.path / LOCK_NAME, "a+b")
        except OSError as exc:
            raise ReferenceIndexError(f"cannot lock the bundle for writing: {exc}") from exc
        with f:
            fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def reload_if_changed(self) -> None:
        """Inference thread only: load the committed index when another process changed it."""
        if self._manifest_stamp() == self._index_stamp:
            return
        from brandguard.index.store import ReferenceIndex

        try:
            with self._bundle_lock(exclusive=False):
                fresh = ReferenceIndex.load(self.pipeline.bundle.path, self.pipeline.card, threads=self.settings.threads)
                stamp = self._manifest_stamp()
        except ReferenceIndexError as exc:  # keep serving the generation we have
            log.error("index reload failed; serving generation %s", self.pipeline.index.generation,
                      extra={"error": str(exc)})
            self._index_stamp = self._manifest_stamp()
            return
        old, self.pipeline.index = self.pipeline.index, fresh
        old.close()
        self._index_stamp = stamp
        self.references = _reference_map(self.pipeline)
        self._ref_thumbs = {}
        self.info = self._describe()
        log.info("index reloaded", extra={"generation": fresh.generation, "count": len(fresh)})

    def judge_batch(self, items: Sequence[tuple]) -> list:
        """What the batcher runs: pick up other workers' index changes, then judge.

        Items are (prepared image or decode error, upload bytes): the bytes let candidates be
        verified with local features exactly as the scanner does, so both give one verdict.
        """
        self.reload_if_changed()
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

    # ------------------------------------------------------------------ references (writes)
    def _add_reference_sync(self, data: bytes, ref: NewReference, suffix: str) -> tuple[ReferenceRecord, int]:
        from brandguard.inputs import ReferenceRow
        from brandguard.references import add_references

        with self._bundle_lock(exclusive=True):
            self.reload_if_changed()
            if ref.reference_id in self.references:
                raise ReferenceExistsError(f"reference {ref.reference_id!r} already exists; delete it first")
            incoming = self.pipeline.bundle.path / "references" / INCOMING_DIR
            incoming.mkdir(parents=True, exist_ok=True)
            tmp = incoming / f"{uuid.uuid4().hex}{suffix}"
            tmp.write_bytes(data)
            try:
                report = add_references(self.pipeline, [ReferenceRow(ref.reference_id, ref.brand, str(tmp),
                                                                     ref.sku, ref.kind)])
            finally:
                tmp.unlink(missing_ok=True)
            if report.skipped:
                raise InputError(f"the reference image cannot be used: {report.skipped[0][1]}")
            self._index_stamp = self._manifest_stamp()
            (rec,) = [r for r in self.pipeline.index.records(ref.brand) if r.reference_id == ref.reference_id]
            source = replace(rec, source=self.pipeline.source_path(rec.source))
            self.references = {**self.references, ref.reference_id: source}
            self.info = self._describe()
            return source, report.generation

    async def add_reference(self, data: bytes, ref: NewReference) -> dict[str, Any]:
        """Embed and index one reference (one new generation); checks after this see it."""
        suffix = image_suffix(data)
        if suffix is None:
            raise InputError("the reference is not an image format brandguard reads (JPEG, PNG, WebP, GIF, BMP, TIFF)")
        async with self._write_lock:
            source, generation = await self.batcher.run_exclusive(lambda: self._add_reference_sync(data, ref, suffix))
        return {**_reference_view(ref.reference_id, source), "index_generation": generation,
                "index_count": self.info.get("index_count"), "sha256": hashlib.sha256(data).hexdigest()}

    def _remove_reference_sync(self, reference_id: str, brand: str | None) -> int:
        with self._bundle_lock(exclusive=True):
            self.reload_if_changed()
            ref = self.references.get(reference_id)
            if ref is None or (brand is not None and ref.brand != brand):
                raise NotFoundError(f"reference {reference_id!r} not found")
            generation = self.pipeline.index.remove([reference_id])
            self._index_stamp = self._manifest_stamp()
            self.references = {k: v for k, v in self.references.items() if k != reference_id}
            self._ref_thumbs.pop(reference_id, None)
            self.info = self._describe()
            return generation

    async def remove_reference(self, reference_id: str, brand: str | None) -> dict[str, Any]:
        """Remove one reference (one new generation). Another brand's id is reported as missing."""
        ref = self.references.get(reference_id)
        if ref is None or (brand is not None and ref.brand != brand):
            raise NotFoundError(f"reference {reference_id!r} not found")
        async with self._write_lock:
            generation = await self.batcher.run_exclusive(lambda: self._remove_reference_sync(reference_id, brand))
        return {"reference_id": reference_id, "brand": ref.brand, "deleted": True, "index_generation": generation,
                "index_count": self.info.get("index_count")}

    # ------------------------------------------------------------------ checking
    def _prepare(self, data: bytes, depth: str):
        """Decode (and, in thorough depth, describe keypoints) in a decode thread."""
        try:
            return self.pipeline.prepare(data, local=depth == "thorough")
        except ImageDecodeError as exc:
            return exc

    async def judge_bytes(self, images: Sequence[bytes], listings: Sequence[ListingFields] | None = None) -> list:
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
            self.metrics.verdicts[v.verdict] = self.metrics.verdicts.get(v.verdict, 0) + 1
        return verdicts

    def _save_thumbnail(self, data: bytes) -> str | None:
        """A JPEG thumbnail of a flagged upload, named by content hash; None when it cannot be made."""
        from PIL import Image

        from brandguard.vision.decode import DecodeLimits, decode_image

        media = self.settings.media_path
        path = media / f"{hashlib.sha256(data).hexdigest()}.jpg"
        if path.is_file():
            return str(path)
        try:
            decoded = decode_image(data, target_side=THUMB_SIDE,
                                   limits=DecodeLimits(max_pixels=self.settings.max_pixels,
                                                       max_bytes=self.settings.max_upload_bytes))
        except ImageDecodeError:
            return None
        img = Image.fromarray(decoded.rgb)
        img.thumbnail((THUMB_SIDE, THUMB_SIDE))
        media.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        img.save(tmp, "JPEG", quality=85)
        tmp.replace(path)
        return str(path)

    def save_original(self, data: bytes) -> str:
        """The upload's exact bytes under ``media/originals/<sha256><ext>`` (evidence must be unaltered)."""
        folder = self.settings.media_path / "originals"
        path = folder / f"{hashlib.sha256(data).hexdigest()}{image_suffix(data) or '.bin'}"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return str(path)

    def _record_lead(self, data: bytes, verdict, listing: ListingFields, brand: str) -> tuple[Lead, bool]:
        top = verdict.top[0].reference_id if verdict.top else None
        lead, created = self.store.upsert_lead(LeadInput(
            listing_id=listing.listing_id or "", brand=brand, verdict=verdict.verdict,
            confidence=float(verdict.confidence), score=verdict.score, reference_id=top,
            image_path=self._save_thumbnail(data), seller_id=listing.seller_id, price=listing.price,
            evidence=verdict.to_dict(), model_sha256=self.info.get("model_sha256", ""),
            original_path=self.save_original(data)))
        return lead, created

    async def maybe_record(self, data: bytes, verdict, listing: ListingFields, brand: str | None) -> int | None:
        """Upsert a lead when the verdict flags ``brand`` (the verdict's own brand when None)."""
        brand = brand or verdict.brand
        if not listing.listing_id or verdict.verdict not in FLAGGED_VERDICTS or verdict.brand != brand:
            return None
        lead, created = await anyio.to_thread.run_sync(self._record_lead, data, verdict, listing, brand)
        self.metrics.leads_upserted["created" if created else "updated"] += 1
        return lead.id

    async def check(self, images: Sequence[bytes], listings: Sequence[ListingFields],
                    principal: Principal) -> list[dict[str, Any]]:
        verdicts = await self.judge_bytes(images, listings)
        record = principal.can("record_leads")
        out = []
        for data, v, listing in zip(images, verdicts, listings):
            lead_id = await self.maybe_record(data, v, listing, None) if record else None
            out.append({"listing_id": listing.listing_id, **scrub_verdict(v.to_dict(), principal.row_scope()),
                        "lead_id": lead_id, "model_sha256": self.info.get("model_sha256")})
        return out

    # ------------------------------------------------------------------ evidence packages
    def _media_file(self, path: str | None) -> Path | None:
        """A stored media path, only if it lies inside the media folder (never follow a stray path)."""
        if not path:
            return None
        p = Path(path).resolve()
        return p if self.settings.media_path.resolve() in p.parents else None

    def _add_references(self, pkg: EvidencePackage, brand: str, verdict: dict[str, Any] | None,
                        first: str | None) -> list[dict[str, Any]]:
        """The matched references of ``brand`` (the lead's reference first, then the verdict's top hits)."""
        wanted = [first] if first else []
        for hit in (verdict or {}).get("top") or []:
            if isinstance(hit, dict) and hit.get("brand") == brand and hit.get("reference_id") not in wanted:
                wanted.append(hit.get("reference_id"))
        out = []
        for rid in wanted[:5]:
            ref = self.references.get(rid)
            entry = {"reference_id": rid, "score": next((h.get("score") for h in (verdict or {}).get("top") or []
                                                         if isinstance(h, dict) and h.get("reference_id") == rid),
                                                        None)}
            if ref is None or ref.brand != brand:
                pkg.missing.append({"file": f"references/{safe_name(rid)}", "what": f"reference {rid}",
                                    "reason": "no longer indexed"})
            else:
                name = f"references/{safe_name(rid)}{Path(ref.source).suffix.lower()}"
                if pkg.add_file(name, ref.source, f"reference {rid}"):
                    entry.update(file=name, sku=ref.sku, kind=ref.kind)
            out.append(entry)
        return out

    def _versions(self, model_at_check: str | None) -> dict[str, Any]:
        from brandguard import __version__

        keys = ("model", "model_version", "model_sha256", "embedding_dim", "providers", "index_factory",
                "index_count", "index_sha256", "index_generation", "calibration", "region_mode", "depth",
                "local_features", "local_factory", "local_descriptors", "deep_calibration")
        return {"brandguard": __version__, "model_sha256_at_check": model_at_check,
                "serving_now": {k: self.info.get(k) for k in keys}}

    def lead_evidence(self, lead: Lead) -> bytes:
        """Zip of one lead: listing image (original bytes and thumbnail), references, verdict, versions."""
        pkg = EvidencePackage({"type": "lead", "id": lead.id, "brand": lead.brand, "listing_id": lead.listing_id})
        original = self._media_file(lead.original_path)
        pkg.add_file(f"listing/original{original.suffix if original else ''}", original, "listing upload (original)")
        pkg.add_file("listing/thumbnail.jpg", self._media_file(lead.image_path), "listing thumbnail")
        refs = self._add_references(pkg, lead.brand, lead.evidence, lead.reference_id)
        pkg.add_json("verdict.json", scrub_verdict(lead.evidence, lead.brand))
        view = {k: v for k, v in lead.to_dict().items() if k not in ("image_path", "original_path", "evidence")}
        pkg.add_json("lead.json", {**view, "matched_references": refs,
                                   "history": [f.to_dict() for f in self.store.history(lead.id)]})
        pkg.add_json("versions.json", self._versions(lead.model_sha256))
        return pkg.to_zip()

    def complaint_evidence(self, complaint: Complaint) -> bytes:
        """Zip of one complaint: the uploaded image, verdict, references, linked lead, versions."""
        pkg = EvidencePackage({"type": "complaint", "id": complaint.id, "brand": complaint.brand,
                               "listing_id": complaint.listing_id})
        upload = self._media_file(complaint.image_path)
        pkg.add_file(f"listing/original{upload.suffix if upload else ''}", upload, "complained-about upload")
        lead = None
        if complaint.lead_id is not None:
            try:
                lead = self.store.get_lead(complaint.lead_id, brand=complaint.brand)
            except NotFoundError:
                lead = None
        refs = self._add_references(pkg, complaint.brand, complaint.verdict, lead.reference_id if lead else None)
        pkg.add_json("verdict.json", scrub_verdict(complaint.verdict, complaint.brand))
        view = {k: v for k, v in complaint.to_dict().items() if k not in ("image_path", "verdict")}
        pkg.add_json("complaint.json", {**view, "matched_references": refs,
                                        "lead_status": lead.status if lead else None})
        pkg.add_json("versions.json", self._versions((complaint.verdict or {}).get("model_sha256")))
        return pkg.to_zip()

    # ------------------------------------------------------------------ reference thumbnails
    def reference_thumbnail(self, reference_id: str) -> bytes:
        if reference_id in self._ref_thumbs:
            return self._ref_thumbs[reference_id]
        from PIL import Image

        from brandguard.vision.decode import decode_image

        ref = self.references.get(reference_id)
        if ref is None or not ref.source or not Path(ref.source).is_file():
            raise NotFoundError(f"no image for reference {reference_id!r}")
        try:
            decoded = decode_image(ref.source, target_side=THUMB_SIDE)
        except ImageDecodeError as exc:
            raise NotFoundError(f"reference {reference_id!r} image unreadable: {exc.reason}") from exc
        img = Image.fromarray(decoded.rgb)
        img.thumbnail((THUMB_SIDE, THUMB_SIDE))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        if len(self._ref_thumbs) < 1024:
            self._ref_thumbs[reference_id] = buf.getvalue()
        return buf.getvalue()


def get_service(request: Request) -> Service:
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise BatcherStoppedError("service is not ready")
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


# ============================================================================ request bodies
class FeedbackIn(BaseModel):
    status: str = Field(description=f"one of {LEAD_STATUSES}")
    note: str = Field(default="", max_length=4000)


class DecisionIn(BaseModel):
    verdict: str = Field(description="copy | knockoff | clear | genuine | other human decision")
    note: str = Field(default="", max_length=4000)


@dataclass(frozen=True)
class Uploads:
    images: list[bytes]
    fields: dict[str, str]


async def read_uploads(request: Request, settings: Settings, max_files: int) -> Uploads:
    """Images from a multipart form (any file parts) or from a raw body; form fields alongside.

    Each image is capped at ``max_upload_bytes`` (413); the whole body is capped while it
    streams by :class:`_Guard`, so an oversized upload is refused before it is buffered.
    """
    ctype = request.headers.get("content-type", "").lower()
    limit = settings.max_upload_bytes
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=max_files, max_fields=32, max_part_size=256 * 1024)
        try:
            images, fields = [], {}
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read(limit + 1)
                    if len(data) > limit:
                        raise PayloadTooLargeError(f"image {value.filename or key!r} is over {limit} bytes")
                    images.append(data)
                else:
                    fields[key] = value
        finally:
            await form.close()
        return Uploads(images, fields)
    if ctype.startswith("application/x-www-form-urlencoded") or ctype.startswith("application/json"):
        raise UnsupportedMediaError("send the image as multipart/form-data or as the raw request body")
    data = await request.body()
    if len(data) > limit:
        raise PayloadTooLargeError(f"image is {len(data)} bytes, over {limit}")
    return Uploads([data] if data else [], {})


# ============================================================================ ASGI guard: size + metrics
_DOOR_PATHS = frozenset({"/v1/check", "/v1/check/batch", "/v1/complaints"})


class _Guard:
    """Pure ASGI middleware: admission at the door, body caps while they stream, metrics, access log.

    The cap is raised from ``receive`` inside the endpoint, so the one error handler turns it
    into a 413 like every other domain error.
    """

    def __init__(self, app, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics

    def _limit(self, path: str) -> int:
        if path.startswith("/v1/check/batch"):
            return self.settings.body_limit(self.settings.max_files)
        if path.startswith("/v1/check") or path in ("/v1/complaints", "/v1/references"):
            return self.settings.body_limit(1)
        return JSON_BODY_LIMIT

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope.get("path", ""))
        headers = scope.get("headers", ())
        declared = next((v for k, v in headers if k == b"content-length"), None)
        given = next((v.decode("latin-1") for k, v in headers if k == b"x-request-id"), "")
        # A caller's request id is kept when it is safe to echo and log; otherwise we make one.
        request_id = given if REQUEST_ID_RE.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        seen = 0
        status = 500
        t0 = time.perf_counter()
        app_state = getattr(scope.get("app"), "state", None)
        service: Service | None = getattr(app_state, "service", None)
        gated = service is not None and scope.get("method") == "POST" and scope.get("path") in _DOOR_PATHS
        inside = False

        def leave() -> None:
            nonlocal inside
            if inside and service is not None:
                service.at_door -= 1
                inside = False

        async def guarded_receive():
            nonlocal seen
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise PayloadTooLargeError(f"request body of {int(declared)} bytes is over {limit}")
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLargeError(f"request body is over {limit} bytes")
            return message

        async def counting_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # The work is done once the answer starts: leave the door now, so a client that sends
                # its next request as soon as it reads this one is not counted twice.
                leave()
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"x-request-id", request_id.encode("latin-1"))]}
            await send(message)

        try:
            if gated and service.at_door >= self.settings.inflight_limit:
                # Refused before auth and before the body is read: the cheapest possible answer.
                service.admission_rejected += 1
                await _send_error(counting_send, QueueFullError(1, 0, self.settings.retry_after_s), self.settings)
                return
            if gated:
                service.at_door += 1
                inside = True
            try:
                await self.app(scope, guarded_receive, counting_send)
            finally:
                leave()
        finally:
            seconds = time.perf_counter() - t0
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(scope.get("method", ""), name, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                principal = scope.get("state", {}).get("principal")
                client = scope.get("client") or ("", 0)
                access_log.info("request", extra={
                    "request_id": request_id, "method": scope.get("method", ""), "path": scope.get("path", ""),
                    "route": name, "status": status, "latency_ms": round(seconds * 1000, 3), "bytes_in": seen,
                    "client": client[0], "key_id": getattr(principal, "key_id", None)})


# ============================================================================ errors, in one place
_ERRORS: tuple[tuple[type[BaseException], int, str], ...] = (
    (UnauthenticatedError, 401, "unauthenticated"),
    (ForbiddenError, 403, "forbidden"),
    (NotFoundError, 404, "not_found"),
    (IllegalTransitionError, 409, "illegal_transition"),
    (ReferenceExistsError, 409, "conflict"),
    (PayloadTooLargeError, 413, "payload_too_large"),
    (UnsupportedMediaError, 415, "unsupported_media_type"),
    (QueueFullError, 503, "overloaded"),
    (BatcherStoppedError, 503, "not_ready"),
    (InferenceTimeoutError, 504, "inference_timeout"),
    (InputError, 400, "bad_request"),
    (BundleError, 503, "bundle_error"),
    (ReferenceIndexError, 503, "index_error"),
    (BrandguardError, 500, "internal_error"),
)


def error_status(exc: BaseException) -> tuple[int, str]:
    for cls, status, code in _ERRORS:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal_error"


def error_response(exc: BaseException, settings: Settings) -> JSONResponse:
    """The JSON answer for a domain error: status and code from :data:`_ERRORS`, plus its headers."""
    status, code = error_status(exc)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status == 503:
        headers["Retry-After"] = str(getattr(exc, "retry_after_s", settings.retry_after_s))
    if status == 413:
        headers["Connection"] = "close"  # the rest of the body was not read
    return JSONResponse({"error": code, "detail": str(exc)}, status_code=status, headers=headers)


async def _send_error(send, exc: BaseException, settings: Settings) -> None:
    """Send :func:`error_response` straight from ASGI middleware (outside FastAPI's handlers)."""
    response = error_response(exc, settings)
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def _install_error_handlers(app: FastAPI, settings: Settings) -> None:
    async def domain_error(request: Request, exc: BrandguardError) -> JSONResponse:
        if error_status(exc)[0] >= 500 and error_status(exc)[0] not in (503, 504):
            log.error("request failed", exc_info=exc, extra={"request_id": request.scope.get("state", {})
                                                             .get("request_id"), "path": request.url.path})
        return error_response(exc, settings)

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": "http_error", "detail": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse({"error": "validation_error", "detail": errs}, status_code=422)

    app.add_exception_handler(BrandguardError, domain_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


# ============================================================================ the app
def _lead_view(lead: Lead, principal: Principal) -> dict[str, Any]:
    d = lead.to_dict()
    if principal.row_scope() is not None and isinstance(d["evidence"].get("top"), list):
        # A brand sees its own references among the matches, not other brands' reference ids.
        d["evidence"] = {**d["evidence"], "top": [h for h in d["evidence"]["top"]
                                                  if isinstance(h, dict) and h.get("brand") == lead.brand]}
    d.pop("image_path", None)  # server paths: clients fetch /v1/leads/{id}/image instead
    d.pop("original_path", None)
    d["evidence_url"] = f"/v1/leads/{lead.id}/evidence.zip"
    d["allowed_next"] = sorted(TRANSITIONS[lead.status])
    d["image_url"] = f"/v1/leads/{lead.id}/image" if lead.image_path else None
    d["reference_image_url"] = f"/v1/references/{lead.reference_id}/image" if lead.reference_id else None
    return d


def _multipart(fields: dict[str, dict], *, files: int = 1, raw: bool = False, required: tuple[str, ...] = ()) -> dict:
    """OpenAPI for endpoints that read uploads themselves (streamed, size-capped), so clients and
    schema-driven tools know the body: a multipart form, and for raw-body endpoints an image."""
    props = {"file": {"type": "string", "format": "binary"} if files == 1 else
             {"type": "array", "items": {"type": "string", "format": "binary"}, "maxItems": files}, **fields}
    content: dict[str, Any] = {"multipart/form-data": {"schema": {"type": "object", "properties": props,
                                                                   "required": ["file", *required]}}}
    if raw:
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}


_LISTING_FIELDS = {"listing_id": {"type": "string", "maxLength": 512}, "seller_id": {"type": "string", "maxLength": 512},
                   "price": {"type": "number", "minimum": 0}, "title": {"type": "string", "maxLength": 512},
                   "brand_hint": {"type": "string", "maxLength": 512},
                   "depth": {"type": "string", "enum": ["fast", "thorough", "auto"]}}


def scrub_verdict(d: dict[str, Any], brand: str | None) -> dict[str, Any]:
    """What a ``brand:<name>`` key may see of a verdict: its own brand's matches only.

    Checks search every registered brand; another brand's reference ids, SKUs and scores are
    that brand's business. A verdict for another brand reads as ``clear`` for this brand.
    """
    if brand is None or not isinstance(d, dict) or "verdict" not in d:
        return d
    out = dict(d)
    out["top"] = [h for h in d.get("top") or [] if isinstance(h, dict) and h.get("brand") == brand]
    if d.get("brand") not in (None, brand):
        out.update(verdict="clear", brand=None, score=None, confidence=1.0,
                   evidence={"note": "no match among this brand's references"})
    elif d.get("brand") is None and isinstance(d.get("evidence"), dict):
        # a clear verdict's evidence describes its best candidate, whichever brand that was
        out["evidence"] = {k: v for k, v in d["evidence"].items() if k not in _CANDIDATE_EVIDENCE}
        out["score"] = None
    return out


# Evidence keys that describe a verdict's best candidate (scrubbed from clear verdicts for brand keys).
_CANDIDATE_EVIDENCE = frozenset({"local", "match_box", "geometry", "global_score", "fused_probability", "cosine",
                                 "region", "region_box", "decided_by", "stage"})


def _complaint_view(c: Complaint, principal: Principal | None = None) -> dict[str, Any]:
    d = c.to_dict()
    if principal is not None and principal.row_scope() is not None:
        d["verdict"] = scrub_verdict(d.get("verdict"), principal.row_scope())
    d.pop("image_path", None)  # a server path
    d["evidence_url"] = f"/v1/complaints/{c.id}/evidence.zip"
    return d


def _reference_view(reference_id: str, ref: ReferenceRecord) -> dict[str, Any]:
    return {"reference_id": reference_id, "brand": ref.brand, "sku": ref.sku, "kind": ref.kind,
            "image_url": f"/v1/references/{reference_id}/image"}


def _zip_response(data: bytes, filename: str) -> Response:
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "Cache-Control": "private, no-store"})


def create_app(settings: Settings) -> FastAPI:
    """Build the service for ``settings``. Loading happens in the lifespan, not here."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import cv2

        from brandguard.vision.decode import DecodeLimits
        from brandguard.engine.pipeline import DepthOptions, Pipeline

        cv2.setNumThreads(settings.threads)
        limits = DecodeLimits(max_pixels=settings.max_pixels, max_bytes=settings.max_upload_bytes)

        def load():
            pipe = Pipeline.from_bundle(settings.bundle_path(), threads=settings.threads, device=settings.device,
                                        region_mode=settings.region_mode, require_index=True, limits=limits,
                                        depth=DepthOptions(settings.depth, settings.audit_share))
            # Sources are stored relative to the bundle (copied in at index time) or absolute.
            return pipe, _reference_map(pipe)

        pipeline, references = await anyio.to_thread.run_sync(load)
        store = await anyio.to_thread.run_sync(LeadStore, settings.leads_db)
        service: Service | None = None

        def judge(items):
            assert service is not None  # the batcher starts taking work only after the service exists
            return service.judge_batch(items)

        batcher = MicroBatcher(judge, max_batch=settings.max_batch,
                               window_s=settings.batch_window_ms / 1000.0, queue_size=settings.queue_size,
                               retry_after_s=settings.retry_after_s)
        service = Service(settings, pipeline, store, batcher, references, metrics)
        await batcher.start()
        log.info("ready", extra={k: service.info.get(k) for k in ("model", "model_sha256", "index_count",
                                                                    "index_generation", "providers", "device")})
        app.state.service = service
        app.state.store = store
        try:
            yield
        finally:
            app.state.service = None
            await batcher.stop()
            store.close()
            pipeline.index.close()

    app = FastAPI(title="brandguard", version=_version(), lifespan=lifespan,
                  description="Finds copies and knockoffs of brand imagery in marketplace listing photos.")
    app.state.service = None
    app.state.settings = settings
    app.state.metrics = metrics
    _install_error_handlers(app, settings)
    app.add_middleware(_Guard, settings=settings, metrics=metrics)

    # ------------------------------------------------------------------ probes
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers. Says nothing about the model (that is /readyz)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: the bundle is loaded and the batcher runs; reports model and index versions."""
        service: Service | None = request.app.state.service
        if service is None or not service.batcher.running:
            return JSONResponse({"status": "not_ready"}, status_code=503,
                                headers={"Retry-After": str(settings.retry_after_s)})
        return JSONResponse({"status": "ready", **service.info, "queue_depth": service.batcher.depth,
                             "queue_size": service.batcher.queue_size, "max_batch": service.batcher.max_batch,
                             "inflight": service.inflight, "at_door": service.at_door,
                             "inflight_limit": settings.inflight_limit})

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics_endpoint(request: Request) -> PlainTextResponse:
        service: Service | None = request.app.state.service
        text = metrics.render(service.batcher if service else None, service.info if service else {},
                              (service.inflight, settings.inflight_limit, service.admission_rejected)
                              if service else None)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    # ------------------------------------------------------------------ checks
    @app.post("/v1/check", tags=["check"], openapi_extra=_multipart(_LISTING_FIELDS, raw=True))
    async def check(request: Request, principal: Checker, service: ServiceDep) -> dict[str, Any]:
        """Judge one image: multipart ``file`` (+ listing_id, seller_id, price fields) or the raw body
        (+ the same as query parameters). Scanner and admin keys with a listing_id record leads."""
        up = await read_uploads(request, settings, max_files=1)
        if len(up.images) != 1:
            raise InputError("send exactly one image (multipart file part, or the raw request body)")
        listing = ListingFields.parse({**dict(request.query_params), **up.fields})
        return (await service.check(up.images, [listing], principal))[0]

    @app.post("/v1/check/batch", tags=["check"], openapi_extra=_multipart(
        {"listings": {"type": "string", "description": "JSON array of {listing_id, seller_id, price}"}},
        files=settings.max_files))
    async def check_batch(request: Request, principal: Checker, service: ServiceDep) -> dict[str, Any]:
        """Judge several images (multipart file parts, in order). Optional form field ``listings``:
        a JSON array of {listing_id, seller_id, price}, aligned with the files."""
        up = await read_uploads(request, settings, max_files=settings.max_files)
        if not up.images:
            raise InputError("send at least one image as a multipart file part")
        listings = [ListingFields()] * len(up.images)
        if up.fields.get("listings"):
            try:
                raw = json.loads(up.fields["listings"])
            except json.JSONDecodeError as exc:
                raise InputError(f"listings is not valid JSON: {exc}") from exc
            if not isinstance(raw, list) or len(raw) != len(up.images) or not all(isinstance(r, dict) for r in raw):
                raise InputError(f"listings must be a JSON array of {len(up.images)} objects, one per file")
            listings = [ListingFields.parse(r) for r in raw]
        return {"results": await service.check(up.images, listings, principal)}

    # ------------------------------------------------------------------ leads
    @app.get("/v1/leads", tags=["leads"])
    def list_leads(principal: LeadReader, store: StoreDep, brand: str | None = None, status: str | None = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                   offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict[str, Any]:
        """Leads of a brand (a brand key: its own; admin: any or all), newest activity first."""
        scope = principal.brand_scope(brand)
        leads = store.list_leads(brand=scope, status=status, limit=limit, offset=offset)
        return {"brand": scope, "status": status, "count": len(leads), "leads": [_lead_view(x, principal) for x in leads]}

    @app.get("/v1/leads/{lead_id}", tags=["leads"])
    def get_lead(lead_id: RecordId, principal: LeadReader, store: StoreDep) -> dict[str, Any]:
        lead = store.get_lead(lead_id, brand=principal.row_scope())
        return {**_lead_view(lead, principal), "history": [f.to_dict() for f in store.history(lead.id)]}

    @app.post("/v1/leads/{lead_id}/feedback", tags=["leads"])
    def lead_feedback(lead_id: RecordId, body: FeedbackIn, principal: LeadReader, store: StoreDep) -> dict[str, Any]:
        """Move a lead along its lifecycle; illegal moves answer 409 with the allowed ones."""
        lead = store.transition(lead_id, body.status, note=body.note, who=f"{principal.role}/{principal.key_id}",
                                brand=principal.row_scope())
        return {**_lead_view(lead, principal), "history": [f.to_dict() for f in store.history(lead.id)]}

    @app.get("/v1/leads/{lead_id}/image", tags=["leads"])
    def lead_image(lead_id: RecordId, principal: LeadReader, store: StoreDep) -> Response:
        lead = store.get_lead(lead_id, brand=principal.row_scope())
        media = settings.media_path.resolve()
        path = Path(lead.image_path).resolve() if lead.image_path else None
        if path is None or media not in path.parents or not path.is_file():
            raise NotFoundError(f"lead {lead_id} has no stored image")
        return Response(path.read_bytes(), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/v1/leads/{lead_id}/evidence.zip", tags=["leads"], response_class=Response,
             responses={200: {"content": {"application/zip": {}}}})
    async def lead_evidence(lead_id: RecordId, principal: LeadReader, service: ServiceDep) -> Response:
        """Evidence package of a lead (zip; ``manifest.json`` holds the sha256 of every file)."""
        lead = await anyio.to_thread.run_sync(lambda: service.store.get_lead(lead_id, brand=principal.row_scope()))
        data = await anyio.to_thread.run_sync(service.lead_evidence, lead)
        return _zip_response(data, f"brandguard-lead-{lead.id}-evidence.zip")

    # ------------------------------------------------------------------ references
    @app.get("/v1/references/{reference_id:path}/image", tags=["references"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    def reference_image(reference_id: str, principal: LeadReader, service: ServiceDep) -> Response:
        ref = service.references.get(reference_id)
        if ref is None or (principal.row_scope() is not None and ref.brand != principal.row_scope()):
            raise NotFoundError(f"reference {reference_id!r} not found")
        return Response(service.reference_thumbnail(reference_id), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/v1/references", tags=["references"])
    def list_references(principal: ReferenceManager, service: ServiceDep, brand: str | None = None,
                        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
                        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict[str, Any]:
        """Indexed references of a brand (a brand key: its own; admin: any or all), by id."""
        scope = principal.brand_scope(brand)
        refs = service.references  # one snapshot: writers replace the mapping, never mutate it
        ids = sorted(k for k, v in refs.items() if scope is None or v.brand == scope)
        return {"brand": scope, "total": len(ids), "index_generation": service.info.get("index_generation"),
                "references": [_reference_view(k, refs[k]) for k in ids[offset:offset + limit]]}

    @app.post("/v1/references", tags=["references"], status_code=201, openapi_extra=_multipart(
        {"brand": {"type": "string", "maxLength": 100}, "sku": {"type": "string", "maxLength": 200},
         "kind": {"type": "string", "maxLength": 200}, "reference_id": {"type": "string", "maxLength": 200}}))
    async def add_reference(request: Request, principal: ReferenceManager, service: ServiceDep) -> dict[str, Any]:
        """Register a reference image (multipart: ``file``, ``brand`` [admin; a brand key's own by default],
        ``sku``, ``kind``, optional ``reference_id`` = ``<brand>/<name>``). Embedded and indexed durably
        (one index generation) before the answer; checks after it see the new reference."""
        up = await read_uploads(request, settings, max_files=1)
        if len(up.images) != 1:
            raise InputError("send exactly one image as the multipart 'file' part")
        brand = principal.brand_scope(up.fields.get("brand") or None)
        if brand is None:
            raise InputError("an admin must name the brand of the reference")
        ref = NewReference.parse(up.fields, brand, hashlib.sha256(up.images[0]).hexdigest())
        return await service.add_reference(up.images[0], ref)

    @app.delete("/v1/references/{reference_id:path}", tags=["references"])
    async def delete_reference(reference_id: str, principal: ReferenceManager, service: ServiceDep) -> dict[str, Any]:
        """Remove a reference from the index (one generation). Another brand's id answers 404."""
        return await service.remove_reference(reference_id, principal.row_scope())

    # ------------------------------------------------------------------ complaints
    @app.post("/v1/complaints", tags=["complaints"], status_code=201, openapi_extra=_multipart(
        {**_LISTING_FIELDS, "brand": {"type": "string", "maxLength": 100}}, required=("listing_id",)))
    async def complain(request: Request, principal: Complainer, service: ServiceDep) -> dict[str, Any]:
        """A brand reports a listing (multipart: file, listing_id [, seller_id, price]; admin adds brand).
        The image is checked at once; a decisive verdict settles the complaint immediately, a flagged
        one for the complaining brand also becomes (or refreshes) a lead."""
        up = await read_uploads(request, settings, max_files=1)
        if len(up.images) != 1:
            raise InputError("send exactly one image as the multipart 'file' part")
        fields = {**dict(request.query_params), **up.fields}
        listing = ListingFields.parse(fields)
        if not listing.listing_id:
            raise InputError("a complaint needs a listing_id")
        brand = principal.brand_scope(fields.get("brand") or None)
        if brand is None:
            raise InputError("an admin complaint must name the brand")
        # a complaint names the brand and is worth every stage: thorough unless the request says otherwise
        (verdict,) = await service.judge_bytes(up.images, [replace(listing, depth=listing.depth or "thorough",
                                                                   brand_hint=brand)])
        lead_id = await service.maybe_record(up.images[0], verdict, listing, brand)
        image_path = await anyio.to_thread.run_sync(service.save_original, up.images[0])
        record = {**verdict.to_dict(), "model_sha256": service.info.get("model_sha256"),
                  "index_generation": service.info.get("index_generation")}
        complaint = await anyio.to_thread.run_sync(
            lambda: service.store.add_complaint(brand, listing.listing_id or "", record,
                                                decided=verdict.verdict != "inconclusive", lead_id=lead_id,
                                                image_path=image_path))
        return _complaint_view(complaint, principal)

    @app.get("/v1/complaints/report", tags=["complaints"])
    def complaints_report(principal: Complainer, store: StoreDep, brand: str | None = None,
                          since_hours: Annotated[float | None, Query(gt=0)] = None) -> dict[str, Any]:
        """Share of complaints decided within 24 h (brand keys: their own brand)."""
        scope = principal.brand_scope(brand)
        since = time.time() - since_hours * 3600 if since_hours else None
        return store.complaint_report(brand=scope, since=since).to_dict()

    @app.get("/v1/complaints/{complaint_id}", tags=["complaints"])
    def get_complaint(complaint_id: RecordId, principal: Complainer, store: StoreDep) -> dict[str, Any]:
        return _complaint_view(store.get_complaint(complaint_id, brand=principal.row_scope()), principal)

    @app.get("/v1/complaints/{complaint_id}/evidence.zip", tags=["complaints"], response_class=Response,
             responses={200: {"content": {"application/zip": {}}}})
    async def complaint_evidence(complaint_id: RecordId, principal: Complainer, service: ServiceDep) -> Response:
        """Evidence package of a complaint (zip with a sha256 manifest), brand-scoped like the complaint."""
        complaint = await anyio.to_thread.run_sync(
            lambda: service.store.get_complaint(complaint_id, brand=principal.row_scope()))
        data = await anyio.to_thread.run_sync(service.complaint_evidence, complaint)
        return _zip_response(data, f"brandguard-complaint-{complaint.id}-evidence.zip")

    @app.post("/v1/complaints/{complaint_id}/decision", tags=["complaints"])
    def decide_complaint(complaint_id: RecordId, body: DecisionIn, principal: ComplaintDecider,
                         store: StoreDep) -> dict[str, Any]:
        """A reviewer settles a complaint the automatic check left inconclusive (admin only)."""
        return _complaint_view(store.decide_complaint(complaint_id, {"verdict": body.verdict, "note": body.note,
                                                                     "decided_by": principal.key_id}))

    # ------------------------------------------------------------------ review page
    @app.get("/review", tags=["review"], response_class=HTMLResponse)
    def review() -> HTMLResponse:
        """Static page (no data inside): it asks for a key and calls the API from the browser."""
        return HTMLResponse(REVIEW_PAGE.read_text(encoding="utf-8"),
                            headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; "
                                     "style-src 'unsafe-inline'; script-src 'unsafe-inline'",
                                     "Cache-Control": "no-cache"})

    return app


def _version() -> str:
    from brandguard import __version__

    return __version__


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory brandguard.serve.app:app_from_env`` (settings from BRANDGUARD_*)."""
    return create_app(Settings())
