"""FastAPI dependencies: the settings, the service and its database, and who is calling.

Endpoints declare what they need with the ``Annotated`` aliases below (``ServiceDep``,
``Checker``, ...). Each role alias authenticates (a SQLite lookup, in FastAPI's threadpool),
checks one capability of the caller's role, then takes one of the key's request slots
(:meth:`Admission.enter_key`, 429 beyond ``max_inflight_per_key``), given back when the
answer starts.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable

import anyio
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer

from brandguard.cases.leads import LeadStore
from brandguard.errors import BrandguardError
from brandguard.serve.admission import Admission
from brandguard.serve.auth import CAPABILITIES, Principal, authenticate
from brandguard.serve.errors import BatcherStoppedError
from brandguard.serve.middleware import on_answer
from brandguard.serve.services import Service
from brandguard.serve.settings import Settings, is_loopback


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_service(request: Request) -> Service:
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise BatcherStoppedError("service is not ready")
    return service


def get_store(request: Request) -> LeadStore:
    store = getattr(request.app.state, "store", None)
    if store is None:
        raise BatcherStoppedError("service is not ready")
    return store


def get_admission(request: Request) -> Admission:
    return request.app.state.admission


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[Service, Depends(get_service)]
StoreDep = Annotated[LeadStore, Depends(get_store)]
AdmissionDep = Annotated[Admission, Depends(get_admission)]

# The two ways to send a key, declared as OpenAPI security schemes so /docs' "Authorize" can
# send either. They only document: the headers are read by :func:`key_headers` (with
# auto_error off these would turn a malformed header into "no key", hiding why it was refused).
BEARER = HTTPBearer(auto_error=False, scheme_name="bearer", bearerFormat="API key",
                    description="`Authorization: Bearer <key>` (keys: `brandguard serve create-key ROLE`)")
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey",
                       description="the same key in the `X-API-Key` header")


def key_headers(request: Request, _bearer: Annotated[Any, Security(BEARER)] = None,
                _api_key: Annotated[Any, Security(API_KEY)] = None) -> tuple[str | None, str | None]:
    """(Authorization, X-API-Key) as sent."""
    return request.headers.get("authorization"), request.headers.get("x-api-key")


KeyHeaders = Annotated[tuple[str | None, str | None], Depends(key_headers)]


def get_principal(request: Request, store: StoreDep, headers: KeyHeaders) -> Principal:
    """Authenticate the request (a sync dependency: FastAPI runs the SQLite lookup in its threadpool)."""
    principal = authenticate(store, *headers)
    request.state.principal = principal
    return principal


def _take_key_slot(request: Request, admission: Admission, principal: Principal) -> None:
    on_answer(request.scope, admission.enter_key(principal.key_id))


def require(capability: str) -> Callable[..., Any]:
    """A dependency that authenticates, checks one capability and takes a key slot (event loop)."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}")

    async def dependency(request: Request, admission: AdmissionDep,
                         principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        principal.require(capability)
        _take_key_slot(request, admission, principal)
        return principal

    dependency.__name__ = f"require_{capability}"
    return dependency


Checker = Annotated[Principal, Depends(require("check"))]
LeadReader = Annotated[Principal, Depends(require("read_leads"))]
Complainer = Annotated[Principal, Depends(require("complain"))]
ComplaintDecider = Annotated[Principal, Depends(require("decide_complaints"))]
ReferenceManager = Annotated[Principal, Depends(require("manage_references"))]
ReferenceDecider = Annotated[Principal, Depends(require("decide_references"))]


# ---------------------------------------------------------------------------- ops data
def ops_public(settings: Settings, scope: dict[str, Any]) -> bool:
    """Whether model and index hashes, index size and request counts may be shown without a key."""
    if settings.public_metrics is not None:
        return settings.public_metrics
    server = scope.get("server") or ("", None)
    return is_loopback(str(server[0]))  # the local address this connection arrived on


async def ops_caller(request: Request, settings: SettingsDep, admission: AdmissionDep,
                     headers: KeyHeaders) -> Principal | None:
    """None when ops data is public here; otherwise the admin caller (401 without a key, 403 for others)."""
    if ops_public(settings, request.scope):
        return None
    store = get_store(request)
    principal = await anyio.to_thread.run_sync(authenticate, store, *headers)
    request.state.principal = principal
    principal.require("read_ops")
    _take_key_slot(request, admission, principal)
    return principal


async def ops_visible(request: Request, settings: SettingsDep, headers: KeyHeaders) -> bool:
    """Like :func:`ops_caller` but never refuses: False instead of 401/403 (for /readyz's details)."""
    authorization, x_api_key = headers
    if ops_public(settings, request.scope):
        return True
    if not (authorization or x_api_key) or getattr(request.app.state, "store", None) is None:
        return False
    try:
        principal = await anyio.to_thread.run_sync(authenticate, request.app.state.store, authorization, x_api_key)
    except BrandguardError:
        return False
    return principal.can("read_ops")


OpsReader = Annotated[Principal | None, Depends(ops_caller)]
OpsVisible = Annotated[bool, Depends(ops_visible)]
