"""Checks and complaints: judge uploads, and turn flagged verdicts into leads a brand works on.

A check that names a listing (``listing_id``) and is flagged for a brand becomes that brand's
lead (scanner and admin keys only; brand keys check without recording), by the lead policy the
scanner applies too (:mod:`brandguard.cases.policy`: authorised sellers are not leads, leads
get their risk). A complaint is a brand's own report: checked at once (thorough unless asked
otherwise), settled when the verdict is decisive, and a lead when the verdict flags the
complaining brand.
"""

from __future__ import annotations

from typing import Any, Sequence

import anyio

from brandguard.cases.complaints import Complaint
from brandguard.cases.leads import Lead, LeadStore
from brandguard.cases.policy import NOT_FLAGGED, LeadDecision, LeadPolicy, ListingFacts
from brandguard.serve.auth import Principal
from brandguard.serve.metrics import Metrics
from brandguard.serve.schemas import ListingFields
from brandguard.serve.services.inference import Inference, Judged
from brandguard.serve.services.media import MediaStore
from brandguard.serve.services.references import ReferenceCatalog
from brandguard.serve.views import scrub_verdict


class Checks:
    """The check and complaint flows, over inference, media files and the leads database."""

    def __init__(self, inference: Inference, catalog: ReferenceCatalog, media: MediaStore, store: LeadStore,
                 metrics: Metrics, policy: LeadPolicy | None = None) -> None:
        self.inference = inference
        self.catalog = catalog
        self.media = media
        self.store = store
        self.metrics = metrics
        self.policy = policy or LeadPolicy(seller_history=store.confirmed_counterfeits)

    def _record_lead(self, data: bytes, verdict: dict[str, Any], listing: ListingFields,
                     decision: LeadDecision) -> tuple[Lead, bool]:
        return self.store.upsert_lead(self.policy.lead_input(
            verdict, ListingFacts(listing.listing_id or "", listing.seller_id, listing.price), decision,
            model_sha256=self.catalog.info.get("model_sha256", ""), image_path=self.media.save_thumbnail(data),
            original_path=self.media.save_original(data)))

    async def maybe_record(self, data: bytes, judged: Judged, listing: ListingFields,
                           brand: str | None) -> tuple[int | None, LeadDecision]:
        """The lead policy's decision for a check that names a listing, and the lead it upserted
        (when the verdict flags ``brand``, the verdict's own brand when None, and the seller is
        not authorised for it).

        The thumbnail decodes the upload again, so this runs in the image's decode lane."""
        verdict = judged.verdict
        brand = brand or verdict.brand
        if not listing.listing_id or verdict.brand is None or verdict.brand != brand:
            return None, NOT_FLAGGED
        as_dict = verdict.to_dict()
        decision = await anyio.to_thread.run_sync(self.policy.decide, as_dict, listing.seller_id, listing.price)
        if not decision.is_lead:
            return None, decision
        lead, created = await self.inference.lanes.run(judged.decoded_bytes, self._record_lead, data, as_dict,
                                                       listing, decision)
        self.metrics.leads_upserted["created" if created else "updated"] += 1
        return lead.id, decision

    async def check(self, images: Sequence[bytes], listings: Sequence[ListingFields],
                    principal: Principal) -> list[dict[str, Any]]:
        """Verdicts as the caller may see them; scanner and admin keys record leads, and hear the
        lead policy's decision (``lead``: lead | authorized, ``risk``).

        A brand key's check is judged against its own brand's references only, so nothing in
        the answer (score, region, candidates) comes from another brand's references."""
        judged = await self.inference.judge(images, listings, brand=principal.row_scope())
        record = principal.can("record_leads")
        out = []
        for data, j, listing in zip(images, judged, listings):
            lead_id, decision = await self.maybe_record(data, j, listing, None) if record else (None, NOT_FLAGGED)
            out.append({"listing_id": listing.listing_id, **scrub_verdict(j.verdict.to_dict(), principal.row_scope()),
                        "lead_id": lead_id, "lead": decision.outcome or None, "risk": decision.risk,
                        "model_sha256": self.catalog.info.get("model_sha256")})
        return out

    async def complain(self, image: bytes, listing: ListingFields, brand: str) -> Complaint:
        """File ``brand``'s complaint about a listing, checked at once."""
        # a complaint names the brand and is worth every stage: thorough unless the request says otherwise
        (judged,) = await self.inference.judge([image], [listing.model_copy(update={
            "depth": listing.depth or "thorough", "brand_hint": brand})], brand=brand)
        verdict = judged.verdict
        lead_id, _ = await self.maybe_record(image, judged, listing, brand)
        image_path = await anyio.to_thread.run_sync(self.media.save_original, image)
        record = {**verdict.to_dict(), "model_sha256": self.catalog.info.get("model_sha256"),
                  "index_generation": self.catalog.info.get("index_generation")}
        return await anyio.to_thread.run_sync(
            lambda: self.store.add_complaint(brand, listing.listing_id or "", record,
                                             decided=verdict.verdict != "inconclusive", lead_id=lead_id,
                                             image_path=image_path))
