"""Probes and metrics: liveness, readiness with model and index versions, Prometheus text."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from brandguard.serve.deps import SettingsDep

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. Says nothing about the model (that is /readyz)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request, settings: SettingsDep) -> JSONResponse:
    """Readiness: the bundle is loaded and the batcher runs; reports model and index versions."""
    service = request.app.state.service
    if service is None or not service.batcher.running:
        return JSONResponse({"status": "not_ready"}, status_code=503,
                            headers={"Retry-After": str(settings.retry_after_s)})
    inference = service.inference
    return JSONResponse({"status": "ready", **service.info, "queue_depth": service.batcher.depth,
                         "queue_size": service.batcher.queue_size, "max_batch": service.batcher.max_batch,
                         "inflight": inference.inflight, "at_door": inference.at_door,
                         "inflight_limit": settings.inflight_limit})


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics_endpoint(request: Request, settings: SettingsDep) -> PlainTextResponse:
    service = request.app.state.service
    metrics = request.app.state.metrics
    text = metrics.render(service.batcher if service else None, service.info if service else {},
                          (service.inference.inflight, settings.inflight_limit, service.inference.admission_rejected)
                          if service else None)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")
