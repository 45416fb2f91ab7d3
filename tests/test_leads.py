"""The leads store on a real SQLite file: upserts, lifecycle, complaints report, API keys."""

from __future__ import annotations

import hashlib
import sqlite3
import threading

import pytest

from brandguard.errors import BrandguardError, InputError
from brandguard.cases.complaints import COMPLAINT_SLA_SECONDS
from brandguard.cases.db import IllegalTransitionError, NotFoundError
from brandguard.cases.keys import InvalidKeyError
from brandguard.cases.leads import UNDO, LeadInput, LeadStore, NothingToUndoError


class Clock:
    """A settable clock so timestamps (and the 24 h report) are exact."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def store(tmp_path, clock):
    s = LeadStore(tmp_path / "leads.sqlite", clock=clock)
    yield s
    s.close()


def lead_input(listing: str = "L1", brand: str = "acme", **kw) -> LeadInput:
    base = dict(listing_id=listing, brand=brand, verdict="copy", confidence=0.9, score=0.95,
                reference_id=f"{brand}/logo", seller_id="s1", price=12.5, evidence={"region": "full"},
                model_sha256="ab" * 32)
    base.update(kw)
    return LeadInput(**base)


def test_wal_mode_and_reopen_keeps_data(tmp_path, clock):
    s = LeadStore(tmp_path / "l.sqlite", clock=clock)
    assert s.journal_mode() == "wal"
    lead, created = s.upsert_lead(lead_input())
    s.close()
    s2 = LeadStore(tmp_path / "l.sqlite", clock=clock)
    assert created and s2.get_lead(lead.id) == lead
    s2.close()


def test_upsert_is_idempotent_and_keeps_status_and_created_at(store, clock):
    first, created = store.upsert_lead(lead_input())
    assert created and first.status == "new" and first.evidence == {"region": "full"}
    store.transition(first.id, "sent", note="mailed", who="t")
    clock.t += 100
    again, created2 = store.upsert_lead(lead_input(verdict="knockoff", confidence=0.7, score=0.7, seller_id=None,
                                                   evidence={"region": "centre"}))
    assert not created2 and again.id == first.id
    assert again.status == "sent"  # a rescan does not undo the brand's work
    assert again.created_at == first.created_at and again.updated_at == first.created_at + 100
    assert (again.verdict, again.confidence, again.evidence) == ("knockoff", 0.7, {"region": "centre"})
    assert again.seller_id == "s1"  # a missing field in the rescan keeps the known value
    assert len(store.list_leads()) == 1
    other, created3 = store.upsert_lead(lead_input(brand="bolt"))  # same listing, another brand: a new lead
    assert created3 and other.id != first.id and len(store.list_leads()) == 2


def test_concurrent_upserts_of_one_listing_make_one_lead(store):
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                store.upsert_lead(lead_input())
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(store.list_leads()) == 1


@pytest.mark.parametrize("bad", [dict(verdict="clear"), dict(confidence=1.5), dict(brand="no spaces"),
                                 dict(listing_id=""), dict(price=float("nan")), dict(price=-1.0)])
def test_upsert_validates(store, bad):
    with pytest.raises(InputError):
        store.upsert_lead(lead_input(**bad))
    assert store.list_leads() == []


def test_lifecycle_transitions_and_history(store, clock):
    lead, _ = store.upsert_lead(lead_input())
    for status in ("sent", "test_buy", "confirmed_counterfeit"):
        clock.t += 1
        lead = store.transition(lead.id, status, note=f"to {status}", who="brand:acme/k1")
        assert lead.status == status and lead.updated_at == clock.t
    hist = store.history(lead.id)
    assert [(h.from_status, h.status) for h in hist] == [("new", "sent"), ("sent", "test_buy"),
                                                         ("test_buy", "confirmed_counterfeit")]
    assert hist[0].note == "to sent" and hist[0].who == "brand:acme/k1"
    with pytest.raises(IllegalTransitionError) as exc:  # final state
        store.transition(lead.id, "dismissed")
    assert isinstance(exc.value, BrandguardError) and exc.value.current == "confirmed_counterfeit"
    assert len(store.history(lead.id)) == 3 and store.get_lead(lead.id).status == "confirmed_counterfeit"


def test_illegal_and_unknown_transitions(store):
    lead, _ = store.upsert_lead(lead_input())
    with pytest.raises(InputError):
        store.transition(lead.id, "bogus")
    with pytest.raises(IllegalTransitionError, match="allowed: confirmed_counterfeit, dismissed, genuine, sent, "
                                                     "test_buy"):
        store.transition(lead.id, "new")
    assert store.get_lead(lead.id).status == "new" and store.history(lead.id) == []
    assert store.transition(lead.id, "dismissed").status == "dismissed"
    with pytest.raises(IllegalTransitionError, match="final state"):  # decided: only an undo reopens it
        store.transition(lead.id, "sent")


@pytest.mark.parametrize("decision", ["confirmed_counterfeit", "genuine", "dismissed", "test_buy", "sent"])
def test_a_reviewer_decides_straight_from_new(store, decision):
    lead, _ = store.upsert_lead(lead_input())
    assert store.transition(lead.id, decision, who="r").status == decision


def test_undo_is_a_new_history_entry_and_unwinds_decisions_in_order(store, clock):
    lead, _ = store.upsert_lead(lead_input())
    with pytest.raises(NothingToUndoError):
        store.undo(lead.id)
    clock.t += 1
    store.transition(lead.id, "sent", note="notice", who="a")
    clock.t += 1
    store.transition(lead.id, "confirmed_counterfeit", note="fake", who="a")
    assert store.undoable([lead.id]) == {lead.id}
    clock.t += 1
    back = store.undo(lead.id, note="wrong lead", who="b")
    assert back.status == "sent" and back.updated_at == clock.t
    clock.t += 1
    store.transition(lead.id, "dismissed", who="b")  # a new decision after the undo
    assert store.undo(lead.id, who="b").status == "sent"  # takes back the dismissal ...
    assert store.undo(lead.id, who="b").status == "new"  # ... then the notice (the confirmation is already undone)
    with pytest.raises(NothingToUndoError):
        store.undo(lead.id)
    assert store.undoable([lead.id]) == set()
    hist = store.history(lead.id)
    # nothing rewritten: every decision and every undo is there, in order
    assert [(h.kind, h.from_status, h.status) for h in hist] == [
        ("decision", "new", "sent"), ("decision", "sent", "confirmed_counterfeit"),
        ("undo", "confirmed_counterfeit", "sent"), ("decision", "sent", "dismissed"),
        ("undo", "dismissed", "sent"), ("undo", "sent", "new")]
    assert hist[2].undoes == hist[1].id and hist[4].undoes == hist[3].id and hist[5].undoes == hist[0].id
    assert hist[2].note == "wrong lead" and hist[2].who == "b"
    # the retraining labels follow the status: the undone confirmation is no positive any more
    assert store.list_leads(status="confirmed_counterfeit") == []


def test_undo_is_brand_scoped(store):
    lead, _ = store.upsert_lead(lead_input("L1", "bolt"))
    store.transition(lead.id, "dismissed")
    with pytest.raises(NotFoundError):
        store.undo(lead.id, brand="acme")
    assert store.get_lead(lead.id).status == "dismissed"


def test_bulk_decision_applies_to_each_lead_on_its_own(store):
    a = store.upsert_lead(lead_input("L1"))[0]
    b = store.upsert_lead(lead_input("L2"))[0]
    c = store.upsert_lead(lead_input("L3"))[0]
    other = store.upsert_lead(lead_input("L4", "bolt"))[0]
    store.transition(c.id, "genuine")
    out = store.apply_many([a.id, b.id, c.id, other.id, a.id, 10**6], "dismissed", note="spam", who="r",
                           brand="acme")
    assert [o.lead_id for o in out] == [a.id, b.id, c.id, other.id, 10**6]  # a repeated id counts once
    assert [o.lead.status if o.lead else None for o in out] == ["dismissed", "dismissed", None, None, None]
    assert isinstance(out[2].error, IllegalTransitionError)  # already decided
    assert isinstance(out[3].error, NotFoundError) and isinstance(out[4].error, NotFoundError)
    assert store.get_lead(other.id).status == "new"
    undone = store.apply_many([a.id, b.id, c.id], UNDO, who="r", brand="acme")
    assert [o.lead.status for o in undone] == ["new", "new", "new"]
    assert [h.kind for h in store.history(a.id)] == ["decision", "undo"]
    with pytest.raises(InputError):
        store.apply_many([], "dismissed")
    with pytest.raises(InputError):
        store.apply_many([a.id], "bogus")


def test_filters_and_sorts_by_verdict_and_risk(store, clock):
    for i, (verdict, risk) in enumerate([("copy", 0.2), ("knockoff", 0.9), ("copy", None), ("copy", 0.6)]):
        clock.t += 1
        store.upsert_lead(lead_input(f"R{i}", verdict=verdict, risk=risk, risk_parts={"visual": risk}))
    assert [x.listing_id for x in store.list_leads(sort="risk")] == ["R1", "R3", "R0", "R2"]  # no risk last
    assert [x.listing_id for x in store.list_leads(verdict="copy", min_risk=0.5)] == ["R3"]
    assert store.get_lead(store.list_leads(verdict="knockoff")[0].id).risk_parts == {"visual": 0.9}
    with pytest.raises(InputError):
        store.list_leads(sort="bogus")
    with pytest.raises(InputError):
        store.list_leads(verdict="clear")


def test_seller_history_counts_confirmed_counterfeits(store):
    for i, seller in enumerate(["s1", "s1", "s2", None]):
        lead = store.upsert_lead(lead_input(f"S{i}", seller_id=seller))[0]
        store.transition(lead.id, "confirmed_counterfeit")
    store.upsert_lead(lead_input("S9", seller_id="s2"))  # a lead, not confirmed
    assert store.confirmed_by_seller() == {"s1": 2, "s2": 1}
    assert store.confirmed_counterfeits("s1") == 2 and store.confirmed_counterfeits(None) == 0


def test_brand_scope_hides_other_brands(store):
    a, _ = store.upsert_lead(lead_input("L1", "acme"))
    b, _ = store.upsert_lead(lead_input("L2", "bolt"))
    assert store.get_lead(a.id, brand="acme") == a
    with pytest.raises(NotFoundError):
        store.get_lead(b.id, brand="acme")
    with pytest.raises(NotFoundError):
        store.transition(b.id, "sent", brand="acme")
    assert store.get_lead(b.id).status == "new"
    with pytest.raises(NotFoundError):
        store.get_lead(999)


def test_list_filters(store, clock):
    ids = []
    for i, brand in enumerate(["acme", "acme", "bolt"]):
        clock.t += 1
        ids.append(store.upsert_lead(lead_input(f"L{i}", brand))[0].id)
    clock.t += 1
    store.transition(ids[0], "sent")
    assert [x.id for x in store.list_leads(brand="acme")] == [ids[0], ids[1]]  # most recently updated first
    assert [x.id for x in store.list_leads(brand="acme", status="new")] == [ids[1]]
    assert [x.id for x in store.list_leads(status="sent")] == [ids[0]]
    assert [x.id for x in store.list_leads(limit=1, offset=1)] == [ids[2]]
    with pytest.raises(InputError):
        store.list_leads(status="open")


def test_complaints_and_24h_report(store, clock):
    t0 = clock.t
    c1 = store.add_complaint("acme", "L1", {"verdict": "copy"}, decided=True)  # decided at once
    c2 = store.add_complaint("acme", "L2", None, decided=False)
    c3 = store.add_complaint("acme", "L3", None, decided=False)
    store.add_complaint("bolt", "L4", {"verdict": "clear"}, decided=True)
    assert (c1.status, c1.decided_at, c1.verdict) == ("decided", t0, {"verdict": "copy"})
    assert (c2.status, c2.decided_at) == ("pending", None)
    clock.t = t0 + 3600
    store.decide_complaint(c2.id, {"verdict": "knockoff"})  # within 24 h
    with pytest.raises(IllegalTransitionError):
        store.decide_complaint(c2.id, {"verdict": "clear"})
    rep = store.complaint_report(brand="acme")
    # c3 is pending but not yet due: it does not count against the share.
    assert (rep.total, rep.decided, rep.decided_within_24h, rep.pending, rep.pending_overdue) == (3, 2, 2, 1, 0)
    assert rep.share_decided_within_24h == 1.0
    clock.t = t0 + COMPLAINT_SLA_SECONDS + 10
    rep = store.complaint_report(brand="acme")
    assert rep.pending_overdue == 1 and rep.share_decided_within_24h == pytest.approx(2 / 3, abs=1e-6)
    store.decide_complaint(c3.id, {"verdict": "clear"})  # decided, but late
    rep = store.complaint_report(brand="acme")
    assert (rep.decided, rep.decided_within_24h, rep.share_decided_within_24h) == (3, 2, pytest.approx(2 / 3, abs=1e-6))
    assert store.complaint_report().total == 4
    assert store.complaint_report(brand="dune").share_decided_within_24h is None
    assert store.complaint_report(brand="acme", since=t0 + 1).total == 0
    with pytest.raises(NotFoundError):
        store.get_complaint(c1.id, brand="bolt")


def test_api_keys_hashed_at_rest(store, tmp_path):
    token, key = store.create_key("brand:acme", label="acme ops")
    assert key.brand == "acme" and token.startswith("bg_")
    assert store.authenticate(token).role == "brand:acme"
    raw = sqlite3.connect(tmp_path / "leads.sqlite")
    rows = raw.execute("SELECT key_id, key_hash FROM api_keys").fetchall()
    raw.close()
    assert rows == [(key.key_id, hashlib.sha256(token.encode()).hexdigest())]
    for path in tmp_path.iterdir():  # the secret is nowhere on disk (db, WAL, shm)
        assert token.encode() not in path.read_bytes()
    with pytest.raises(InvalidKeyError):
        store.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B"))
    with pytest.raises(InvalidKeyError):
        store.authenticate("not-a-key")
    with pytest.raises(InvalidKeyError):
        store.authenticate(f"bg_ffffffffffff_{token.split('_', 2)[2]}")
    store.revoke_key(key.key_id)
    with pytest.raises(InvalidKeyError, match="revoked"):
        store.authenticate(token)


@pytest.mark.parametrize("role", ["root", "brand:", "brand:a b", "Admin", ""])
def test_invalid_roles_rejected(store, role):
    with pytest.raises(InputError):
        store.create_key(role)
    assert store.list_keys() == []


def test_previous_release_database_is_migrated(tmp_path):
    """A leads file of the previous release: scan-made leads kept the inner evidence with the risk
    mixed in, feedback had no kinds. Opened now, every lead has the verdict's shape, its risk in
    the column, and its old decisions can be undone."""
    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.executescript(
        "CREATE TABLE leads (id INTEGER PRIMARY KEY, listing_id TEXT NOT NULL, brand TEXT NOT NULL, "
        "verdict TEXT NOT NULL, confidence REAL NOT NULL, score REAL, reference_id TEXT, image_path TEXT, "
        "seller_id TEXT, price REAL, evidence TEXT NOT NULL DEFAULT '{}', status TEXT NOT NULL DEFAULT 'new', "
        "model_sha256 TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, updated_at REAL NOT NULL, "
        "original_path TEXT, UNIQUE (listing_id, brand));"
        "CREATE TABLE feedback (id INTEGER PRIMARY KEY, lead_id INTEGER NOT NULL, from_status TEXT NOT NULL, "
        "status TEXT NOT NULL, note TEXT NOT NULL DEFAULT '', who TEXT NOT NULL DEFAULT '', at REAL NOT NULL);"
        "INSERT INTO leads (listing_id, brand, verdict, confidence, score, evidence, status, created_at, updated_at) "
        "VALUES ('S1', 'acme', 'copy', 0.9, 0.95, '{\"region\": \"full\", \"thresholds\": {\"copy\": 0.8}, "
        "\"risk\": 0.7, \"risk_parts\": {\"visual\": 0.7}}', 'dismissed', 1, 2);"
        "INSERT INTO leads (listing_id, brand, verdict, confidence, evidence, created_at, updated_at) VALUES "
        "('H1', 'acme', 'copy', 0.8, '{\"verdict\": \"copy\", \"evidence\": {}}', 1, 1);"
        "INSERT INTO feedback (lead_id, from_status, status, at) VALUES (1, 'new', 'dismissed', 2);")
    con.close()
    store = LeadStore(db)
    try:
        scanned = store.list_leads(status="dismissed")[0]
        assert (scanned.risk, scanned.risk_parts) == (0.7, {"visual": 0.7})
        assert scanned.evidence == {"verdict": "copy", "brand": "acme", "confidence": 0.9, "score": 0.95, "top": [],
                                    "evidence": {"region": "full", "thresholds": {"copy": 0.8}}, "reason": None}
        served = next(x for x in store.list_leads() if x.listing_id == "H1")
        assert served.evidence == {"verdict": "copy", "evidence": {}} and served.risk is None  # already shaped
        assert store.history(scanned.id)[0].kind == "decision"
        assert store.undo(scanned.id).status == "new"
    finally:
        store.close()
