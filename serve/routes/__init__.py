"""The HTTP endpoints, one ``APIRouter`` per domain; :func:`brandguard.serve.app.create_app`
includes them in this order (paths of different domains never overlap)."""

from __future__ import annotations

from brandguard.serve.routes import check, complaints, leads, ops, references, review

ROUTERS = (ops.router, check.router, leads.router, references.router, complaints.router, review.router)
