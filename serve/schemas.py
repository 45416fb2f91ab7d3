"""What requests may carry: listing fields, reference labels, feedback bodies, ids, and the
OpenAPI description of the upload bodies the endpoints read themselves (streamed, size-capped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Mapping

from fastapi import Path as PathParam
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, \
    field_validator

from brandguard.cases.keys import validate_brand
from brandguard.cases.leads import LEAD_STATUSES, MAX_BULK, UNDO
from brandguard.errors import InputError

REFERENCE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)+$")
# SQLite integers are 64-bit: larger ids or offsets are refused by validation (422), not by SQLite (500).
MAX_ID = 2**63 - 1
MAX_OFFSET = 10**9
MAX_PRICE = 1e12  # any real listing's price; far from float overflow in the risk arithmetic
MAX_HOURS = 24 * 366 * 100
RecordId = Annotated[int, PathParam(ge=1, le=MAX_ID)]


def storable_text(value: str) -> str:
    """Text SQLite and JSON can store: no NUL, no lone surrogates (a UTF-16 half cannot be encoded)."""
    if "\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value):
        raise ValueError("must be text without NUL characters or lone surrogates")
    return value


# Bounded, storable text field types.
ShortText = Annotated[str, StringConstraints(max_length=64), AfterValidator(storable_text)]
ListingText = Annotated[str, StringConstraints(max_length=512), AfterValidator(storable_text)]
NoteText = Annotated[str, StringConstraints(max_length=4000), AfterValidator(storable_text)]


def field_errors(exc: ValidationError, prefix: str = "") -> str:
    """A validation failure as one line naming each field: ``listings[0].price: Input should be ...``."""
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = prefix
        for p in err.get("loc", ()):
            where += f"[{p}]" if isinstance(p, int) else (f".{p}" if where else str(p))
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


class FeedbackIn(BaseModel):
    status: ShortText = Field(description=f"one of {LEAD_STATUSES}")
    note: NoteText = ""


class DecisionIn(BaseModel):
    verdict: ShortText = Field(description="copy | knockoff | clear | genuine | other human decision")
    note: NoteText = ""


class ListingFields(BaseModel):
    """Optional listing data sent with an image; with a ``listing_id`` a flagged check becomes a lead.

    Blank values count as absent; numbers given for text fields are read as text.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    listing_id: ListingText | None = None
    seller_id: ListingText | None = None
    price: Annotated[float, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)] | None = None
    title: ListingText | None = None  # routes auto depth when it names a registered brand
    brand_hint: ListingText | None = None
    depth: Literal["fast", "thorough", "auto"] | None = None  # None: the service's default

    @field_validator("listing_id", "seller_id", "title", "brand_hint", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if isinstance(value, (int, float)):
            value = str(value)  # a 4,301+ digit int raises ValueError: a validation error, not a 500
        return cls._blank(value)

    @field_validator("price", "depth", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value


LISTINGS = TypeAdapter(list[ListingFields])


def parse_listing(raw: Mapping[str, Any]) -> ListingFields:
    """Listing fields from form fields and query parameters (other keys are ignored)."""
    try:
        return ListingFields.model_validate(dict(raw))
    except ValidationError as exc:
        raise InputError(field_errors(exc)) from exc


def parse_listings(text: str, files: int) -> list[ListingFields]:
    """The batch ``listings`` field: a JSON array of listing objects, one per file, in order.

    Parsed by pydantic's JSON parser, which bounds nesting depth and number size itself, so
    hostile JSON is a 400 naming the field, never a ``RecursionError`` or ``OverflowError``.
    """
    try:
        listings = LISTINGS.validate_json(text)
    except ValidationError as exc:
        raise InputError(field_errors(exc, "listings")) from exc
    if len(listings) != files:
        raise InputError(f"listings must be a JSON array of {files} objects, one per file")
    return listings


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
            if len(v) > 200 or any(ord(ch) < 32 or "\ud800" <= ch <= "\udfff" for ch in v):
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
                       "price": {"type": "number", "minimum": 0, "maximum": MAX_PRICE}, "title": {"type": "string", "maxLength": 512},
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


# ---------------------------------------------------------------------------- bodies of lead decisions
class UndoIn(BaseModel):
    note: NoteText = ""


class BulkIn(BaseModel):
    """One decision for several leads: a status, or ``undo`` (each lead's last decision taken back)."""

    ids: Annotated[list[Annotated[int, Field(ge=1, le=MAX_ID)]], Field(min_length=1, max_length=MAX_BULK)]
    action: ShortText = Field(description=f"one of {LEAD_STATUSES}, or {UNDO!r}")
    note: NoteText = ""


# ---------------------------------------------------------------------------- responses
class Out(BaseModel):
    """A response body. Extra keys are allowed (and kept): a newer pipeline may add evidence."""

    model_config = ConfigDict(extra="allow")


class ErrorOut(Out):
    error: str = Field(description="machine-readable code (serve/errors.py)")
    detail: Any = None


class StatusOut(Out):
    status: str


class ReadyOut(Out):
    """``ready`` or ``not_ready``; with ops access also the model, index and queue figures."""

    status: Literal["ready", "not_ready"]


class HitOut(Out):
    reference_id: str
    brand: str
    sku: str = ""
    kind: str = ""
    score: float


class VerdictOut(Out):
    verdict: Literal["copy", "knockoff", "clear", "inconclusive"]
    brand: str | None = None
    confidence: float | None = None
    score: float | None = None
    top: list[HitOut] = []
    evidence: dict[str, Any] = {}
    reason: str | None = None


class CheckOut(VerdictOut):
    listing_id: str | None = None
    lead_id: int | None = Field(default=None, description="the lead recorded (scanner and admin keys)")
    lead: Literal["lead", "authorized"] | None = Field(
        default=None, description="the lead policy's decision: a lead, or an authorised seller's listing")
    risk: float | None = None
    model_sha256: str | None = None


class CheckBatchOut(Out):
    results: list[CheckOut]


class FeedbackOut(Out):
    id: int | None = None
    lead_id: int
    from_status: str
    status: str
    note: str
    who: str
    at: float
    kind: Literal["decision", "undo"] = "decision"
    undoes: int | None = Field(default=None, description="for an undo: the history entry it took back")


class ShapeOut(Out):
    kind: Literal["polygon", "rect"]
    source: str = Field(description="outline | local_box | match_box | geometry_box | region_box | text")
    label: str
    points: list[list[float]] | None = None
    box: list[float] | None = None


class DrawingOut(Out):
    """What to lay over the listing image, in its original pixels."""

    image_size: list[float]
    shapes: list[ShapeOut]


class LeadOut(Out):
    id: int
    listing_id: str
    brand: str
    verdict: Literal["copy", "knockoff"]
    confidence: float
    score: float | None = None
    reference_id: str | None = None
    seller_id: str | None = None
    price: float | None = None
    evidence: dict[str, Any] = Field(description="the verdict as judged (verdict, brand, confidence, score, top, "
                                     "evidence, reason)")
    status: Literal["new", "sent", "test_buy", "confirmed_counterfeit", "genuine", "dismissed"]
    model_sha256: str
    created_at: float
    updated_at: float
    risk: float | None = None
    risk_parts: dict[str, Any] | None = None
    evidence_url: str
    allowed_next: list[str]
    can_undo: bool = False
    image_url: str | None = None
    reference_image_url: str | None = None
    drawing: DrawingOut | None = None
    rule: str | None = Field(default=None, description="the rule that decided the verdict")
    history: list[FeedbackOut] = Field(default=[], description="every decision and undo, oldest first")


class LeadDetailOut(LeadOut):
    pass


class LeadListOut(Out):
    brand: str | None = None
    status: str | None = None
    verdict: str | None = None
    min_risk: float | None = None
    sort: str = "updated"
    count: int
    leads: list[LeadOut]


class BulkItemOut(Out):
    id: int
    ok: bool
    status: str | None = Field(default=None, description="the lead's status now (when ok)")
    error: str | None = None
    detail: str | None = None


class BulkOut(Out):
    action: str
    updated: int
    failed: int
    results: list[BulkItemOut]


class ComplaintOut(Out):
    id: int
    brand: str
    listing_id: str
    status: Literal["pending", "decided"]
    created_at: float
    decided_at: float | None = None
    verdict: dict[str, Any] | None = None
    lead_id: int | None = None
    evidence_url: str


class ComplaintReportOut(Out):
    brand: str | None = None
    since: float | None = None
    total: int
    decided: int
    decided_within_24h: int
    pending: int
    pending_overdue: int
    share_decided_within_24h: float | None = None


class ReferenceOut(Out):
    reference_id: str
    brand: str
    sku: str = ""
    kind: str = ""
    image_url: str


class ReferenceListOut(Out):
    brand: str | None = None
    total: int
    index_generation: int | None = None
    references: list[ReferenceOut]


class ReferenceAddedOut(Out):
    """``live`` (indexed, 201) or ``held`` for an admin (202)."""

    reference_id: str
    brand: str
    status: Literal["live", "held"]
    sha256: str
    index_generation: int | None = None
    held_id: str | None = None


class HeldOut(Out):
    id: str
    reference_id: str
    brand: str
    status: str
    conflicts: int | list[dict[str, Any]]


class HeldListOut(Out):
    brand: str | None = None
    status: str | None = None
    held: list[HeldOut]


class AuditOut(Out):
    entries: list[dict[str, Any]]


class ReferenceDeletedOut(Out):
    reference_id: str
    brand: str
    deleted: bool
    index_generation: int | None = None
    index_count: int | None = None


# Error answers every authenticated route may give (serve/errors.py decides the codes).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": what} for code, what in (
        (400, "bad request (error: bad_request)"), (401, "missing, unknown or revoked API key"),
        (403, "the key's role may not do this"), (429, "too many requests of this key at once"),
        (503, "overloaded or not ready; see Retry-After"))}
