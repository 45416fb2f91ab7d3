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
from fastapi import Depends, Header, Request

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
AuthorizationHeader = Annotated[str | None, Header()]


def get_principal(request: Request, store: StoreDep, authorization: AuthorizationHeader = None,
                  x_api_key: Annotated[str | None, Header()] = None) -> Principal:
    """Authenticate the request (a sync dependency: FastAPI runs the SQLite lookup in its threadpool)."""
    principal = authenticate(store, authorization, x_api_key)
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
                     authorization: AuthorizationHeader = None,
                     x_api_key: Annotated[str | None, Header()] = None) -> Principal | None:
    """None when ops data is public here; otherwise the admin caller (401 without a key, 403 for others)."""
    if ops_public(settings, request.scope):
        return None
    store = get_store(request)
    principal = await anyio.to_thread.run_sync(authenticate, store, authorization, x_api_key)
    request.state.principal = principal
    principal.require("read_ops")
    _take_key_slot(request, admission, principal)
    return principal


async def ops_visible(request: Request, settings: SettingsDep, authorization: AuthorizationHeader = None,
                      x_api_key: Annotated[str | None, Header()] = None) -> bool:
    """Like :func:`ops_caller` but never refuses: False instead of 401/403 (for /readyz's details)."""
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
