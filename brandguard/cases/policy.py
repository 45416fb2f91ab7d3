"""What a verdict becomes: a lead, an authorised seller's listing, or nothing. One rule for both paths.

The scanner (``scan --leads-db --brand-info``) and the service (``POST /v1/check`` with a
scanner key, on a service started with ``--brand-info``) both ask :class:`LeadPolicy`, so the
same listing makes the same lead whichever path judged it: the same authorised-seller check,
the same risk (:func:`brandguard.cases.risk.risk_score`: visual confidence, price against the
brand's reference price for the matched SKU, the seller's confirmed counterfeits) and the same
fields (the verdict's dict as evidence, the brand's best matching reference, risk and its parts).

A verdict is taken as its JSON dict (``Verdict.to_dict()``: verdict, brand, confidence, score,
top, evidence, reason): this layer does not import the pipeline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from brandguard.cases.leads import FLAGGED_VERDICTS, LeadInput
from brandguard.cases.risk import BrandInfo, load_brand_info, reference_price, risk_score

LEAD = "lead"
AUTHORIZED = "authorized"
# seller id -> confirmed counterfeits (every brand's): the seller signal of the risk
SellerHistory = Callable[[str], int]


@dataclass(frozen=True)
class ListingFacts:
    """What the marketplace says about a listing besides its image."""

    listing_id: str
    seller_id: str | None = None
    price: float | None = None


@dataclass(frozen=True)
class LeadDecision:
    """``outcome``: ``lead``, ``authorized`` (flagged, but the seller may sell the brand) or ``""``
    (not flagged for a brand); a lead has its risk and the risk's parts."""

    outcome: str
    brand: str | None = None
    risk: float | None = None
    risk_parts: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def is_lead(self) -> bool:
        return self.outcome == LEAD


NOT_FLAGGED = LeadDecision("")


def best_reference(verdict: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The flagged brand's best hit (a lead shows the brand's own reference, never another's)."""
    top = [h for h in verdict.get("top") or [] if isinstance(h, Mapping)]
    return next((h for h in top if h.get("brand") == verdict.get("brand")), top[0] if top else None)


class LeadPolicy:
    """Authorised sellers and risk for flagged verdicts, from brands.json and the seller history."""

    def __init__(self, brand_info: Mapping[str, BrandInfo] | None = None,
                 seller_history: SellerHistory | None = None) -> None:
        self.brand_info = dict(brand_info or {})
        self.seller_history = seller_history or (lambda seller: 0)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str] | None, seller_history: SellerHistory | None = None
                  ) -> "LeadPolicy":
        """The policy of a ``--brand-info`` file (None: no authorised sellers, no reference prices)."""
        return cls(load_brand_info(path), seller_history)

    def decide(self, verdict: Mapping[str, Any], seller_id: str | None, price: float | None) -> LeadDecision:
        """Lead, authorised seller's listing, or not flagged; a lead's risk (visual, price, seller)."""
        brand = verdict.get("brand")
        if verdict.get("verdict") not in FLAGGED_VERDICTS or not brand:
            return NOT_FLAGGED
        info = self.brand_info.get(brand)
        if info is not None and seller_id and seller_id in info.authorized_sellers:
            return LeadDecision(AUTHORIZED, brand)
        hit = best_reference(verdict)
        sku = (hit.get("sku") or None) if hit else None
        risk, parts = risk_score(verdict["verdict"], float(verdict.get("confidence") or 0.0), price,
                                 reference_price(info, sku), self.seller_history(seller_id) if seller_id else 0)
        return LeadDecision(LEAD, brand, risk, parts)

    @staticmethod
    def lead_input(verdict: Mapping[str, Any], listing: ListingFacts, decision: LeadDecision, *,
                   model_sha256: str, image_path: str | None, original_path: str | None) -> LeadInput:
        """The lead a decision records: the verdict's dict as evidence, the brand's best reference,
        the listing's seller and price, the stored images and the risk."""
        if not decision.is_lead:
            raise ValueError(f"only a lead is recorded, not {decision.outcome!r}")
        hit = best_reference(verdict)
        return LeadInput(
            listing_id=listing.listing_id, brand=decision.brand or "", verdict=verdict["verdict"],
            confidence=float(verdict.get("confidence") or 0.0), score=verdict.get("score"),
            reference_id=hit.get("reference_id") if hit else None, image_path=image_path,
            seller_id=listing.seller_id or None, price=listing.price, evidence=dict(verdict),
            model_sha256=model_sha256 or "", original_path=original_path, risk=decision.risk,
            risk_parts=decision.risk_parts)
