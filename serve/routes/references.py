"""References: list, register and remove a brand's reference images, and their thumbnails."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from brandguard.errors import InputError
from brandguard.serve.deps import LeadReader, ReferenceDecider, ReferenceManager, ServiceDep, SettingsDep
from brandguard.serve.schemas import (ERROR_RESPONSES, MAX_OFFSET, REFERENCE_FORM_FIELDS, AuditOut, ErrorOut, HeldListOut,
                                      HeldOut, NewReference, ReferenceAddedOut, ReferenceDeletedOut, ReferenceListOut,
                                      multipart_body)
from brandguard.serve.uploads import read_uploads
from brandguard.serve.views import reference_view

router = APIRouter(tags=["references"], responses=ERROR_RESPONSES)
NOT_FOUND = {404: {"model": ErrorOut, "description": "no such reference (or another brand's)"}}


@router.get("/v1/references/{reference_id:path}/image", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the reference's thumbnail"}, **NOT_FOUND})
def reference_image(reference_id: str, principal: LeadReader, service: ServiceDep) -> Response:
    service.catalog.visible(reference_id, principal.row_scope())
    return Response(service.catalog.thumbnail(reference_id), media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=3600"})


@router.get("/v1/references", response_model=ReferenceListOut)
def list_references(principal: ReferenceManager, service: ServiceDep, brand: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
                    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict[str, Any]:
    """Indexed references of a brand (a brand key: its own; admin: any or all), by id."""
    scope = principal.brand_scope(brand)
    refs = service.catalog.references  # one snapshot: writers replace the mapping, never mutate it
    ids = sorted(k for k, v in refs.items() if scope is None or v.brand == scope)
    return {"brand": scope, "total": len(ids), "index_generation": service.info.get("index_generation"),
            "references": [reference_view(k, refs[k]) for k in ids[offset:offset + limit]]}


@router.post("/v1/references", status_code=201, response_model=ReferenceAddedOut,
             openapi_extra=multipart_body(REFERENCE_FORM_FIELDS),
             responses={202: {"model": ReferenceAddedOut,
                              "description": "held for an admin: the image copies another brand's reference"},
                        409: {"model": ErrorOut, "description": "a reference with this id is indexed"},
                        413: {"model": ErrorOut, "description": "upload over the limit"}})
async def add_reference(request: Request, principal: ReferenceManager, service: ServiceDep,
                        settings: SettingsDep) -> Any:
    """Register a reference image (multipart: ``file``, ``brand`` [admin; a brand key's own by default],
    ``sku``, ``kind``, optional ``reference_id`` = ``<brand>/<name>``). Embedded and indexed durably
    (one index generation) before the answer (201); checks after it see the new reference.

    An image that another brand's registered reference matches at copy level is not indexed:
    it is held for an admin's decision (202, ``status: held``), so no brand can take over
    another's detections. Every add, hold, decision and removal is in the audit log."""
    up = await read_uploads(request, settings, max_files=1)
    if len(up.images) != 1:
        raise InputError("send exactly one image as the multipart 'file' part")
    brand = principal.brand_scope(up.fields.get("brand") or None)
    if brand is None:
        raise InputError("an admin must name the brand of the reference")
    ref = NewReference.parse(up.fields, brand, hashlib.sha256(up.images[0]).hexdigest())
    live, body = await service.catalog.add(up.images[0], ref, actor=principal.actor)
    return body if live else JSONResponse(body, status_code=202)


@router.get("/v1/references/held", response_model=HeldListOut)
def list_held(principal: ReferenceManager, service: ServiceDep, brand: str | None = None,
              status: Annotated[str | None, Query(pattern="^(pending|approved|rejected)$")] = "pending",
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """References held for an admin's review. A brand key sees its own, without the other
    brand's matched reference; an admin sees all, with the conflicts."""
    scope = principal.brand_scope(brand)
    held = service.catalog.quarantine.list(status=status, brand=scope, limit=limit)
    return {"brand": scope, "status": status, "held": [h.to_dict(with_conflicts=principal.is_admin) for h in held]}


@router.post("/v1/references/held/{held_id}/{decision}", response_model=HeldOut,
             responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "already decided"}})
async def decide_held(held_id: str, decision: Annotated[str, Path(pattern="^(approve|reject)$")],
                      principal: ReferenceDecider, service: ServiceDep,
                      note: Annotated[str, Query(max_length=1000)] = "") -> dict[str, Any]:
    """Approve (index it, one generation) or reject (its stored image is removed) a held reference."""
    return await service.catalog.decide(held_id, decision == "approve", principal.actor, note)


@router.get("/v1/references/audit", response_model=AuditOut)
def reference_audit(principal: ReferenceDecider, service: ServiceDep, brand: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """Who added, held, approved, rejected or removed which reference, newest first (admin)."""
    return {"entries": service.catalog.quarantine.audit_log(limit=limit, brand=brand)}


@router.delete("/v1/references/{reference_id:path}", response_model=ReferenceDeletedOut, responses=NOT_FOUND)
async def delete_reference(reference_id: str, principal: ReferenceManager, service: ServiceDep) -> dict[str, Any]:
    """Remove a reference from the index (one generation). Another brand's id answers 404."""
    return await service.catalog.remove(reference_id, principal.row_scope(), actor=principal.actor)
