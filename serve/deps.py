"""FastAPI dependencies: the settings, the service and its database, and who is calling.

Endpoints declare what they need with the ``Annotated`` aliases below (``ServiceDep``,
``Checker``, ...); each alias authenticates and checks one capability of the caller's role.
"""

from __future__ import annotations

from typing import Annotated, Callable

from fastapi import Depends, Header, Request

from brandguard.cases.leads import LeadStore
from brandguard.serve.auth import CAPABILITIES, Principal, authenticate
from brandguard.serve.errors import BatcherStoppedError
from brandguard.serve.services import Service
from brandguard.serve.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_service(request: Request) -> Service:
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise BatcherStoppedError("service is not ready")
    return service


def get_store(request: Request) -> LeadStore:
    return request.app.state.store


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[Service, Depends(get_service)]
StoreDep = Annotated[LeadStore, Depends(get_store)]


def get_principal(request: Request, store: StoreDep,
                  authorization: Annotated[str | None, Header()] = None,
                  x_api_key: Annotated[str | None, Header()] = None) -> Principal:
    """Authenticate the request (a sync dependency: FastAPI runs the SQLite lookup in its threadpool)."""
    principal = authenticate(store, authorization, x_api_key)
    request.state.principal = principal
    return principal


def require(capability: str) -> Callable[[Principal], Principal]:
    """A dependency that authenticates and checks one capability."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}")

    def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        return principal.require(capability)

    dependency.__name__ = f"require_{capability}"
    return dependency


Checker = Annotated[Principal, Depends(require("check"))]
LeadReader = Annotated[Principal, Depends(require("read_leads"))]
Complainer = Annotated[Principal, Depends(require("complain"))]
ComplaintDecider = Annotated[Principal, Depends(require("decide_complaints"))]
ReferenceManager = Annotated[Principal, Depends(require("manage_references"))]
