"""Every error the service answers with, and the one table that turns each into an HTTP status.

Endpoints, dependencies and the ASGI guard raise typed exceptions; nothing else in the service
picks a status code. :data:`ERRORS` is read top to bottom (first match wins), so subclasses
come before the classes they refine.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from brandguard.cases.db import IllegalTransitionError
from brandguard.cases.leads import NothingToUndoError
from brandguard.errors import BrandguardError, BundleError, InputError, NotFoundError, ReferenceIndexError
from brandguard.serve.settings import Settings

log = logging.getLogger("brandguard.serve")


class UnauthenticatedError(BrandguardError):
    """No API key, or one that is unknown or revoked (HTTP 401)."""


class ForbiddenError(BrandguardError):
    """The key is valid but its role may not do this (HTTP 403)."""


class PayloadTooLargeError(BrandguardError):
    """A request body or an uploaded image is over the configured limit (HTTP 413)."""


class BodyTimeoutError(BrandguardError):
    """The request body did not arrive in time, or arrived too slowly (HTTP 408)."""


class TooManyRequestsError(BrandguardError):
    """This API key already has its share of requests inside the service (HTTP 429)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class UnsupportedMediaError(BrandguardError):
    """The request body is neither multipart nor raw image bytes (HTTP 415)."""


class ReferenceExistsError(BrandguardError):
    """A reference with this id is already indexed: remove it first (HTTP 409)."""


class QueueFullError(BrandguardError):
    """The service cannot take these images now; retry after ``retry_after_s`` (HTTP 503)."""

    def __init__(self, wanted: int, free: int, retry_after_s: int, what: str = "inference queue full") -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"{what}: {wanted} image(s) offered, {free} slot(s) free")


class BatcherStoppedError(BrandguardError):
    """The batcher is not running: starting up, shutting down, or its task died (HTTP 503)."""


class InferenceTimeoutError(BrandguardError):
    """No verdict within the request timeout (HTTP 504)."""


ERRORS: tuple[tuple[type[BaseException], int, str], ...] = (
    (UnauthenticatedError, 401, "unauthenticated"),
    (ForbiddenError, 403, "forbidden"),
    (NotFoundError, 404, "not_found"),
    (BodyTimeoutError, 408, "request_timeout"),
    (IllegalTransitionError, 409, "illegal_transition"),
    (NothingToUndoError, 409, "nothing_to_undo"),
    (ReferenceExistsError, 409, "conflict"),
    (PayloadTooLargeError, 413, "payload_too_large"),
    (UnsupportedMediaError, 415, "unsupported_media_type"),
    (TooManyRequestsError, 429, "too_many_requests"),
    (QueueFullError, 503, "overloaded"),
    (BatcherStoppedError, 503, "not_ready"),
    (InferenceTimeoutError, 504, "inference_timeout"),
    (InputError, 400, "bad_request"),
    (BundleError, 503, "bundle_error"),
    (ReferenceIndexError, 503, "index_error"),
    (BrandguardError, 500, "internal_error"),
)


def error_status(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, error code) of an exception, from :data:`ERRORS`."""
    for cls, status, code in ERRORS:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal_error"


def error_response(exc: BaseException, settings: Settings) -> JSONResponse:
    """The JSON answer for a domain error: status and code from :data:`ERRORS`, plus its headers."""
    status, code = error_status(exc)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status in (429, 503):
        headers["Retry-After"] = str(getattr(exc, "retry_after_s", settings.retry_after_s))
    if status in (408, 413):
        headers["Connection"] = "close"  # the rest of the body was not read
    return JSONResponse({"error": code, "detail": str(exc)}, status_code=status, headers=headers)


async def send_error(send, exc: BaseException, settings: Settings) -> None:
    """Send :func:`error_response` straight from ASGI middleware (outside FastAPI's handlers)."""
    response = error_response(exc, settings)
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def install_error_handlers(app: FastAPI, settings: Settings) -> None:
    """Domain errors, Starlette's HTTP errors and request validation all answer JSON."""

    async def domain_error(request: Request, exc: BrandguardError) -> JSONResponse:
        status = error_status(exc)[0]
        if status >= 500 and status not in (503, 504):
            log.error("request failed", exc_info=exc, extra={"request_id": request.scope.get("state", {})
                                                             .get("request_id"), "path": request.url.path})
        return error_response(exc, settings)

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": "http_error", "detail": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse({"error": "validation_error", "detail": errs}, status_code=422)

    app.add_exception_handler(BrandguardError, domain_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
