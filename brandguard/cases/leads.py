"""Leads and their feedback history, and the store that holds them with complaints and API keys.

A *lead* is a listing flagged ``copy`` or ``knockoff`` for a brand. Brands work leads from
``new`` through ``sent`` (notice to the marketplace) and ``test_buy`` to a decision:
``confirmed_counterfeit``, ``genuine`` or ``dismissed``. Every move is validated here (not in
the HTTP layer) and recorded in a feedback history, because those outcomes become the labels
that retraining and calibration read. The history is append-only: an undo is a new entry that
restores the status before the last decision, so a label can be taken back without losing the
record of it having been given. Rescans upsert on ``(listing_id, brand)`` so a lead is never
duplicated and its workflow status survives a re-check.

``LeadStore`` is the one object callers open: the database (``db.py``: connection, schema,
migrations, transactions) with the leads methods here, the complaint methods of
``complaints.py`` and the API-key methods of ``keys.py``.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Mapping

from brandguard.cases.complaints import ComplaintBook
from brandguard.cases.db import CasesDB, IllegalTransitionError, LeadStoreError, NotFoundError, record_id
from brandguard.cases.keys import KeyRing, validate_brand
from brandguard.errors import InputError

FLAGGED_VERDICTS = ("copy", "knockoff")
LEAD_STATUSES = ("new", "sent", "test_buy", "confirmed_counterfeit", "genuine", "dismissed")
FINAL_STATUSES = ("confirmed_counterfeit", "genuine", "dismissed")
# Allowed moves. From any open state a reviewer may decide at once (a copy of the brand's own
# photo needs no test buy to be confirmed; an authorised reseller missing from brands.json is
# genuine on sight) or move the lead on. Decided leads are final: only an undo (a new history
# entry, see LeadStore.undo) reopens one, so a label never changes silently.
TRANSITIONS: Mapping[str, frozenset[str]] = {
    "new": frozenset({"sent", "test_buy", *FINAL_STATUSES}),
    "sent": frozenset({"test_buy", *FINAL_STATUSES}),
    "test_buy": frozenset(FINAL_STATUSES),
    "confirmed_counterfeit": frozenset(),
    "genuine": frozenset(),
    "dismissed": frozenset(),
}
UNDO = "undo"  # the bulk endpoint's action besides a status
LEAD_SORTS = {  # sort name -> ORDER BY (ties: newest id first)
    "updated": "updated_at DESC, id DESC",
    "created": "created_at DESC, id DESC",
    "risk": "risk IS NULL, risk DESC, updated_at DESC, id DESC",
    "confidence": "confidence DESC, id DESC",
}
MAX_BULK = 500




# ---------------------------------------------------------------------------- errors
class NothingToUndoError(LeadStoreError):
    """An undo on a lead with no decision left to take back."""


@dataclass(frozen=True)
class LeadInput:
    """What a check contributes to a lead; the store adds id, status and timestamps."""

    listing_id: str
    brand: str
    verdict: str
    confidence: float
    score: float | None = None
    reference_id: str | None = None
    image_path: str | None = None
    seller_id: str | None = None
    price: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    model_sha256: str = ""
    original_path: str | None = None  # the upload's exact bytes, kept as evidence
    risk: float | None = None  # cases.policy: how urgent, for ranking
    risk_parts: dict[str, Any] | None = None

    def validate(self) -> None:
        if not self.listing_id or len(self.listing_id) > 512:
            raise InputError("listing_id must be 1..512 characters")
        validate_brand(self.brand)
        if self.verdict not in FLAGGED_VERDICTS:
            raise InputError(f"only {FLAGGED_VERDICTS} verdicts become leads, got {self.verdict!r}")
        if not (0.0 <= self.confidence <= 1.0):
            raise InputError(f"confidence must be in [0, 1], got {self.confidence}")
        if self.price is not None and not (math.isfinite(self.price) and self.price >= 0):
            raise InputError(f"price must be a finite number >= 0, got {self.price}")
        if self.risk is not None and not (0.0 <= self.risk <= 1.0):
            raise InputError(f"risk must be in [0, 1], got {self.risk}")


@dataclass(frozen=True)
class Lead:
    id: int
    listing_id: str
    brand: str
    verdict: str
    confidence: float
    score: float | None
    reference_id: str | None
    image_path: str | None
    seller_id: str | None
    price: float | None
    evidence: dict[str, Any]
    status: str
    model_sha256: str
    created_at: float
    updated_at: float
    original_path: str | None = None
    risk: float | None = None
    risk_parts: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Feedback:
    """One status change of a lead: who moved it, from where, when, and why. ``kind`` is
    ``decision``, or ``undo`` for an entry that took back decision ``undoes``."""

    lead_id: int
    from_status: str
    status: str
    note: str
    who: str
    at: float
    kind: str = "decision"
    undoes: int | None = None
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class BulkOutcome:
    """One lead's result in a bulk decision: the lead as it now is, or why it was left alone."""

    lead_id: int
    lead: Lead | None = None
    error: LeadStoreError | InputError | None = None


