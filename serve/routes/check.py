"""Checks: one image, or a batch of images with their listings."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request

from brandguard.errors import InputError
from brandguard.serve.deps import Checker, ServiceDep, SettingsDep
from brandguard.serve.schemas import (BATCH_FORM_FIELDS, ERROR_RESPONSES, LISTING_FORM_FIELDS, CheckBatchOut, CheckOut,
                                      ErrorOut, ListingFields, multipart_body, parse_listing, parse_listings)
from brandguard.serve.settings import Settings
from brandguard.serve.uploads import read_uploads

router = APIRouter(tags=["check"], responses={
    **ERROR_RESPONSES, 408: {"model": ErrorOut, "description": "the body did not arrive in time"},
    413: {"model": ErrorOut, "description": "upload over the limit"},
    415: {"model": ErrorOut, "description": "neither multipart nor an image body"},
    504: {"model": ErrorOut, "description": "no verdict within the request timeout"}})
BATCH_PATH = "/v1/check/batch"


@router.post("/v1/check", response_model=CheckOut, openapi_extra=multipart_body(LISTING_FORM_FIELDS, raw=True))
async def check(request: Request, principal: Checker, service: ServiceDep, settings: SettingsDep) -> dict[str, Any]:
    """Judge one image: multipart ``file`` (+ listing_id, seller_id, price fields) or the raw body
    (+ the same as query parameters). Scanner and admin keys with a listing_id record leads."""
    up = await read_uploads(request, settings, max_files=1)
    if len(up.images) != 1:
        raise InputError("send exactly one image (multipart file part, or the raw request body)")
    listing = parse_listing({**dict(request.query_params), **up.fields})
    return (await service.checks.check(up.images, [listing], principal))[0]


@router.post(BATCH_PATH, response_model=CheckBatchOut, openapi_extra=multipart_body(BATCH_FORM_FIELDS, files=16))
async def check_batch(request: Request, principal: Checker, service: ServiceDep,
                      settings: SettingsDep) -> dict[str, Any]:
    """Judge several images (multipart file parts, in order). Optional form field ``listings``:
    a JSON array of {listing_id, seller_id, price, title, brand_hint, depth}, aligned with the files.
    Images past the request's decode budget (header-declared decoded bytes) are answered
    ``inconclusive`` with reason ``decode_budget``."""
    up = await read_uploads(request, settings, max_files=settings.max_files)
    if not up.images:
        raise InputError("send at least one image as a multipart file part")
    listings = [ListingFields()] * len(up.images)
    if up.fields.get("listings"):
        listings = parse_listings(up.fields["listings"], len(up.images))
    return {"results": await service.checks.check(up.images, listings, principal)}


def document_limits(app: FastAPI, settings: Settings) -> None:
    """Put this app's ``max_files`` into the batch body's OpenAPI (routers are shared between apps,
    so the per-app number goes in through FastAPI's documented ``app.openapi`` override)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            body = schema["paths"][BATCH_PATH]["post"]["requestBody"]["content"]["multipart/form-data"]
            body["schema"]["properties"]["file"]["maxItems"] = settings.max_files
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
