"""Scan → leads: authorised sellers, price and seller-history risk, idempotent upserts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brandguard.cli.main import EXIT_OK, main
from brandguard.cases.leads import LeadInput, LeadStore
from brandguard.cases.risk import risk_score
from brandguard.scan.scanner import ScanOptions, ScanStateMismatchError, read_results, scan
from brandguard.engine.pipeline import Pipeline
from tests_helpers import blob_image, save


def test_risk_signals_combine_as_noisy_or():
    base, _ = risk_score("copy", 0.5, None, None, 0)
    assert base == pytest.approx(0.5)
    cheap, parts = risk_score("copy", 0.5, 10.0, 100.0, 0)
    assert parts["price"] == pytest.approx(0.9) and cheap == pytest.approx(1 - 0.5 * 0.1)
    fair, parts = risk_score("copy", 0.5, 90.0, 100.0, 0)
    assert parts["price"] == 0.0 and fair == base
    repeat, parts = risk_score("knockoff", 0.5, None, None, 2)
    assert parts["visual"] == pytest.approx(0.4) and parts["seller"] == pytest.approx(1 - 0.36)
    assert repeat > risk_score("knockoff", 0.5, None, None, 0)[0]


def test_scan_creates_ranked_leads_and_respects_authorised_sellers(tiny_bundle, tmp_path):
    for i, b in enumerate(["acme", "bolt"]):
        save(blob_image(100 + i), tmp_path / "refs" / b / "logo.png")
    rows = []
    for i, (lid, b, seller, price) in enumerate([("l1", "acme", "s_auth", 20), ("l2", "acme", "s_bad", 5),
                                                 ("l3", "bolt", "s_new", 80), ("l4", None, "s_x", 10)]):
        img = blob_image(100 + ["acme", "bolt"].index(b)) if b else blob_image(900)
        save(img[8:232, 8:312], tmp_path / "l" / f"{lid}.jpg", quality=70)
        rows.append({"listing_id": lid, "image": f"l/{lid}.jpg", "seller_id": seller, "price": price})
    (tmp_path / "cat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "brands.json").write_text(json.dumps({
        "acme": {"authorized_sellers": ["s_auth"], "default_price": 100},
        "bolt": {"reference_prices": {"": 100}, "default_price": 100}}))
    db = tmp_path / "leads.sqlite"
    store = LeadStore(db)  # s_bad already sold a confirmed counterfeit
    old, _ = store.upsert_lead(LeadInput("old1", "bolt", "copy", 0.9, seller_id="s_bad"))
    for st in ("sent", "test_buy", "confirmed_counterfeit"):
        store.transition(old.id, st)
    store.close()
    assert main(["index", str(tmp_path / "refs"), "--bundle", str(tiny_bundle), "--out", str(tmp_path / "b")]) == 0
    pipe = Pipeline.from_bundle(tmp_path / "b", require_index=True)
    opts = ScanOptions(workers=0, progress=False, leads_db=db, brand_info=tmp_path / "brands.json")
    summary = scan(tmp_path / "cat.jsonl", pipe, tmp_path / "out", opts)
    res = {r["listing_id"]: r for r in read_results(tmp_path / "out")}
    assert res["l1"]["lead"] == "authorized" and res["l1"]["risk"] is None
    assert res["l2"]["lead"] == res["l3"]["lead"] == "lead" and res["l4"]["lead"] == ""
    # l2: cheap (5 vs 100) and a seller with a confirmed counterfeit: ranks above l3 (80 vs 100)
    assert res["l2"]["risk"] > res["l3"]["risk"]
    parts = json.loads(res["l2"]["risk_parts"])
    assert parts["seller_confirmed_counterfeits"] == 1 and parts["price"] > 0.5
    assert (summary.leads, summary.new_leads, summary.authorized) == (2, 2, 1)
    store = LeadStore(db)
    leads = {(l.listing_id, l.brand): l for l in store.list_leads()}
    assert set(leads) == {("old1", "bolt"), ("l2", "acme"), ("l3", "bolt")}
    l2 = leads[("l2", "acme")]
    assert l2.status == "new" and l2.risk == res["l2"]["risk"] and l2.risk_parts == parts
    # what a service-made lead holds: the verdict's dict, the brand's reference, thumbnail and original
    assert l2.evidence["verdict"] == "copy" and l2.evidence["brand"] == "acme" and l2.reference_id == "acme/logo"
    assert l2.evidence["evidence"]["thresholds"] and l2.evidence["top"][0]["reference_id"] == "acme/logo"
    media = tmp_path / "media"
    assert Path(l2.image_path).parent == media and Path(l2.image_path).is_file()
    assert Path(l2.original_path).read_bytes() == (tmp_path / "l" / "l2.jpg").read_bytes()
    store.transition(leads[("l2", "acme")].id, "sent")
    store.close()
    # A rescan of a grown catalogue neither duplicates leads nor resets their status.
    save(blob_image(101)[0:200, 0:300], tmp_path / "l" / "l5.jpg")
    with open(tmp_path / "cat.jsonl", "a") as f:
        f.write(json.dumps({"listing_id": "l5", "image": "l/l5.jpg", "seller_id": "s_new"}) + "\n")
    s2 = scan(tmp_path / "cat.jsonl", pipe, tmp_path / "out", opts)
    assert s2.scanned == 1 and s2.new_leads == 1
    store = LeadStore(db)
    leads = {(l.listing_id, l.brand): l for l in store.list_leads()}
    assert len(leads) == 4 and leads[("l2", "acme")].status == "sent"
    store.close()
    page = (tmp_path / "out" / "report.html")
    assert not page.exists()  # the library call writes no report; the CLI does
    assert main(["scan", str(tmp_path / "cat.jsonl"), "--bundle", str(tmp_path / "b"), "--out",
                 str(tmp_path / "out"), "--workers", "0", "--no-progress", "--leads-db", str(db),
                 "--brand-info", str(tmp_path / "brands.json")]) == EXIT_OK
    html = page.read_text()
    assert html.index("l2</code>") < html.index("l3</code>") < html.index("l1</code>")  # risk order, authorised last
    assert "authorised seller" in html


def test_results_survive_a_leads_store_that_refuses_rows_and_removed_listings_drop(tiny_bundle, tmp_path):
    save(blob_image(100), tmp_path / "refs" / "Hermès & Co" / "logo.png")  # not a valid lead-store brand name
    save(blob_image(100)[5:235, 5:315], tmp_path / "l" / "a.jpg", quality=80)
    save(blob_image(901), tmp_path / "l" / "b.jpg", quality=80)
    cat = tmp_path / "cat.jsonl"
    cat.write_text(json.dumps({"listing_id": "a", "image": "l/a.jpg"}) + "\n"
                   + json.dumps({"listing_id": "b", "image": "l/b.jpg"}) + "\n")
    assert main(["index", str(tmp_path / "refs"), "--bundle", str(tiny_bundle), "--out", str(tmp_path / "b")]) == 0
    pipe = Pipeline.from_bundle(tmp_path / "b", require_index=True)
    opts = ScanOptions(workers=0, progress=False, leads_db=tmp_path / "leads.sqlite")
    s = scan(cat, pipe, tmp_path / "out", opts)
    res = {r["listing_id"]: r for r in read_results(tmp_path / "out")}
    assert res["a"]["verdict"] == "copy" and res["a"]["lead"] == "lead"
    assert s.lead_errors == {"InputError": 1} and s.new_leads == 0
    # listing b leaves the catalogue: the next results no longer hold it
    cat.write_text(json.dumps({"listing_id": "a", "image": "l/a.jpg"}) + "\n")
    s2 = scan(cat, pipe, tmp_path / "out", opts)
    assert s2.removed == 1 and [r["listing_id"] for r in read_results(tmp_path / "out")] == ["a"]


def _one_listing_scan_inputs(tiny_bundle: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A one-brand bundle and a catalogue of one copy of its mark: (catalogue, bundle, out)."""
    save(blob_image(100), tmp_path / "refs" / "acme" / "logo.png")
    save(blob_image(100)[5:235, 5:315], tmp_path / "l" / "a.jpg", quality=80)
    cat = tmp_path / "cat.jsonl"
    cat.write_text(json.dumps({"listing_id": "a", "image": "l/a.jpg"}) + "\n")
    bundle, out = tmp_path / "b", tmp_path / "out"
    assert main(["index", str(tmp_path / "refs"), "--bundle", str(tiny_bundle), "--out", str(bundle)]) == 0
    return cat, bundle, out


