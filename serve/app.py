"""The brandguard HTTP service: one verified bundle, micro-batched inference, leads and complaints.

``create_app(settings)`` builds the app; nothing is loaded until its lifespan starts, which
loads ONE bundle (verified, index required), opens the leads database and starts the batcher.
Request path of a check: body size capped while it streams (413) → images decoded in a
bounded threadpool, off the event loop (undecodable → ``inconclusive`` verdict, still 200) →
bounded queue (full → 503 + Retry-After) → one batched ONNX Runtime + FAISS call → verdict.
Domain errors become HTTP answers in exactly one place, :func:`_install_error_handlers`.
Metrics are written by hand in the Prometheus text format (``prometheus_client`` is not a
dependency), from counters kept in this process.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Sequence

import anyio
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from brandguard.errors import BrandguardError, BundleError, ImageDecodeError, InputError, ReferenceIndexError
from brandguard.leads import (FLAGGED_VERDICTS, LEAD_STATUSES, TRANSITIONS, IllegalTransitionError, Lead, LeadInput,
                              LeadStore, NotFoundError)
from brandguard.serve.auth import (Checker, Complainer, ComplaintDecider, ForbiddenError, LeadReader, Principal,
                                   StoreDep, UnauthenticatedError)
from brandguard.serve.batching import BatcherStoppedError, InferenceTimeoutError, MicroBatcher, QueueFullError
from brandguard.serve.settings import Settings

REVIEW_PAGE = Path(__file__).with_name("review.html")
THUMB_SIDE = 480
JSON_BODY_LIMIT = 64 * 1024
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PayloadTooLargeError(BrandguardError):
    """A request body or an uploaded image is over the configured limit (HTTP 413)."""


class UnsupportedMediaError(BrandguardError):
    """The request body is neither multipart nor raw image bytes (HTTP 415)."""


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

    def render(self, batcher: MicroBatcher | None, info: dict[str, Any]) -> str:
        out: list[str] = []

        def head(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")

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
            head("brandguard_batches_total", "counter", "Inference batches run.")
            out.append(f"brandguard_batches_total {st.batches}")
            head("brandguard_batch_images_total", "counter", "Images judged in batches.")
            out.append(f"brandguard_batch_images_total {st.images}")
            head("brandguard_batch_size", "histogram", "Images per inference batch.")
            cum = 0
            for size in sorted(st.batch_sizes):
                cum += st.batch_sizes[size]
                out.append(f'brandguard_batch_size_bucket{{le="{size}"}} {cum}')
            out.append(f'brandguard_batch_size_bucket{{le="+Inf"}} {st.batches}')
            out.append(f"brandguard_batch_size_sum {st.images}")
            out.append(f"brandguard_batch_size_count {st.batches}")
            head("brandguard_failed_batches_total", "counter", "Inference batches that raised.")
            out.append(f"brandguard_failed_batches_total {st.failed_batches}")
            head("brandguard_inference_seconds_total", "counter", "Time spent in batched inference.")
            out.append(f"brandguard_inference_seconds_total {st.inference_seconds:.6f}")
            head("brandguard_queue_rejected_total", "counter", "Images refused because the queue was full (503).")
            out.append(f"brandguard_queue_rejected_total {st.rejected}")
            head("brandguard_queue_depth", "gauge", "Images waiting for inference now.")
            out.append(f"brandguard_queue_depth {batcher.depth}")
            head("brandguard_queue_capacity", "gauge", "Inference queue bound.")
            out.append(f"brandguard_queue_capacity {batcher.queue_size}")
        head("brandguard_model_info", "gauge", "The loaded model and index (value is always 1).")
        labels = ",".join(f'{k}="{_esc(str(info.get(k, "")))}"' for k in
                          ("model", "model_version", "model_sha256", "index_sha256", "index_count"))
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
        return cls(text("listing_id"), text("seller_id"), price)


@dataclass(frozen=True)
class ReferenceSource:
    brand: str
    source: str


class Service:
    """Everything a request needs, created by the lifespan and kept on ``app.state.service``."""

    def __init__(self, settings: Settings, pipeline, store: LeadStore, batcher: MicroBatcher,
                 references: dict[str, ReferenceSource], metrics: Metrics) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.store = store
        self.batcher = batcher
        self.references = references
        self.metrics = metrics
        self.info: dict[str, Any] = pipeline.describe()
        self.decode_limiter = anyio.CapacityLimiter(settings.decode_threads)
        self._ref_thumbs: dict[str, bytes] = {}

    # ------------------------------------------------------------------ checking
    def _prepare(self, data: bytes):
        try:
            return self.pipeline.prepare(data)
        except ImageDecodeError as exc:
            return exc

    async def judge_bytes(self, images: Sequence[bytes]) -> list:
        """Decode in the threadpool (bounded), then judge all images as one admission to the queue."""
        prepared = [None] * len(images)

        async def one(i: int, data: bytes) -> None:
            prepared[i] = await anyio.to_thread.run_sync(self._prepare, data, limiter=self.decode_limiter)

        async with anyio.create_task_group() as tg:
            for i, data in enumerate(images):
                tg.start_soon(one, i, data)
        verdicts = await self.batcher.submit_many(prepared, self.settings.request_timeout_s)
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

    def _record_lead(self, data: bytes, verdict, listing: ListingFields, brand: str) -> tuple[Lead, bool]:
        top = verdict.top[0].reference_id if verdict.top else None
        lead, created = self.store.upsert_lead(LeadInput(
            listing_id=listing.listing_id or "", brand=brand, verdict=verdict.verdict,
            confidence=float(verdict.confidence), score=verdict.score, reference_id=top,
            image_path=self._save_thumbnail(data), seller_id=listing.seller_id, price=listing.price,
            evidence=verdict.to_dict(), model_sha256=self.info.get("model_sha256", "")))
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
        verdicts = await self.judge_bytes(images)
        record = principal.can("record_leads")
        out = []
        for data, v, listing in zip(images, verdicts, listings):
            lead_id = await self.maybe_record(data, v, listing, None) if record else None
            out.append({"listing_id": listing.listing_id, **v.to_dict(), "lead_id": lead_id,
                        "model_sha256": self.info.get("model_sha256")})
        return out

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
class _Guard:
    """Pure ASGI middleware: caps request bodies by route while they stream, and counts requests.

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
        if path.startswith("/v1/check") or path == "/v1/complaints":
            return self.settings.body_limit(1)
        return JSON_BODY_LIMIT

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope.get("path", ""))
        declared = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        seen = 0
        status = 500
        t0 = time.perf_counter()

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
            await send(message)

        try:
            await self.app(scope, guarded_receive, counting_send)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(scope.get("method", ""), name, status, time.perf_counter() - t0)


