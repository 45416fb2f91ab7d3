"""Leads: a brand's flagged listings, their lifecycle (decisions, undo, bulk), images and evidence packages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Query
from fastapi.responses import Response

from brandguard.cases.db import NotFoundError
from brandguard.serve.deps import LeadReader, ServiceDep, StoreDep
from brandguard.serve.errors import error_status
from brandguard.serve.schemas import (ERROR_RESPONSES, MAX_OFFSET, BulkIn, BulkItemOut, BulkOut, ErrorOut,
                                      FeedbackIn, LeadDetailOut, LeadListOut, RecordId, UndoIn)
from brandguard.serve.views import lead_view, zip_response

router = APIRouter(tags=["leads"], responses=ERROR_RESPONSES)
NOT_FOUND = {404: {"model": ErrorOut, "description": "no such lead (or another brand's)"}}
CONFLICT = {409: {"model": ErrorOut, "description": "not allowed from the lead's status, or nothing to undo"}}


def _detail(store, lead, principal) -> dict[str, Any]:  # noqa: ANN001
    return {**lead_view(lead, principal, bool(store.undoable([lead.id]))),
            "history": [f.to_dict() for f in store.history(lead.id)]}


def _who(principal) -> str:  # noqa: ANN001
    return f"{principal.role}/{principal.key_id}"


@router.get("/v1/leads", response_model=LeadListOut)
def list_leads(principal: LeadReader, store: StoreDep, brand: str | None = None,
               status: Annotated[str | None, Query(max_length=64)] = None,
               verdict: Annotated[Literal["copy", "knockoff"] | None, Query()] = None,
               min_risk: Annotated[float | None, Query(ge=0, le=1)] = None,
               sort: Annotated[Literal["updated", "created", "risk", "confidence"], Query()] = "updated",
               limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict[str, Any]:
    """Leads of a brand (a brand key: its own; admin: any or all), filtered by status, verdict
    and lowest risk; sorted by last activity (default), creation, risk or confidence."""
    scope = principal.brand_scope(brand)
    leads = store.list_leads(brand=scope, status=status, verdict=verdict, min_risk=min_risk, sort=sort,
                             limit=limit, offset=offset)
    ids = [x.id for x in leads]
    undoable, histories = store.undoable(ids), store.histories(ids)
    return {"brand": scope, "status": status, "verdict": verdict, "min_risk": min_risk, "sort": sort,
            "count": len(leads), "leads": [{**lead_view(x, principal, x.id in undoable),
                                            "history": [f.to_dict() for f in histories[x.id]]} for x in leads]}


@router.post("/v1/leads/bulk", response_model=BulkOut)
def bulk_decision(body: BulkIn, principal: LeadReader, store: StoreDep) -> dict[str, Any]:
    """Apply one decision (a status, or ``undo``) to several leads at once. Each lead succeeds or
    fails on its own (``results`` in the order given: a lead already decided, or not visible to
    this key, is reported and left alone); the answer is 200 either way."""
    outcomes = store.apply_many(body.ids, body.action, note=body.note, who=_who(principal),
                                brand=principal.row_scope())
    results = []
    for o in outcomes:
        if o.error is None:
            results.append(BulkItemOut(id=o.lead_id, ok=True, status=o.lead.status))
        else:
            results.append(BulkItemOut(id=o.lead_id, ok=False, error=error_status(o.error)[1], detail=str(o.error)))
    ok = sum(r.ok for r in results)
    return {"action": body.action, "updated": ok, "failed": len(results) - ok, "results": results}


@router.get("/v1/leads/{lead_id}", response_model=LeadDetailOut, responses=NOT_FOUND)
def get_lead(lead_id: RecordId, principal: LeadReader, store: StoreDep) -> dict[str, Any]:
    return _detail(store, store.get_lead(lead_id, brand=principal.row_scope()), principal)


@router.post("/v1/leads/{lead_id}/feedback", response_model=LeadDetailOut, responses={**NOT_FOUND, **CONFLICT})
def lead_feedback(lead_id: RecordId, body: FeedbackIn, principal: LeadReader, store: StoreDep) -> dict[str, Any]:
    """Move a lead along its lifecycle; illegal moves answer 409 with the allowed ones."""
    lead = store.transition(lead_id, body.status, note=body.note, who=_who(principal), brand=principal.row_scope())
    return _detail(store, lead, principal)


@router.post("/v1/leads/{lead_id}/undo", response_model=LeadDetailOut, responses={**NOT_FOUND, **CONFLICT})
def lead_undo(lead_id: RecordId, principal: LeadReader, store: StoreDep, body: UndoIn | None = None) -> dict[str, Any]:
    """Take back the lead's last decision: a new history entry restores the status before it
    (the history is never rewritten). 409 when there is nothing left to undo."""
    lead = store.undo(lead_id, note=body.note if body else "", who=_who(principal), brand=principal.row_scope())
    return _detail(store, lead, principal)


@router.get("/v1/leads/{lead_id}/image", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the listing's thumbnail"}, **NOT_FOUND})
def lead_image(lead_id: RecordId, principal: LeadReader, service: ServiceDep) -> Response:
    lead = service.store.get_lead(lead_id, brand=principal.row_scope())
    path = service.media.file(lead.image_path)
    if path is None or not path.is_file():
        raise NotFoundError(f"lead {lead_id} has no stored image")
    return Response(path.read_bytes(), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/v1/leads/{lead_id}/evidence.zip", response_class=Response,
            responses={200: {"content": {"application/zip": {}}, "description": "zip with a sha256 manifest"},
                       **NOT_FOUND})
async def lead_evidence(lead_id: RecordId, principal: LeadReader, service: ServiceDep) -> Response:
    """Evidence package of a lead (zip; ``manifest.json`` holds the sha256 of every file)."""
    lead = await anyio.to_thread.run_sync(lambda: service.store.get_lead(lead_id, brand=principal.row_scope()))
    data = await anyio.to_thread.run_sync(service.evidence.lead, lead)
    return zip_response(data, f"brandguard-lead-{lead.id}-evidence.zip")
