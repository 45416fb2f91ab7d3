"""Service settings: one typed object, read from ``BRANDGUARD_*`` environment variables.

Every limit the service enforces lives here so operators can see (and tests can shrink) them;
nothing is read from the environment at import time, only when :class:`Settings` is built.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration of one service process (one bundle, one leads database)."""

    model_config = SettingsConfigDict(env_prefix="BRANDGUARD_", extra="ignore", frozen=True)

    bundle: Path | None = Field(default=None, description="indexed bundle folder (model.onnx, model_card.json, "
                                "index); or give registry")
    registry: Path | None = Field(default=None, description="model registry: serve its deployment's current version")
    deployment: str = Field(default="default", description="registry deployment to serve")
    leads_db: Path = Field(default=Path("brandguard-leads.sqlite"), description="SQLite file of leads and keys")
    media_dir: Path | None = Field(default=None, description="flagged listing thumbnails and originals; default: "
                                   "media/ next to leads_db (where `brandguard scan --leads-db` writes them too)")
    brand_info: Path | None = Field(default=None, description="brands.json (as scan's --brand-info): authorised "
                                    "sellers are not leads; reference prices and seller history make the risk")
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="per image; larger → 413")
    max_pixels: int = Field(default=40_000_000, ge=1024, description="decoded pixel limit; larger → inconclusive")
    max_batch: int = Field(default=16, ge=1, le=1024, description="images per ONNX Runtime call")
    max_files: int = Field(default=16, ge=1, le=256, description="images per /v1/check/batch request")
    batch_window_ms: float = Field(default=5.0, ge=0, le=10_000, description="how long a batch waits to fill")
    queue_size: int = Field(default=128, ge=1, description="images waiting for inference; full → 503")
    max_inflight: int | None = Field(default=None, ge=1, description="images admitted to judging at once (counted "
                                     "once their request's body has arrived); more → 503; default queue_size, so "
                                     "admitted work always fits the inference queue")
    request_timeout_s: float = Field(default=15.0, gt=0, description="wait for a verdict, decoding included; "
                                     "longer → 504")
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After sent with 503 and 429")
    threads: int = Field(default=1, ge=1, le=256, description="ONNX Runtime / FAISS intra-op threads")
    decode_threads: int = Field(default=2, ge=1, le=64, description="threads of the ordinary decode lane "
                                "(uploads are decoded off the event loop)")
    large_decode_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024, description="an image whose header "
                                    "declares more decoded bytes than this decodes in the large-image lane, so large "
                                    "images never queue ahead of ordinary ones")
    large_decode_threads: int = Field(default=1, ge=1, le=16, description="threads of the large-image decode lane "
                                      "(bounds the memory of large decodes: one at a time by default)")
    decode_budget_bytes: int = Field(default=768 * 1024 * 1024, ge=1024 * 1024, description="per request: the sum "
                                     "of header-declared decoded bytes of its images; images past it are answered "
                                     "inconclusive (decode_budget) without being decoded. 16 ordinary 12-megapixel "
                                     "photos fit")
    max_inflight_per_key: int = Field(default=8, ge=1, description="requests of one API key inside the service at "
                                      "once (reading the body included); more → 429 + Retry-After")
    body_timeout_s: float = Field(default=30.0, gt=0, description="a request body must have arrived within this "
                                  "many seconds of the first read; later → 408")
    body_min_rate: int = Field(default=4096, ge=0, description="bytes/s: after body_rate_grace_s, a body must keep "
                               "arriving at this average rate; slower → 408 (0: no minimum)")
    body_rate_grace_s: float = Field(default=1.0, ge=0, description="seconds a body may take before body_min_rate "
                                     "applies")
    max_json_bytes: int = Field(default=64 * 1024, ge=1024, description="JSON (non-upload) request bodies; larger → "
                                "413")
    public_metrics: bool | None = Field(default=None, description="/metrics, /openapi.json, /docs and /readyz's "
                                        "details without a key (they show model and index hashes, index size and "
                                        "request counts). None: only on connections to a loopback address; the CLI "
                                        "makes it false when --host is not loopback. False: an admin key is needed")
    device: Literal["cpu", "cuda"] = "cpu"
    region_mode: Literal["full", "grid"] = "full"
    depth: Literal["fast", "thorough", "auto"] = Field(
        default="auto", description="default depth of a check: fast (global embedding), thorough (+ local "
        "features on every image), auto (local features where the global score, the listing's title or "
        "brand hint, or a quick keypoint glance points at a brand); a request may ask for another with its "
        "depth field")
    audit_share: float = Field(default=0.0, ge=0.0, le=1.0, description="auto depth: random share of other "
                               "checks sent through the local stage")

    @model_validator(mode="after")
    def _one_model_source(self) -> "Settings":
        if (self.bundle is None) == (self.registry is None):
            raise ValueError("give exactly one of bundle (BRANDGUARD_BUNDLE) or registry (BRANDGUARD_REGISTRY)")
        return self

    def bundle_path(self) -> Path:
        """The bundle to serve: ``bundle``, or the registry deployment's current (verified) version."""
        from brandguard.registry import resolve_bundle

        return resolve_bundle(self.bundle, self.registry, self.deployment)

    @model_validator(mode="after")
    def _batch_fits_queue(self) -> "Settings":
        if self.max_files > self.queue_size:
            raise ValueError(f"max_files ({self.max_files}) must be <= queue_size ({self.queue_size}): "
                             "a batch request could never be admitted")
        if self.max_files > self.inflight_limit:
            raise ValueError(f"max_files ({self.max_files}) must be <= max_inflight ({self.inflight_limit})")
        return self

    @property
    def inflight_limit(self) -> int:
        return self.max_inflight if self.max_inflight is not None else self.queue_size

    @property
    def media_path(self) -> Path:
        from brandguard.cases.media import default_media_dir

        return self.media_dir if self.media_dir is not None else default_media_dir(self.leads_db)

    def body_limit(self, files: int) -> int:
        """Largest request body accepted for ``files`` images (multipart framing included)."""
        return files * self.max_upload_bytes + 64 * 1024


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: addresses only this machine can reach."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
