"""Hostile inputs to the reference index (issue #16).

A brand cannot take over another's detections: a reference that copies another brand's
registered reference is held for an admin, audited, and changes nothing until approved.
Leftovers of a writer killed mid-change are cleaned at start, and nothing needed is touched."""

from __future__ import annotations

import json

import pytest

from brandguard.cases.leads import LeadStore
from brandguard.cli.main import main
from brandguard.engine.pipeline import Pipeline
from brandguard.errors import InputError, NotFoundError
from brandguard.inputs import ReferenceRow
from brandguard.quarantine import Quarantine
from brandguard.references import clean_leftovers, decide_held, remove_reference, submit_reference
from brandguard.scan.scanner import ScanOptions, read_results, scan
from tests_helpers import blob_image, save


@pytest.fixture()
def world(tiny_bundle, tmp_path):
    """apple and mcdonalds each with their own logo; a listing that copies apple's."""
    save(blob_image(100), tmp_path / "refs" / "apple" / "logo.png")
    save(blob_image(101), tmp_path / "refs" / "mcdonalds" / "logo.png")
    save(blob_image(100)[8:232, 8:312], tmp_path / "l" / "fake.jpg", quality=70)
    save(blob_image(100), tmp_path / "stolen.jpg", quality=95)  # apple's public logo, re-saved
    save(blob_image(102), tmp_path / "own.png")  # a genuinely new mcdonalds image
    (tmp_path / "cat.jsonl").write_text(json.dumps({"listing_id": "fake", "image": "l/fake.jpg", "seller_id": "s"}) + "\n")
    assert main(["index", str(tmp_path / "refs"), "--bundle", str(tiny_bundle), "--out", str(tmp_path / "b")]) == 0
    pipe = Pipeline.from_bundle(tmp_path / "b", require_index=True)
    q = Quarantine(pipe.bundle.path)
    yield tmp_path, pipe, q
    q.close()


def _scan_lead_brand(tmp_path, pipe, name):
    db = tmp_path / f"{name}.sqlite"
    scan(tmp_path / "cat.jsonl", pipe, tmp_path / name, ScanOptions(workers=0, progress=False, leads_db=db))
    (row,) = read_results(tmp_path / name)
    store = LeadStore(db)
    try:
        return row["verdict"], row["brand"], [lead.brand for lead in store.list_leads()]
    finally:
        store.close()


def test_copying_another_brands_reference_is_held_and_changes_nothing(world):
    tmp_path, pipe, q = world
    listing = (tmp_path / "l" / "fake.jpg").read_bytes()
    (before,) = pipe.check([listing])
    (apple_before,) = pipe.check([listing], brand="apple")
    assert before.brand == "apple" and before.verdict in ("copy", "knockoff")
    lead_before = _scan_lead_brand(tmp_path, pipe, "before")
    assert lead_before[1] == "apple" and lead_before[2] == ["apple"]

    sub = submit_reference(pipe, q, ReferenceRow("mcdonalds/stolen-logo_clean-jpeg", "mcdonalds",
                                                 str(tmp_path / "stolen.jpg")), actor="key:mcd")
    assert sub.status == "held" and sub.generation is None
    assert [c.brand for c in sub.held.conflicts] == ["apple"]
    assert sub.held.conflicts[0].reference_id == "apple/logo"
    assert pipe.index.record("mcdonalds/stolen-logo_clean-jpeg") is None  # not live

    (after,) = pipe.check([listing])
    (apple_after,) = pipe.check([listing], brand="apple")
    assert (after.verdict, after.brand, after.score) == (before.verdict, before.brand, before.score)
    assert (apple_after.verdict, apple_after.brand) == (apple_before.verdict, apple_before.brand)
    assert _scan_lead_brand(tmp_path, pipe, "after") == lead_before
    # listed for review (the submitting brand sees only its own, without the other brand's ids), audited
    assert [h.reference_id for h in q.list()] == ["mcdonalds/stolen-logo_clean-jpeg"]
    assert q.list(brand="apple") == []
    assert sub.held.to_dict(with_conflicts=False)["conflicts"] == 1
    (entry,) = q.audit_log()
    assert entry["action"] == "hold" and entry["actor"] == "key:mcd" and entry["detail"]["conflicts"][0]["brand"] == "apple"
    with pytest.raises(InputError, match="already waiting"):
        submit_reference(pipe, q, ReferenceRow("mcdonalds/stolen-logo_clean-jpeg", "mcdonalds",
                                               str(tmp_path / "stolen.jpg")), actor="key:mcd")


