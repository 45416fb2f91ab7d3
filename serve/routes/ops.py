"""Probes, metrics and the API description.

/healthz and /readyz's status answer anyone (probes carry no key). Model and index hashes,
index size, queue and request counts (/readyz's details, /metrics) and the API description
(/openapi.json, /docs, /redoc) are public only where ``Settings.public_metrics`` allows
(by default: connections to a loopback address); elsewhere they need an admin key.

/docs and /redoc load Swagger UI and ReDoc from the installed ``fastapi-offline`` package
(served under /docs/static), never from a CDN: the pages work on a machine with no internet.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from brandguard.errors import NotFoundError
from brandguard.serve.deps import OpsReader, OpsVisible, SettingsDep
from brandguard.serve.schemas import ReadyOut, StatusOut

router = APIRouter(tags=["ops"])
OPENAPI_URL = "/openapi.json"
DOCS_STATIC = "/docs/static"
# The only files served from the docs package, with their types (nothing else of it is reachable).
DOCS_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
               "redoc.standalone.js": "text/javascript", "favicon.png": "image/png"}


def docs_assets_dir() -> Path:
    """Swagger UI and ReDoc as the ``fastapi-offline`` wheel ships them (serve extra)."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).resolve().parent / "static"


@router.get("/healthz", response_model=StatusOut)
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. Says nothing about the model (that is /readyz)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut, "description": "not ready"}})
async def readyz(request: Request, settings: SettingsDep, details: OpsVisible) -> JSONResponse:
    """Readiness: the bundle is loaded and the batcher runs; with ops access, model and index versions."""
    service = request.app.state.service
    if service is None or not service.batcher.running:
        return JSONResponse({"status": "not_ready"}, status_code=503,
                            headers={"Retry-After": str(settings.retry_after_s)})
    if not details:
        return JSONResponse({"status": "ready"})
    admission = request.app.state.admission
    return JSONResponse({"status": "ready", **service.info, "queue_depth": service.batcher.depth,
                         "queue_size": service.batcher.queue_size, "max_batch": service.batcher.max_batch,
                         "inflight": admission.inflight, "at_door": admission.requests,
                         "inflight_limit": settings.inflight_limit, "large_decodes": service.lanes.large_jobs})


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
async def metrics_endpoint(request: Request, _: OpsReader) -> PlainTextResponse:
    """Prometheus text format."""
    service = request.app.state.service
    text = request.app.state.metrics.render(service.batcher if service else None, service.info if service else {},
                                            request.app.state.admission,
                                            service.lanes.large_jobs if service else None)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get(OPENAPI_URL, include_in_schema=False)
async def openapi(request: Request, _: OpsReader) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False)
async def docs(request: Request, _: OpsReader) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - Swagger UI",
                               oauth2_redirect_url="/docs/oauth2-redirect",
                               swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
                               swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
                               swagger_favicon_url=f"{DOCS_STATIC}/favicon.png",
                               # no validator badge: it would call an outside service
                               swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False})


@router.get(DOCS_STATIC + "/{name}", include_in_schema=False)
async def docs_static(name: str) -> Response:
    """Swagger UI's and ReDoc's own files (public software, no data: no key needed)."""
    if name not in DOCS_ASSETS:
        raise NotFoundError(f"no docs asset {name!r}")
    data = (docs_assets_dir() / name).read_bytes()
    return Response(data, media_type=DOCS_ASSETS[name], headers={"Cache-Control": "public, max-age=86400"})


@router.get("/docs/oauth2-redirect", include_in_schema=False)
async def docs_oauth2_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc", include_in_schema=False)
async def redoc(request: Request, _: OpsReader) -> HTMLResponse:
    return get_redoc_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - ReDoc",
                          redoc_js_url=f"{DOCS_STATIC}/redoc.standalone.js",
                          redoc_favicon_url=f"{DOCS_STATIC}/favicon.png", with_google_fonts=False)
