"""One verdict → lead policy for both paths (``brandguard/cases/policy.py``).

The same listings go through ``brandguard scan --leads-db --brand-info`` and through
``POST /v1/check`` with a scanner key on a real service started with the same brands.json
(uvicorn on loopback, the same indexed bundle, SQLite): the authorised seller's listing is no
lead on either path, and the leads the two paths record are the same (status, risk and its
parts, reference, fields, the verdict's evidence, a thumbnail and the exact original).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from brandguard.cases.leads import LeadInput, LeadStore
from brandguard.cases.policy import LeadPolicy, ListingFacts
from brandguard.cases.risk import BrandInfo
from brandguard.cli.main import EXIT_OK, main
from brandguard.scan.results import read_results
from test_serve import serving

BRANDS_JSON = {"acme": {"authorised_sellers": ["s-auth"], "reference_prices": {"": 100.0}, "default_price": 100.0},
               "bolt": {"default_price": 50.0}}
# listing id -> (image key in Served.images, seller, price)
LISTINGS = {"P-cheap": ("copy_acme", "s-bad", 12.0), "P-auth": ("copy_acme", "s-auth", 95.0),
            "P-bolt": ("copy_bolt", "s-new", 49.0), "P-clear": ("other", "s-new", 10.0)}
SAME = ("verdict", "brand", "confidence", "score", "reference_id", "seller_id", "price", "status", "risk",
        "risk_parts", "model_sha256")


def _history(db: Path) -> None:
    """Seller s-bad already sold a confirmed counterfeit (the seller signal of the risk)."""
    store = LeadStore(db)
    try:
        old, _ = store.upsert_lead(LeadInput("OLD-1", "bolt", "copy", 0.9, seller_id="s-bad"))
        store.transition(old.id, "confirmed_counterfeit")
    finally:
        store.close()


def _leads(db: Path) -> dict[str, object]:
    store = LeadStore(db)
    try:
        return {x.listing_id: x for x in store.list_leads() if x.listing_id != "OLD-1"}
    finally:
        store.close()


def test_policy_decides_authorised_sellers_and_risk():
    policy = LeadPolicy({"acme": BrandInfo(frozenset({"s-auth"}), {"SKU1": 200.0}, 100.0)},
                        seller_history={"s-bad": 2}.get)
    copy = {"verdict": "copy", "brand": "acme", "confidence": 0.5, "score": 0.9,
            "top": [{"reference_id": "bolt/x", "brand": "bolt", "sku": "", "kind": "", "score": 0.95},
                    {"reference_id": "acme/a", "brand": "acme", "sku": "SKU1", "kind": "", "score": 0.9}]}
    assert policy.decide(copy, "s-auth", 10.0).outcome == "authorized"
    cheap = policy.decide(copy, "s-bad", 20.0)  # 10% of SKU1's 200: the sku of acme's hit, not bolt's
    assert cheap.outcome == "lead" and cheap.risk_parts["reference_price"] == 200.0
    assert cheap.risk_parts["seller_confirmed_counterfeits"] == 2 and cheap.risk > policy.decide(copy, None, None).risk
    assert policy.decide({**copy, "verdict": "clear", "brand": None}, "s-bad", 1.0).outcome == ""
    lead = policy.lead_input(copy, ListingFacts("L", "s", 1.0), cheap, model_sha256="m", image_path=None,
                             original_path=None)
    assert lead.reference_id == "acme/a" and lead.evidence == copy and lead.risk == cheap.risk


def test_scan_and_http_check_make_the_same_leads(tiny_bundle, tmp_path):
    brands = tmp_path / "brands.json"
    brands.write_text(json.dumps(BRANDS_JSON))
    srv_root = tmp_path / "srv"
    srv_root.mkdir()
    _history(srv_root / "leads.sqlite")
    with serving(tiny_bundle, srv_root, brand_info=brands) as s:
        # path 1: the scanner, on the same bundle, into its own leads database
        cat = tmp_path / "cat"
        cat.mkdir()
        rows = []
        for lid, (img, seller, price) in LISTINGS.items():
            (cat / f"{lid}.jpg").write_bytes(s.images[img])
            rows.append({"listing_id": lid, "image": f"{lid}.jpg", "seller_id": seller, "price": price})
        (cat / "cat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        scan_db = tmp_path / "scan" / "leads.sqlite"
        scan_db.parent.mkdir()
        _history(scan_db)
        assert main(["scan", str(cat / "cat.jsonl"), "--bundle", str(s.bundle), "--out", str(tmp_path / "out"),
                     "--workers", "0", "--no-progress", "--quiet", "--leads-db", str(scan_db),
                     "--brand-info", str(brands)]) == EXIT_OK
        results = {r["listing_id"]: r for r in read_results(tmp_path / "out")}

        # path 2: the service, a scanner key's checks of the same listings
        answers = {}
        with s.client("scanner") as c:
            for lid, (img, seller, price) in LISTINGS.items():
                r = c.post("/v1/check", files={"file": (f"{lid}.jpg", s.images[img], "image/jpeg")},
                           data={"listing_id": lid, "seller_id": seller, "price": str(price)})
                assert r.status_code == 200, r.text
                answers[lid] = r.json()

        # the same decision on both paths
        assert results["P-auth"]["lead"] == answers["P-auth"]["lead"] == "authorized"
        assert answers["P-auth"]["lead_id"] is None
        for lid in ("P-cheap", "P-bolt"):
            assert results[lid]["lead"] == answers[lid]["lead"] == "lead"
            assert results[lid]["risk"] == pytest.approx(answers[lid]["risk"])
        assert results["P-clear"]["lead"] == "" and answers["P-clear"]["lead"] is None
        scanned, checked = _leads(scan_db), _leads(s.settings.leads_db)
        assert set(scanned) == set(checked) == {"P-cheap", "P-bolt"}  # no lead for the authorised seller
        for lid in scanned:
            a, b = scanned[lid], checked[lid]
            for name in SAME:
                va, vb = getattr(a, name), getattr(b, name)
                assert va == pytest.approx(vb) if isinstance(va, float) else va == vb, (lid, name, va, vb)
            assert set(a.evidence) == set(b.evidence) == {"verdict", "brand", "confidence", "score", "top",
                                                          "evidence", "reason"}
            assert a.evidence["top"] == b.evidence["top"]
            assert a.evidence["evidence"]["thresholds"] == b.evidence["evidence"]["thresholds"]
            assert a.evidence["evidence"]["image_size"] == b.evidence["evidence"]["image_size"]
            # both keep a thumbnail and the exact upload, content-addressed: the same file names
            assert Path(a.image_path).name == Path(b.image_path).name and Path(a.image_path).is_file()
            assert Path(a.original_path).read_bytes() == Path(b.original_path).read_bytes() == \
                s.images[LISTINGS[lid][0]]
        cheap = scanned["P-cheap"]
        assert cheap.risk_parts["seller_confirmed_counterfeits"] == 1 and cheap.risk_parts["price"] > 0.5
        assert cheap.risk > scanned["P-bolt"].risk


def test_a_scan_made_lead_is_complete_in_the_service(tiny_bundle, tmp_path):
    """A lead recorded by ``scan --leads-db`` into the service's database: its listing image, its
    evidence (thresholds, top matches, rule) and an evidence zip with the listing in it."""
    with serving(tiny_bundle, tmp_path / "srv") as s:
        cat = tmp_path / "cat"
        cat.mkdir()
        (cat / "l.jpg").write_bytes(s.images["copy_acme"])
        (cat / "cat.jsonl").write_text(json.dumps({"listing_id": "SCAN-1", "image": "l.jpg", "seller_id": "s1"}) + "\n")
        assert main(["scan", str(cat / "cat.jsonl"), "--bundle", str(s.bundle), "--out", str(tmp_path / "out"),
                     "--workers", "1", "--no-progress", "--quiet", "--leads-db", str(s.settings.leads_db)]) == EXIT_OK
        with s.client("brand:acme") as c:
            lead = next(x for x in c.get("/v1/leads").json()["leads"] if x["listing_id"] == "SCAN-1")
            assert lead["evidence"]["evidence"]["thresholds"] and lead["evidence"]["top"][0]["brand"] == "acme"
            assert lead["rule"] and "copy" in lead["rule"] and lead["risk"] is not None
            img = c.get(lead["image_url"])
            assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
            assert c.get(lead["reference_image_url"]).status_code == 200
            z = zipfile.ZipFile(io.BytesIO(c.get(lead["evidence_url"]).content))
        names = set(z.namelist())
        assert {"listing/original.jpg", "listing/thumbnail.jpg", "references/acme_logo.png"} <= names
        assert z.read("listing/original.jpg") == s.images["copy_acme"]
        assert json.loads(z.read("manifest.json"))["missing"] == []