def test_rescan_after_index_add_names_what_changed_and_the_fix(tiny_bundle, tmp_path, capsys):
    cat, bundle, out = _one_listing_scan_inputs(tiny_bundle, tmp_path)
    scan_args = ["scan", str(cat), "--bundle", str(bundle), "--out", str(out), "--workers", "0", "--no-progress",
                 "--quiet", "--no-report"]
    assert main(scan_args) == EXIT_OK
    save(blob_image(101), tmp_path / "more" / "bolt" / "logo.png")
    assert main(["index", str(tmp_path / "more"), "--out", str(bundle), "--add"]) == 0
    capsys.readouterr()
    assert main(scan_args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "{" not in err  # one line, no raw dict
    assert "the reference index (e.g. `brandguard index --add` made a new generation) changed" in err
    assert "new --out folder" in err and "catalogue" not in err.split("changed")[0]
    with pytest.raises(ScanStateMismatchError) as exc:
        scan(cat, Pipeline.from_bundle(bundle, require_index=True, region_mode="grid"), out,
             ScanOptions(workers=0, progress=False, region_mode="grid"))
    assert [k for k, _, _ in exc.value.changed] == ["index_sha256", "region_mode"]
    # only a flag differs: the message names it, its value then, and both ways out
    only_flag = ScanStateMismatchError(out, {"depth": "auto", "region_mode": "full"},
                                       {"depth": "fast", "region_mode": "full"})
    assert "--depth changed: auto -> fast" in str(only_flag) and "run with the --depth auto" in str(only_flag)


def test_rescan_after_recalibration_or_another_text_flag_is_refused(tiny_bundle, tmp_path):
    """A bundle recalibrated in place keeps its model and reference index, but its verdicts move:
    resuming would merge results decided by two sets of thresholds."""
    from dataclasses import replace

    from brandguard.engine.decide import CALIBRATION_FILE, Calibration
    from brandguard.engine.routing import DepthOptions

    cat, bundle, out = _one_listing_scan_inputs(tiny_bundle, tmp_path)
    opts = ScanOptions(workers=0, progress=False)
    scan(cat, Pipeline.from_bundle(bundle, require_index=True), out, opts)
    # the same inputs resume (nothing to redo)
    assert scan(cat, Pipeline.from_bundle(bundle, require_index=True), out, opts).unchanged == 1
    cal = Calibration.load(bundle)
    (bundle / CALIBRATION_FILE).write_text(replace(cal, copy=min(cal.copy + 0.01, 1.0)).to_json())
    with pytest.raises(ScanStateMismatchError) as exc:
        scan(cat, Pipeline.from_bundle(bundle, require_index=True), out, opts)
    assert [k for k, _, _ in exc.value.changed] == ["calibration_sha256"]
    assert "the bundle's thresholds" in str(exc.value) and "new --out folder" in str(exc.value)
    out2 = tmp_path / "out2"
    scan(cat, Pipeline.from_bundle(bundle, require_index=True), out2, opts)
    with pytest.raises(ScanStateMismatchError) as exc:
        scan(cat, Pipeline.from_bundle(bundle, require_index=True, depth=DepthOptions("fast", text=False)), out2, opts)
    assert [k for k, _, _ in exc.value.changed] == ["text"]
    assert "run with the --text it was scanned with" in str(exc.value)
