"""Complaints: a brand reports a listing; the report of how fast complaints are settled."""

from __future__ import annotations

import time
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from brandguard.cases.keys import validate_brand
from brandguard.errors import InputError
from brandguard.serve.deps import Complainer, ComplaintDecider, ServiceDep, SettingsDep, StoreDep
from brandguard.serve.schemas import (ERROR_RESPONSES, LISTING_FORM_FIELDS, MAX_HOURS, ComplaintOut,
                                      ComplaintReportOut, DecisionIn, ErrorOut, RecordId, multipart_body, parse_listing)
from brandguard.serve.uploads import read_uploads
from brandguard.serve.views import complaint_view, zip_response

router = APIRouter(tags=["complaints"], responses=ERROR_RESPONSES)
NOT_FOUND = {404: {"model": ErrorOut, "description": "no such complaint (or another brand's)"}}


@router.post("/v1/complaints", status_code=201, response_model=ComplaintOut, openapi_extra=multipart_body(
    {**LISTING_FORM_FIELDS, "brand": {"type": "string", "maxLength": 100}}, required=("listing_id",)))
async def complain(request: Request, principal: Complainer, service: ServiceDep,
                   settings: SettingsDep) -> dict[str, Any]:
    """A brand reports a listing (multipart: file, listing_id [, seller_id, price]; admin adds brand).
    The image is checked at once; a decisive verdict settles the complaint immediately, a flagged
    one for the complaining brand also becomes (or refreshes) a lead."""
    up = await read_uploads(request, settings, max_files=1)
    if len(up.images) != 1:
        raise InputError("send exactly one image as the multipart 'file' part")
    fields = {**dict(request.query_params), **up.fields}
    listing = parse_listing(fields)
    if not listing.listing_id:
        raise InputError("a complaint needs a listing_id")
    brand = principal.brand_scope(fields.get("brand") or None)
    if brand is None:
        raise InputError("an admin complaint must name the brand")
    validate_brand(brand)  # before the image is judged, not after
    return complaint_view(await service.checks.complain(up.images[0], listing, brand), principal)


@router.get("/v1/complaints/report", response_model=ComplaintReportOut)
def complaints_report(principal: Complainer, store: StoreDep, brand: str | None = None,
                      since_hours: Annotated[float | None, Query(gt=0, le=MAX_HOURS)] = None) -> dict[str, Any]:
    """Share of complaints decided within 24 h (brand keys: their own brand)."""
    scope = principal.brand_scope(brand)
    since = time.time() - since_hours * 3600 if since_hours else None
    return store.complaint_report(brand=scope, since=since).to_dict()


@router.get("/v1/complaints/{complaint_id}", response_model=ComplaintOut, responses=NOT_FOUND)
def get_complaint(complaint_id: RecordId, principal: Complainer, store: StoreDep) -> dict[str, Any]:
    return complaint_view(store.get_complaint(complaint_id, brand=principal.row_scope()), principal)


@router.get("/v1/complaints/{complaint_id}/evidence.zip", response_class=Response,
            responses={200: {"content": {"application/zip": {}}, "description": "zip with a sha256 manifest"},
                       **NOT_FOUND})
async def complaint_evidence(complaint_id: RecordId, principal: Complainer, service: ServiceDep) -> Response:
    """Evidence package of a complaint (zip with a sha256 manifest), brand-scoped like the complaint."""
    complaint = await anyio.to_thread.run_sync(
        lambda: service.store.get_complaint(complaint_id, brand=principal.row_scope()))
    data = await anyio.to_thread.run_sync(service.evidence.complaint, complaint)
    return zip_response(data, f"brandguard-complaint-{complaint.id}-evidence.zip")


@router.post("/v1/complaints/{complaint_id}/decision", response_model=ComplaintOut,
             responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "already decided"}})
def decide_complaint(complaint_id: RecordId, body: DecisionIn, principal: ComplaintDecider,
                     store: StoreDep) -> dict[str, Any]:
    """A reviewer settles a complaint the automatic check left inconclusive (admin only)."""
    return complaint_view(store.decide_complaint(complaint_id, {"verdict": body.verdict, "note": body.note,
                                                                "decided_by": principal.key_id}))
