"""What requests may carry: listing fields, reference labels, feedback bodies, ids, and the
OpenAPI description of the upload bodies the endpoints read themselves (streamed, size-capped).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from brandguard.cases.leads import LEAD_STATUSES, validate_brand
from brandguard.errors import InputError

REFERENCE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)+$")
# SQLite integers are 64-bit: larger ids or offsets are refused by validation (422), not by SQLite (500).
MAX_ID = 2**63 - 1
MAX_OFFSET = 10**9
RecordId = Annotated[int, PathParam(ge=1, le=MAX_ID)]


class FeedbackIn(BaseModel):
    status: str = Field(description=f"one of {LEAD_STATUSES}")
    note: str = Field(default="", max_length=4000)


class DecisionIn(BaseModel):
    verdict: str = Field(description="copy | knockoff | clear | genuine | other human decision")
    note: str = Field(default="", max_length=4000)


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


# ---------------------------------------------------------------------------- OpenAPI of upload bodies
LISTING_FORM_FIELDS = {"listing_id": {"type": "string", "maxLength": 512},
                       "seller_id": {"type": "string", "maxLength": 512},
                       "price": {"type": "number", "minimum": 0}, "title": {"type": "string", "maxLength": 512},
                       "brand_hint": {"type": "string", "maxLength": 512},
                       "depth": {"type": "string", "enum": ["fast", "thorough", "auto"]}}
REFERENCE_FORM_FIELDS = {"brand": {"type": "string", "maxLength": 100}, "sku": {"type": "string", "maxLength": 200},
                         "kind": {"type": "string", "maxLength": 200},
                         "reference_id": {"type": "string", "maxLength": 200}}
BATCH_FORM_FIELDS = {"listings": {"type": "string", "description": "JSON array of {listing_id, seller_id, price}"}}


def multipart_body(fields: dict[str, dict], *, files: int = 1, raw: bool = False,
                   required: tuple[str, ...] = ()) -> dict:
    """OpenAPI for endpoints that read uploads themselves (streamed, size-capped), so clients and
    schema-driven tools know the body: a multipart form, and for raw-body endpoints an image."""
    props = {"file": {"type": "string", "format": "binary"} if files == 1 else
             {"type": "array", "items": {"type": "string", "format": "binary"}, "maxItems": files}, **fields}
    content: dict[str, Any] = {"multipart/form-data": {"schema": {"type": "object", "properties": props,
                                                                   "required": ["file", *required]}}}
    if raw:
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}
