"""What each caller sees of leads, complaints, references and verdicts.

Records leave the service through these functions only: server paths are dropped, links to
images and evidence packages are added, and a ``brand:<name>`` key sees its own brand's
matches and nothing of other brands' references.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi.responses import Response

from brandguard.cases.explain import decision_rule, drawing
from brandguard.cases.complaints import Complaint
from brandguard.cases.leads import TRANSITIONS, Lead
from brandguard.serve.auth import Principal

if TYPE_CHECKING:  # index.store loads FAISS: not at import time
    from brandguard.index.store import ReferenceRecord

# Evidence keys that describe a verdict's best candidate (scrubbed from clear verdicts for brand keys).
CANDIDATE_EVIDENCE = frozenset({"local", "match_box", "geometry", "global_score", "fused_probability", "cosine",
                                "region", "region_box", "decided_by", "stage"})


def scrub_verdict(d: dict[str, Any], brand: str | None) -> dict[str, Any]:
    """What a ``brand:<name>`` key may see of a verdict: its own brand's matches only.

    Checks search every registered brand; another brand's reference ids, SKUs and scores are
    that brand's business. A verdict for another brand reads as ``clear`` for this brand.
    """
    if brand is None or not isinstance(d, dict) or "verdict" not in d:
        return d
    out = dict(d)
    out["top"] = [h for h in d.get("top") or [] if isinstance(h, dict) and h.get("brand") == brand]
    if d.get("brand") not in (None, brand):
        out.update(verdict="clear", brand=None, score=None, confidence=1.0,
                   evidence={"note": "no match among this brand's references"})
    elif d.get("brand") is None and isinstance(d.get("evidence"), dict):
        # a clear verdict's evidence describes its best candidate, whichever brand that was
        out["evidence"] = {k: v for k, v in d["evidence"].items() if k not in CANDIDATE_EVIDENCE}
        out["score"] = None
    return out


def lead_view(lead: Lead, principal: Principal, can_undo: bool = False) -> dict[str, Any]:
    """A lead as its brand's reviewer sees it: links instead of server paths, the moves allowed
    now, whether an undo is possible, and what to draw on the listing with the rule that decided
    (:mod:`brandguard.cases.explain`, the same as the scan report's)."""
    d = lead.to_dict()
    if principal.row_scope() is not None and isinstance(d["evidence"].get("top"), list):
        # A brand sees its own references among the matches, not other brands' reference ids.
        d["evidence"] = {**d["evidence"], "top": [h for h in d["evidence"]["top"]
                                                  if isinstance(h, dict) and h.get("brand") == lead.brand]}
    d.pop("image_path", None)  # server paths: clients fetch /v1/leads/{id}/image instead
    d.pop("original_path", None)
    d["evidence_url"] = f"/v1/leads/{lead.id}/evidence.zip"
    d["allowed_next"] = sorted(TRANSITIONS[lead.status])
    d["image_url"] = f"/v1/leads/{lead.id}/image" if lead.image_path else None
    d["reference_image_url"] = f"/v1/references/{lead.reference_id}/image" if lead.reference_id else None
    d["can_undo"] = can_undo
    inner = d["evidence"].get("evidence") if isinstance(d["evidence"].get("evidence"), dict) else {}
    d["drawing"] = drawing(inner, lead.brand)
    d["rule"] = decision_rule(lead.verdict, lead.score, inner) or None
    return d


def complaint_view(c: Complaint, principal: Principal | None = None) -> dict[str, Any]:
    d = c.to_dict()
    if principal is not None and principal.row_scope() is not None:
        d["verdict"] = scrub_verdict(d.get("verdict"), principal.row_scope())
    d.pop("image_path", None)  # a server path
    d["evidence_url"] = f"/v1/complaints/{c.id}/evidence.zip"
    return d


def reference_view(reference_id: str, ref: ReferenceRecord) -> dict[str, Any]:
    return {"reference_id": reference_id, "brand": ref.brand, "sku": ref.sku, "kind": ref.kind,
            "image_url": f"/v1/references/{reference_id}/image"}


def zip_response(data: bytes, filename: str) -> Response:
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "Cache-Control": "private, no-store"})
