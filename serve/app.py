"""The brandguard HTTP service: one verified bundle, micro-batched inference, leads and complaints.

``create_app(settings)`` builds the app; nothing is loaded until its lifespan starts, which
builds the :class:`~brandguard.serve.services.Service` (ONE verified bundle with its index, the
leads database, the batcher). Where things live:

- ``routes/``: one ``APIRouter`` per domain (ops, check, leads, references, complaints, review);
- ``services/``: what the routes call (inference, references, media, checks, evidence);
- ``deps.py``: the FastAPI dependencies (settings, service, caller and role);
- ``errors.py``: every domain error and the one table mapping it to an HTTP status;
- ``middleware.py``: the ASGI guard (request ids, body caps and timeouts, metrics, access log);
- ``admission.py``: per-key request slots (429) and images admitted once their body arrived (503).

FastAPI's own /openapi.json and /docs are switched off: ``routes/ops.py`` serves them behind
the same rule as /metrics (``Settings.public_metrics``).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from brandguard.serve.admission import Admission
from brandguard.serve.errors import install_error_handlers
from brandguard.serve.metrics import Metrics
from brandguard.serve.middleware import Guard
from brandguard.serve.routes import ROUTERS, check
from brandguard.serve.services import Service
from brandguard.serve.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    """Build the service for ``settings``. Loading happens in the lifespan, not here."""
    metrics = Metrics()
    admission = Admission(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await Service.start(settings, metrics, admission)
        app.state.service = service
        app.state.store = service.store
        try:
            yield
        finally:
            app.state.service = None
            await service.stop()

    app = FastAPI(title="brandguard", version=_version(), lifespan=lifespan, openapi_url=None, docs_url=None,
                  redoc_url=None, description="Finds copies and knockoffs of brand imagery in marketplace listing "
                  "photos.")
    app.state.service = None
    app.state.store = None
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.admission = admission
    install_error_handlers(app, settings)
    app.add_middleware(Guard, settings=settings, metrics=metrics)
    for router in ROUTERS:
        app.include_router(router)
    check.document_limits(app, settings)
    return app


def _version() -> str:
    from brandguard import __version__

    return __version__


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory brandguard.serve.app:app_from_env`` (settings from BRANDGUARD_*)."""
    return create_app(Settings())
