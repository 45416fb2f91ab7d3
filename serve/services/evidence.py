"""Assembling evidence packages of leads and complaints from what the service stored.

The zip format itself (files, sha256 manifest) is :mod:`brandguard.serve.evidence`; this module
decides what goes in: the listing upload, the matched references still indexed, the verdict
as the brand may see it, and the model and index versions then and now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brandguard.cases.complaints import Complaint
from brandguard.cases.db import NotFoundError
from brandguard.cases.leads import Lead, LeadStore
from brandguard.serve.evidence import EvidencePackage, safe_name
from brandguard.serve.services.media import MediaStore
from brandguard.serve.services.references import ReferenceCatalog
from brandguard.serve.views import scrub_verdict

VERSION_KEYS = ("model", "model_version", "model_sha256", "embedding_dim", "providers", "index_factory",
                "index_count", "index_sha256", "index_generation", "calibration", "region_mode", "depth",
                "local_features", "local_factory", "local_descriptors", "deep_calibration")


class EvidenceBuilder:
    """Builds the zips (plain file I/O: call it from a worker thread)."""

    def __init__(self, catalog: ReferenceCatalog, media: MediaStore, store: LeadStore) -> None:
        self.catalog = catalog
        self.media = media
        self.store = store

    def _add_references(self, pkg: EvidencePackage, brand: str, verdict: dict[str, Any] | None,
                        first: str | None) -> list[dict[str, Any]]:
        """The matched references of ``brand`` (the lead's reference first, then the verdict's top hits)."""
        wanted = [first] if first else []
        for hit in (verdict or {}).get("top") or []:
            if isinstance(hit, dict) and hit.get("brand") == brand and hit.get("reference_id") not in wanted:
                wanted.append(hit.get("reference_id"))
        out = []
        for rid in wanted[:5]:
            ref = self.catalog.references.get(rid)
            entry = {"reference_id": rid, "score": next((h.get("score") for h in (verdict or {}).get("top") or []
                                                         if isinstance(h, dict) and h.get("reference_id") == rid),
                                                        None)}
            if ref is None or ref.brand != brand:
                pkg.missing.append({"file": f"references/{safe_name(rid)}", "what": f"reference {rid}",
                                    "reason": "no longer indexed"})
            else:
                name = f"references/{safe_name(rid)}{Path(ref.source).suffix.lower()}"
                if pkg.add_file(name, ref.source, f"reference {rid}"):
                    entry.update(file=name, sku=ref.sku, kind=ref.kind)
            out.append(entry)
        return out

    def _versions(self, model_at_check: str | None) -> dict[str, Any]:
        from brandguard import __version__

        return {"brandguard": __version__, "model_sha256_at_check": model_at_check,
                "serving_now": {k: self.catalog.info.get(k) for k in VERSION_KEYS}}

    def lead(self, lead: Lead) -> bytes:
        """Zip of one lead: listing image (original bytes and thumbnail), references, verdict, versions."""
        pkg = EvidencePackage({"type": "lead", "id": lead.id, "brand": lead.brand, "listing_id": lead.listing_id})
        original = self.media.file(lead.original_path)
        pkg.add_file(f"listing/original{original.suffix if original else ''}", original, "listing upload (original)")
        pkg.add_file("listing/thumbnail.jpg", self.media.file(lead.image_path), "listing thumbnail")
        refs = self._add_references(pkg, lead.brand, lead.evidence, lead.reference_id)
        pkg.add_json("verdict.json", scrub_verdict(lead.evidence, lead.brand))
        view = {k: v for k, v in lead.to_dict().items() if k not in ("image_path", "original_path", "evidence")}
        pkg.add_json("lead.json", {**view, "matched_references": refs,
                                   "history": [f.to_dict() for f in self.store.history(lead.id)]})
        pkg.add_json("versions.json", self._versions(lead.model_sha256))
        return pkg.to_zip()

    def complaint(self, complaint: Complaint) -> bytes:
        """Zip of one complaint: the uploaded image, verdict, references, linked lead, versions."""
        pkg = EvidencePackage({"type": "complaint", "id": complaint.id, "brand": complaint.brand,
                               "listing_id": complaint.listing_id})
        upload = self.media.file(complaint.image_path)
        pkg.add_file(f"listing/original{upload.suffix if upload else ''}", upload, "complained-about upload")
        lead = None
        if complaint.lead_id is not None:
            try:
                lead = self.store.get_lead(complaint.lead_id, brand=complaint.brand)
            except NotFoundError:
                lead = None
        refs = self._add_references(pkg, complaint.brand, complaint.verdict, lead.reference_id if lead else None)
        pkg.add_json("verdict.json", scrub_verdict(complaint.verdict, complaint.brand))
        view = {k: v for k, v in complaint.to_dict().items() if k not in ("image_path", "verdict")}
        pkg.add_json("complaint.json", {**view, "matched_references": refs,
                                        "lead_status": lead.status if lead else None})
        pkg.add_json("versions.json", self._versions((complaint.verdict or {}).get("model_sha256")))
        return pkg.to_zip()