# ============================================================================ errors, in one place
_ERRORS: tuple[tuple[type[BaseException], int, str], ...] = (
    (UnauthenticatedError, 401, "unauthenticated"),
    (ForbiddenError, 403, "forbidden"),
    (NotFoundError, 404, "not_found"),
    (IllegalTransitionError, 409, "illegal_transition"),
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


def _install_error_handlers(app: FastAPI, settings: Settings) -> None:
    async def domain_error(request: Request, exc: BrandguardError) -> JSONResponse:
        status, code = error_status(exc)
        headers = {}
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if status == 503:
            headers["Retry-After"] = str(getattr(exc, "retry_after_s", settings.retry_after_s))
        if status == 413:
            headers["Connection"] = "close"  # the rest of the body was not read
        return JSONResponse({"error": code, "detail": str(exc)}, status_code=status, headers=headers)

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
def _lead_view(lead: Lead) -> dict[str, Any]:
    d = lead.to_dict()
    d.pop("image_path", None)  # a server path: clients fetch /v1/leads/{id}/image instead
    d["allowed_next"] = sorted(TRANSITIONS[lead.status])
    d["image_url"] = f"/v1/leads/{lead.id}/image" if lead.image_path else None
    d["reference_image_url"] = f"/v1/references/{lead.reference_id}/image" if lead.reference_id else None
    return d


def create_app(settings: Settings) -> FastAPI:
    """Build the service for ``settings``. Loading happens in the lifespan, not here."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import cv2

        from brandguard.vision.decode import DecodeLimits
        from brandguard.vision.pipeline import Pipeline

        cv2.setNumThreads(settings.threads)
        limits = DecodeLimits(max_pixels=settings.max_pixels, max_bytes=settings.max_upload_bytes)

        def load():
            pipe = Pipeline.from_bundle(settings.bundle, threads=settings.threads, device=settings.device,
                                        region_mode=settings.region_mode, require_index=True, limits=limits)
            # Sources are stored relative to the bundle (copied in at index time) or absolute.
            refs = {r.reference_id: ReferenceSource(r.brand, r.source if not r.source or Path(r.source).is_absolute()
                                                    else str(pipe.bundle.path / r.source))
                    for r in pipe.index.records()}
            return pipe, refs

        pipeline, references = await anyio.to_thread.run_sync(load)
        store = await anyio.to_thread.run_sync(LeadStore, settings.leads_db)
        batcher = MicroBatcher(pipeline.judge, max_batch=settings.max_batch,
                               window_s=settings.batch_window_ms / 1000.0, queue_size=settings.queue_size,
                               retry_after_s=settings.retry_after_s)
        await batcher.start()
        service = Service(settings, pipeline, store, batcher, references, metrics)
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
                             "queue_size": service.batcher.queue_size, "max_batch": service.batcher.max_batch})

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics_endpoint(request: Request) -> PlainTextResponse:
        service: Service | None = request.app.state.service
        text = metrics.render(service.batcher if service else None, service.info if service else {})
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    # ------------------------------------------------------------------ checks
    @app.post("/v1/check", tags=["check"])
    async def check(request: Request, principal: Checker, service: ServiceDep) -> dict[str, Any]:
        """Judge one image: multipart ``file`` (+ listing_id, seller_id, price fields) or the raw body
        (+ the same as query parameters). Scanner and admin keys with a listing_id record leads."""
        up = await read_uploads(request, settings, max_files=1)
        if len(up.images) != 1:
            raise InputError("send exactly one image (multipart file part, or the raw request body)")
        listing = ListingFields.parse({**dict(request.query_params), **up.fields})
        return (await service.check(up.images, [listing], principal))[0]

    @app.post("/v1/check/batch", tags=["check"])
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
                   offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
        """Leads of a brand (a brand key: its own; admin: any or all), newest activity first."""
        scope = principal.brand_scope(brand)
        leads = store.list_leads(brand=scope, status=status, limit=limit, offset=offset)
        return {"brand": scope, "status": status, "count": len(leads), "leads": [_lead_view(x) for x in leads]}

    @app.get("/v1/leads/{lead_id}", tags=["leads"])
    def get_lead(lead_id: int, principal: LeadReader, store: StoreDep) -> dict[str, Any]:
        lead = store.get_lead(lead_id, brand=principal.row_scope())
        return {**_lead_view(lead), "history": [f.to_dict() for f in store.history(lead.id)]}

    @app.post("/v1/leads/{lead_id}/feedback", tags=["leads"])
    def lead_feedback(lead_id: int, body: FeedbackIn, principal: LeadReader, store: StoreDep) -> dict[str, Any]:
        """Move a lead along its lifecycle; illegal moves answer 409 with the allowed ones."""
        lead = store.transition(lead_id, body.status, note=body.note, who=f"{principal.role}/{principal.key_id}",
                                brand=principal.row_scope())
        return {**_lead_view(lead), "history": [f.to_dict() for f in store.history(lead.id)]}

    @app.get("/v1/leads/{lead_id}/image", tags=["leads"])
    def lead_image(lead_id: int, principal: LeadReader, store: StoreDep) -> Response:
        lead = store.get_lead(lead_id, brand=principal.row_scope())
        media = settings.media_path.resolve()
        path = Path(lead.image_path).resolve() if lead.image_path else None
        if path is None or media not in path.parents or not path.is_file():
            raise NotFoundError(f"lead {lead_id} has no stored image")
        return Response(path.read_bytes(), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/v1/references/{reference_id:path}/image", tags=["leads"])
    def reference_image(reference_id: str, principal: LeadReader, service: ServiceDep) -> Response:
        ref = service.references.get(reference_id)
        if ref is None or (principal.row_scope() is not None and ref.brand != principal.row_scope()):
            raise NotFoundError(f"reference {reference_id!r} not found")
        return Response(service.reference_thumbnail(reference_id), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})

    # ------------------------------------------------------------------ complaints
    @app.post("/v1/complaints", tags=["complaints"], status_code=201)
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
        (verdict,) = await service.judge_bytes(up.images)
        lead_id = await service.maybe_record(up.images[0], verdict, listing, brand)
        complaint = await anyio.to_thread.run_sync(
            lambda: service.store.add_complaint(brand, listing.listing_id or "", verdict.to_dict(),
                                                decided=verdict.verdict != "inconclusive", lead_id=lead_id))
        return complaint.to_dict()

    @app.get("/v1/complaints/report", tags=["complaints"])
    def complaints_report(principal: Complainer, store: StoreDep, brand: str | None = None,
                          since_hours: Annotated[float | None, Query(gt=0)] = None) -> dict[str, Any]:
        """Share of complaints decided within 24 h (brand keys: their own brand)."""
        scope = principal.brand_scope(brand)
        since = time.time() - since_hours * 3600 if since_hours else None
        return store.complaint_report(brand=scope, since=since).to_dict()

    @app.get("/v1/complaints/{complaint_id}", tags=["complaints"])
    def get_complaint(complaint_id: int, principal: Complainer, store: StoreDep) -> dict[str, Any]:
        return store.get_complaint(complaint_id, brand=principal.row_scope()).to_dict()

    @app.post("/v1/complaints/{complaint_id}/decision", tags=["complaints"])
    def decide_complaint(complaint_id: int, body: DecisionIn, principal: ComplaintDecider,
                         store: StoreDep) -> dict[str, Any]:
        """A reviewer settles a complaint the automatic check left inconclusive (admin only)."""
        return store.decide_complaint(complaint_id, {"verdict": body.verdict, "note": body.note,
                                                     "decided_by": principal.key_id}).to_dict()

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
