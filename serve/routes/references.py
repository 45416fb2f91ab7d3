"""References: list, register and remove a brand's reference images, and their thumbnails."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from brandguard.errors import InputError
from brandguard.serve.deps import LeadReader, ReferenceManager, ServiceDep, SettingsDep
from brandguard.serve.schemas import MAX_OFFSET, REFERENCE_FORM_FIELDS, NewReference, multipart_body
from brandguard.serve.uploads import read_uploads
from brandguard.serve.views import reference_view

router = APIRouter(tags=["references"])


@router.get("/v1/references/{reference_id:path}/image", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
def reference_image(reference_id: str, principal: LeadReader, service: ServiceDep) -> Response:
    service.catalog.visible(reference_id, principal.row_scope())
    return Response(service.catalog.thumbnail(reference_id), media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=3600"})


@router.get("/v1/references")
def list_references(principal: ReferenceManager, service: ServiceDep, brand: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
                    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict[str, Any]:
    """Indexed references of a brand (a brand key: its own; admin: any or all), by id."""
    scope = principal.brand_scope(brand)
    refs = service.catalog.references  # one snapshot: writers replace the mapping, never mutate it
    ids = sorted(k for k, v in refs.items() if scope is None or v.brand == scope)
    return {"brand": scope, "total": len(ids), "index_generation": service.info.get("index_generation"),
            "references": [reference_view(k, refs[k]) for k in ids[offset:offset + limit]]}


@router.post("/v1/references", status_code=201, openapi_extra=multipart_body(REFERENCE_FORM_FIELDS))
async def add_reference(request: Request, principal: ReferenceManager, service: ServiceDep,
                        settings: SettingsDep) -> dict[str, Any]:
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
    return await service.catalog.add(up.images[0], ref)


@router.delete("/v1/references/{reference_id:path}")
async def delete_reference(reference_id: str, principal: ReferenceManager, service: ServiceDep) -> dict[str, Any]:
    """Remove a reference from the index (one generation). Another brand's id answers 404."""
    return await service.catalog.remove(reference_id, principal.row_scope())
