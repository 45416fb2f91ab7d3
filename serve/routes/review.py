"""The review page: static HTML that asks for a key and calls the API from the browser."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

REVIEW_PAGE = Path(__file__).resolve().parent.parent / "review.html"
router = APIRouter(tags=["review"])


@router.get("/review", response_class=HTMLResponse)
def review() -> HTMLResponse:
    """Static page (no data inside): it asks for a key and calls the API from the browser."""
    return HTMLResponse(REVIEW_PAGE.read_text(encoding="utf-8"),
                        headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; "
                                 "style-src 'unsafe-inline'; script-src 'unsafe-inline'",
                                 "Cache-Control": "no-cache"})
