"""Leads: a brand's flagged listings, their lifecycle, images and evidence packages."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query
from fastapi.responses import Response

from brandguard.cases.leads import NotFoundError
from brandguard.serve.deps import LeadReader, ServiceDep, StoreDep
from brandguard.serve.schemas import MAX_OFFSET, FeedbackIn, RecordId
from brandguard.serve.views import lead_view, zip_response

router = APIRouter(tags=["leads"])


@router.get("/v1/leads")
def list_leads(principal: LeadReader, store: StoreDep, brand: str | None = None, status: str | None = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict[str, Any]:
    """Leads of a brand (a brand key: its own; admin: any or all), newest activity first."""
    scope = principal.brand_scope(brand)
    leads = store.list_leads(brand=scope, status=status, limit=limit, offset=offset)
    return {"brand": scope, "status": status, "count": len(leads), "leads": [lead_view(x, principal) for x in leads]}


@router.get("/v1/leads/{lead_id}")
def get_lead(lead_id: RecordId, principal: LeadReader, store: StoreDep) -> dict[str, Any]:
    lead = store.get_lead(lead_id, brand=principal.row_scope())
    return {**lead_view(lead, principal), "history": [f.to_dict() for f in store.history(lead.id)]}


@router.post("/v1/leads/{lead_id}/feedback")
def lead_feedback(lead_id: RecordId, body: FeedbackIn, principal: LeadReader, store: StoreDep) -> dict[str, Any]:
    """Move a lead along its lifecycle; illegal moves answer 409 with the allowed ones."""
    lead = store.transition(lead_id, body.status, note=body.note, who=f"{principal.role}/{principal.key_id}",
                            brand=principal.row_scope())
    return {**lead_view(lead, principal), "history": [f.to_dict() for f in store.history(lead.id)]}


@router.get("/v1/leads/{lead_id}/image")
def lead_image(lead_id: RecordId, principal: LeadReader, service: ServiceDep) -> Response:
    lead = service.store.get_lead(lead_id, brand=principal.row_scope())
    path = service.media.file(lead.image_path)
    if path is None or not path.is_file():
        raise NotFoundError(f"lead {lead_id} has no stored image")
    return Response(path.read_bytes(), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/v1/leads/{lead_id}/evidence.zip", response_class=Response,
            responses={200: {"content": {"application/zip": {}}}})
async def lead_evidence(lead_id: RecordId, principal: LeadReader, service: ServiceDep) -> Response:
    """Evidence package of a lead (zip; ``manifest.json`` holds the sha256 of every file)."""
    lead = await anyio.to_thread.run_sync(lambda: service.store.get_lead(lead_id, brand=principal.row_scope()))
    data = await anyio.to_thread.run_sync(service.evidence.lead, lead)
    return zip_response(data, f"brandguard-lead-{lead.id}-evidence.zip")