# ---------------------------------------------------------------------------- store
_LEAD_COLS = ("id, listing_id, brand, verdict, confidence, score, reference_id, image_path, seller_id, price, "
              "evidence, status, model_sha256, created_at, updated_at, original_path, risk, risk_parts")
_FEEDBACK_COLS = "lead_id, from_status, status, note, who, at, kind, undoes, id"
# The last decision of a lead not yet taken back: what an undo restores.
_LAST_DECISION = ("SELECT id, from_status, status FROM feedback f WHERE lead_id = ? AND kind = 'decision' "
                  "AND NOT EXISTS (SELECT 1 FROM feedback u WHERE u.undoes = f.id) ORDER BY id DESC LIMIT 1")


def _lead(row: tuple) -> Lead:
    vals = list(row)
    vals[10] = json.loads(vals[10] or "{}")
    vals[17] = json.loads(vals[17]) if vals[17] else None
    return Lead(*vals)


class LeadStore(CasesDB, ComplaintBook, KeyRing):
    """The leads database. Open with ``LeadStore(path)``; close with :meth:`close`.

    ``clock`` exists so tests (and back-fills) can set the time a record is written.
    """

    # ------------------------------------------------------------------ leads
    def upsert_lead(self, item: LeadInput) -> tuple[Lead, bool]:
        """Insert a lead or refresh the evidence of the existing one; returns (lead, created).

        A rescan updates verdict, scores, evidence and model, never ``status`` or ``created_at``:
        the brand's work on a lead is not undone by checking the listing again.
        """
        item.validate()
        now = self._clock()
        with self._tx() as db:
            existing = db.execute("SELECT id FROM leads WHERE listing_id = ? AND brand = ?",
                                  (item.listing_id, item.brand)).fetchone()
            values = (item.verdict, float(item.confidence), item.score, item.reference_id, item.image_path,
                      item.seller_id, item.price, json.dumps(item.evidence, sort_keys=True, default=str),
                      item.model_sha256, item.original_path, item.risk,
                      json.dumps(item.risk_parts, sort_keys=True, default=str) if item.risk_parts is not None else None)
            if existing is None:
                cur = db.execute(
                    "INSERT INTO leads (listing_id, brand, verdict, confidence, score, reference_id, image_path, "
                    "seller_id, price, evidence, model_sha256, original_path, risk, risk_parts, status, created_at, "
                    "updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,'new',?,?)",
                    (item.listing_id, item.brand, *values, now, now))
                lead_id, created = int(cur.lastrowid), True
            else:
                lead_id, created = int(existing[0]), False
                db.execute(
                    "UPDATE leads SET verdict=?, confidence=?, score=?, reference_id=?, "
                    "image_path=COALESCE(?, image_path), seller_id=COALESCE(?, seller_id), "
                    "price=COALESCE(?, price), evidence=?, model_sha256=?, original_path=COALESCE(?, original_path), "
                    "risk=COALESCE(?, risk), risk_parts=COALESCE(?, risk_parts), updated_at=? WHERE id=?",
                    (*values, now, lead_id))
            row = db.execute(f"SELECT {_LEAD_COLS} FROM leads WHERE id = ?", (lead_id,)).fetchone()
        return _lead(row), created

    def get_lead(self, lead_id: int, *, brand: str | None = None) -> Lead:
        """The lead, or :class:`NotFoundError` when missing or (with ``brand``) another brand's.

        Another brand's lead is reported as missing, not forbidden: ids must not leak.
        """
        rows = self._read(f"SELECT {_LEAD_COLS} FROM leads WHERE id = ?", (record_id(lead_id),))
        if not rows or (brand is not None and rows[0][2] != brand):
            raise NotFoundError(f"lead {lead_id} not found")
        return _lead(rows[0])

    def list_leads(self, *, brand: str | None = None, status: str | None = None, verdict: str | None = None,
                   min_risk: float | None = None, sort: str = "updated", limit: int = 100,
                   offset: int = 0) -> list[Lead]:
        """Leads, optionally of one brand, status and verdict and at least ``min_risk``; sorted by
        ``sort`` (:data:`LEAD_SORTS`: most recently updated first by default)."""
        if status is not None and status not in LEAD_STATUSES:
            raise InputError(f"status must be one of {LEAD_STATUSES}, got {status!r}")
        if verdict is not None and verdict not in FLAGGED_VERDICTS:
            raise InputError(f"verdict must be one of {FLAGGED_VERDICTS}, got {verdict!r}")
        if sort not in LEAD_SORTS:
            raise InputError(f"sort must be one of {tuple(LEAD_SORTS)}, got {sort!r}")
        if min_risk is not None and not (0.0 <= min_risk <= 1.0):
            raise InputError(f"min_risk must be in [0, 1], got {min_risk}")
        if not (1 <= limit <= 1000) or offset < 0:
            raise InputError("limit must be 1..1000 and offset >= 0")
        where, params = [], []
        for column, value in (("brand", brand), ("status", status), ("verdict", verdict)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if min_risk is not None:
            where.append("risk >= ?")
            params.append(float(min_risk))
        sql = (f"SELECT {_LEAD_COLS} FROM leads" + (" WHERE " + " AND ".join(where) if where else "")
               + f" ORDER BY {LEAD_SORTS[sort]} LIMIT ? OFFSET ?")
        return [_lead(r) for r in self._read(sql, (*params, limit, offset))]

    @staticmethod
    def _check_note(note: str) -> None:
        if len(note) > 4000:
            raise InputError("note is limited to 4000 characters")

    def _lead_status(self, db: sqlite3.Connection, lead_id: int, brand: str | None) -> str:
        row = db.execute("SELECT brand, status FROM leads WHERE id = ?", (record_id(lead_id),)).fetchone()
        if row is None or (brand is not None and row[0] != brand):
            raise NotFoundError(f"lead {lead_id} not found")
        return row[1]

    def _move(self, db: sqlite3.Connection, lead_id: int, status: str, note: str, who: str, brand: str | None,
              now: float) -> None:
        """One decision inside an open transaction; checks everything before writing anything."""
        current = self._lead_status(db, lead_id, brand)
        if status not in TRANSITIONS[current]:
            raise IllegalTransitionError(current, status, TRANSITIONS.get(current, ()))
        db.execute("UPDATE leads SET status = ?, updated_at = ? WHERE id = ?", (status, now, int(lead_id)))
        db.execute("INSERT INTO feedback (lead_id, from_status, status, note, who, at, kind) "
                   "VALUES (?,?,?,?,?,?,'decision')", (int(lead_id), current, status, note, who, now))

    def _take_back(self, db: sqlite3.Connection, lead_id: int, note: str, who: str, brand: str | None,
                   now: float) -> None:
        """One undo inside an open transaction: restore the status before the last decision."""
        current = self._lead_status(db, lead_id, brand)
        last = db.execute(_LAST_DECISION, (int(lead_id),)).fetchone()
        if last is None:
            raise NothingToUndoError(f"lead {lead_id} has no decision to undo")
        decision_id, before, after = last
        if after != current:  # only if the history was edited by hand: refuse rather than guess
            raise NothingToUndoError(f"lead {lead_id} is {current!r}, but its last decision set {after!r}")
        db.execute("UPDATE leads SET status = ?, updated_at = ? WHERE id = ?", (before, now, int(lead_id)))
        db.execute("INSERT INTO feedback (lead_id, from_status, status, note, who, at, kind, undoes) "
                   "VALUES (?,?,?,?,?,?,'undo',?)", (int(lead_id), current, before, note, who, now, decision_id))

    def transition(self, lead_id: int, status: str, *, note: str = "", who: str = "",
                   brand: str | None = None) -> Lead:
        """Move a lead to ``status`` and record the feedback, atomically.

        Raises :class:`NotFoundError` (missing or another brand's), :class:`IllegalTransitionError`,
        or :class:`InputError` for an unknown status or an over-long note.
        """
        if status not in LEAD_STATUSES:
            raise InputError(f"status must be one of {LEAD_STATUSES}, got {status!r}")
        self._check_note(note)
        now = self._clock()
        with self._tx() as db:
            self._move(db, lead_id, status, note, who, brand, now)
            out = db.execute(f"SELECT {_LEAD_COLS} FROM leads WHERE id = ?", (record_id(lead_id),)).fetchone()
        return _lead(out)

    def undo(self, lead_id: int, *, note: str = "", who: str = "", brand: str | None = None) -> Lead:
        """Take back the lead's last decision not already taken back: a new history entry
        (``kind="undo"``) restores the status before it. Nothing is deleted or rewritten.

        Raises :class:`NotFoundError` or :class:`NothingToUndoError`."""
        self._check_note(note)
        now = self._clock()
        with self._tx() as db:
            self._take_back(db, lead_id, note, who, brand, now)
            out = db.execute(f"SELECT {_LEAD_COLS} FROM leads WHERE id = ?", (record_id(lead_id),)).fetchone()
        return _lead(out)

    def apply_many(self, lead_ids: list[int], action: str, *, note: str = "", who: str = "",
                   brand: str | None = None) -> list[BulkOutcome]:
        """One decision (a status, or :data:`UNDO`) for several leads, in one transaction.

        Each lead succeeds or fails on its own (a colleague may have moved one meanwhile): the
        outcomes say which, in the order given; a repeated id counts once."""
        if action != UNDO and action not in LEAD_STATUSES:
            raise InputError(f"action must be one of {(*LEAD_STATUSES, UNDO)}, got {action!r}")
        ids = list(dict.fromkeys(int(i) for i in lead_ids))
        if not (1 <= len(ids) <= MAX_BULK):
            raise InputError(f"give 1..{MAX_BULK} lead ids")
        self._check_note(note)
        now = self._clock()
        outcomes: list[BulkOutcome] = []
        with self._tx() as db:
            for lead_id in ids:
                try:
                    if action == UNDO:
                        self._take_back(db, lead_id, note, who, brand, now)
                    else:
                        self._move(db, lead_id, action, note, who, brand, now)
                except (LeadStoreError, InputError) as exc:
                    outcomes.append(BulkOutcome(lead_id, error=exc))
                    continue
                row = db.execute(f"SELECT {_LEAD_COLS} FROM leads WHERE id = ?", (lead_id,)).fetchone()
                outcomes.append(BulkOutcome(lead_id, lead=_lead(row)))
        return outcomes

    def history(self, lead_id: int) -> list[Feedback]:
        rows = self._read(f"SELECT {_FEEDBACK_COLS} FROM feedback WHERE lead_id = ? ORDER BY id",
                          (record_id(lead_id),))
        return [Feedback(*r) for r in rows]

    def histories(self, lead_ids: list[int]) -> dict[int, list[Feedback]]:
        """The history of several leads in one query (a page of the review list)."""
        ids = [int(i) for i in lead_ids]
        out: dict[int, list[Feedback]] = {i: [] for i in ids}
        if ids:
            marks = ",".join("?" * len(ids))
            for r in self._read(f"SELECT {_FEEDBACK_COLS} FROM feedback WHERE lead_id IN ({marks}) ORDER BY id", ids):
                out[r[0]].append(Feedback(*r))
        return out

    def undoable(self, lead_ids: list[int]) -> set[int]:
        """Which of these leads have a decision an undo would take back."""
        ids = [int(i) for i in lead_ids]
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        rows = self._read(f"SELECT DISTINCT lead_id FROM feedback f WHERE lead_id IN ({marks}) AND kind = 'decision' "
                          "AND NOT EXISTS (SELECT 1 FROM feedback u WHERE u.undoes = f.id)", ids)
        return {r[0] for r in rows}

    def confirmed_by_seller(self) -> dict[str, int]:
        """Confirmed counterfeits per seller, every brand's (the seller signal of the risk)."""
        rows = self._read("SELECT seller_id, COUNT(*) FROM leads WHERE status = 'confirmed_counterfeit' "
                          "AND seller_id IS NOT NULL AND seller_id != '' GROUP BY seller_id")
        return {seller: int(n) for seller, n in rows}

    def confirmed_counterfeits(self, seller_id: str | None) -> int:
        """One seller's confirmed counterfeits (0 for an unknown or absent seller)."""
        if not seller_id:
            return 0
        return int(self._read("SELECT COUNT(*) FROM leads WHERE status = 'confirmed_counterfeit' AND seller_id = ?",
                              (seller_id,))[0][0])