def test_admin_decides_what_was_held(world):
    tmp_path, pipe, q = world
    held = submit_reference(pipe, q, ReferenceRow("mcdonalds/stolen", "mcdonalds", str(tmp_path / "stolen.jpg")),
                            actor="key:mcd").held
    stored = pipe.bundle.path / held.source
    assert stored.is_file()
    with pytest.raises(NotFoundError):
        q.get(held.id, brand="apple")
    rejected, gen = decide_held(pipe, q, held.id, approve=False, actor="admin", note="apple's logo")
    assert rejected.status == "rejected" and rejected.decided_by == "admin" and gen is None
    assert not stored.exists() and pipe.index.record("mcdonalds/stolen") is None
    with pytest.raises(InputError, match="already rejected"):
        decide_held(pipe, q, held.id, approve=True, actor="admin")

    again = submit_reference(pipe, q, ReferenceRow("mcdonalds/licensed", "mcdonalds", str(tmp_path / "stolen.jpg")),
                             actor="key:mcd").held
    approved, gen = decide_held(pipe, q, again.id, approve=True, actor="admin", note="co-branding licence")
    assert approved.status == "approved" and gen == pipe.index.generation
    assert pipe.index.record("mcdonalds/licensed").brand == "mcdonalds"
    actions = [e["action"] for e in q.audit_log()]
    assert actions == ["approve", "hold", "reject", "hold"]


def test_a_reference_that_copies_nobody_goes_live_and_is_audited(world):
    tmp_path, pipe, q = world
    gen0 = pipe.index.generation
    sub = submit_reference(pipe, q, ReferenceRow("mcdonalds/new", "mcdonalds", str(tmp_path / "own.png")),
                           actor="key:mcd")
    assert sub.status == "live" and sub.generation == gen0 + 1
    assert pipe.index.record("mcdonalds/new") is not None
    remove_reference(pipe, q, "mcdonalds/new", actor="admin")
    assert [(e["action"], e["actor"]) for e in q.audit_log()] == [("remove", "admin"), ("add", "key:mcd")]


def test_leftovers_of_a_killed_writer_are_cleaned_and_nothing_needed_is(world):
    tmp_path, pipe, q = world
    bundle = pipe.bundle.path
    held = submit_reference(pipe, q, ReferenceRow("mcdonalds/stolen", "mcdonalds", str(tmp_path / "stolen.jpg")),
                            actor="key:mcd").held
    live = sorted(p for p in (bundle / "references").rglob("*") if p.is_file() and p.parent.name != "references")
    (bundle / "references" / ".incoming").mkdir(parents=True)
    (bundle / "references" / ".incoming" / "abc.jpg").write_bytes(b"x")
    (bundle / "references" / "ff").mkdir(exist_ok=True)
    (bundle / "references" / "ff" / ("f" * 64 + ".png")).write_bytes(b"orphan")
    (bundle / "references" / "ff" / ("e" * 64 + ".png.tmp")).write_bytes(b"half")
    (bundle / ".index.json.abc123.tmp").write_text("{}")
    report = clean_leftovers(pipe, q)
    assert (report.incoming, report.orphan_images, report.partial_images, report.temp_files) == (1, 1, 1, 1)
    left = sorted(p for p in (bundle / "references").rglob("*") if p.is_file() and p.parent.name != "references")
    assert left == live and (bundle / held.source).is_file()
    assert not list(bundle.glob(".*.tmp"))
    assert clean_leftovers(pipe, q).total == 0
    (v,) = pipe.check([(tmp_path / "l" / "fake.jpg").read_bytes()])
    assert v.brand == "apple"
