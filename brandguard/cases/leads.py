"""Leads, feedback, complaints and API keys in one SQLite file.

A *lead* is a listing flagged ``copy`` or ``knockoff`` for a brand. Brands work leads from
``new`` through ``sent`` (notice to the marketplace) and ``test_buy`` to a decision:
``confirmed_counterfeit``, ``genuine`` or ``dismissed``. Every move is validated here (not in
the HTTP layer) and recorded in a feedback history, because those outcomes become the labels
that retraining and calibration read. The history is append-only: an undo is a new entry that
restores the status before the last decision, so a label can be taken back without losing the
record of it having been given. Rescans upsert on ``(listing_id, brand)`` so a lead is never
duplicated and its workflow status survives a re-check.

The database runs in WAL mode (readers never block the writer), every write is one explicit
``BEGIN IMMEDIATE`` transaction, and one connection is shared behind a lock, so the store is
safe to call from any thread of a server's threadpool. API keys are stored as sha256 hashes
of random tokens and compared with :func:`hmac.compare_digest`; the token itself is shown
once, when it is created, and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from brandguard.errors import BrandguardError, InputError
from brandguard.errors import NotFoundError as RecordNotFound

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
COMPLAINT_SLA_SECONDS = 24 * 3600
ROLES = ("admin", "scanner")  # plus "brand:<name>"
_BRAND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_TOKEN_PREFIX = "bg"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leads (
    id INTEGER PRIMARY KEY,
    listing_id TEXT NOT NULL,
    brand TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('copy', 'knockoff')),
    confidence REAL NOT NULL,
    score REAL,
    reference_id TEXT,
    image_path TEXT,
    seller_id TEXT,
    price REAL,
    evidence TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'new',
    model_sha256 TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    original_path TEXT,
    risk REAL,
    risk_parts TEXT,
    UNIQUE (listing_id, brand)
);
CREATE INDEX IF NOT EXISTS leads_brand_status ON leads(brand, status);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    lead_id INTEGER NOT NULL REFERENCES leads(id) ON DELETE CASCADE,
    from_status TEXT NOT NULL,
    status TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    who TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL,
    kind TEXT NOT NULL DEFAULT 'decision',
    undoes INTEGER
);
CREATE INDEX IF NOT EXISTS feedback_lead ON feedback(lead_id);
CREATE TABLE IF NOT EXISTS complaints (
    id INTEGER PRIMARY KEY,
    brand TEXT NOT NULL,
    listing_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'decided')),
    created_at REAL NOT NULL,
    decided_at REAL,
    verdict TEXT,
    lead_id INTEGER REFERENCES leads(id)
);
CREATE INDEX IF NOT EXISTS complaints_brand ON complaints(brand, created_at);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    revoked_at REAL
);
"""


# ---------------------------------------------------------------------------- errors
class LeadStoreError(BrandguardError):
    """Base of the errors the leads store raises on purpose."""


class NotFoundError(LeadStoreError, RecordNotFound):
    """A lead or complaint does not exist, or is not visible to the caller's brand."""


class IllegalTransitionError(LeadStoreError):
    """A status change the lead lifecycle does not allow (e.g. ``new → genuine``)."""

    def __init__(self, current: str, wanted: str) -> None:
        self.current = current
        self.wanted = wanted
        allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "none (final state)"
        super().__init__(f"cannot move a lead from {current!r} to {wanted!r}; allowed: {allowed}")


class NothingToUndoError(LeadStoreError):
    """An undo on a lead with no decision left to take back."""


class InvalidKeyError(LeadStoreError):
    """An API key is unknown, malformed or revoked."""


# ---------------------------------------------------------------------------- records
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


@dataclass(frozen=True)
class Complaint:
    id: int
    brand: str
    listing_id: str
    status: str
    created_at: float
    decided_at: float | None
    verdict: dict[str, Any] | None
    lead_id: int | None
    image_path: str | None = None  # the complained-about upload, kept as evidence

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class ComplaintReport:
    """How fast complaints get decided. ``share_decided_within_24h`` counts only complaints that
    are due (decided, or pending for more than 24 h): a fresh pending complaint is not late yet."""

    brand: str | None
    since: float | None
    total: int
    decided: int
    decided_within_24h: int
    pending: int
    pending_overdue: int
    share_decided_within_24h: float | None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret. ``brand`` is set for ``brand:<name>`` roles."""

    key_id: str
    role: str
    label: str
    created_at: float
    revoked_at: float | None

    @property
    def brand(self) -> str | None:
        return self.role.split(":", 1)[1] if self.role.startswith("brand:") else None


def validate_brand(brand: str) -> str:
    if not isinstance(brand, str) or not _BRAND_RE.match(brand):
        raise InputError(f"invalid brand name {brand!r}: letters, digits, '_', '.', '-' (max 100)")
    return brand


def validate_role(role: str) -> str:
    """``admin``, ``scanner`` or ``brand:<name>``; anything else is an :class:`InputError`."""
    if role in ROLES:
        return role
    if role.startswith("brand:"):
        validate_brand(role[len("brand:"):])
        return role
    raise InputError(f"role must be 'admin', 'scanner' or 'brand:<name>', got {role!r}")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------- store
_LEAD_COLS = ("id, listing_id, brand, verdict, confidence, score, reference_id, image_path, seller_id, price, "
              "evidence, status, model_sha256, created_at, updated_at, original_path, risk, risk_parts")
_COMPLAINT_COLS = "id, brand, listing_id, status, created_at, decided_at, verdict, lead_id, image_path"
_FEEDBACK_COLS = "lead_id, from_status, status, note, who, at, kind, undoes, id"
# Columns added after the first release: (table, column, type). Added in place when missing.
_MIGRATIONS = (("leads", "original_path", "TEXT"), ("complaints", "image_path", "TEXT"),
               ("leads", "risk", "REAL"), ("leads", "risk_parts", "TEXT"),
               ("feedback", "kind", "TEXT NOT NULL DEFAULT 'decision'"), ("feedback", "undoes", "INTEGER"))
# The last decision of a lead not yet taken back: what an undo restores.
_LAST_DECISION = ("SELECT id, from_status, status FROM feedback f WHERE lead_id = ? AND kind = 'decision' "
                  "AND NOT EXISTS (SELECT 1 FROM feedback u WHERE u.undoes = f.id) ORDER BY id DESC LIMIT 1")


def _record_id(value: int) -> int:
    """An id as SQLite can take it; anything outside 64 bits cannot exist, so it is not found."""
    v = int(value)
    if not (-(2**63) <= v < 2**63):
        raise NotFoundError(f"record {value} not found")
    return v


def _lead(row: tuple) -> Lead:
    vals = list(row)
    vals[10] = json.loads(vals[10] or "{}")
    vals[17] = json.loads(vals[17]) if vals[17] else None
    return Lead(*vals)


def _verdict_shaped(db: sqlite3.Connection) -> None:
    """Leads recorded by scans before the lead policy stored the inner evidence with the risk
    mixed in; give them the shape every lead now has (the verdict's dict, risk in its columns)."""
    rows = db.execute("SELECT id, verdict, brand, confidence, score, evidence FROM leads").fetchall()
    for lead_id, verdict, brand, confidence, score, text in rows:
        ev = json.loads(text or "{}")
        if not isinstance(ev, dict) or "verdict" in ev:
            continue
        risk, parts = ev.pop("risk", None), ev.pop("risk_parts", None)
        shaped = {"verdict": verdict, "brand": brand, "confidence": confidence, "score": score, "top": [],
                  "evidence": ev, "reason": None}
        db.execute("UPDATE leads SET evidence = ?, risk = COALESCE(risk, ?), risk_parts = COALESCE(risk_parts, ?) "
                   "WHERE id = ?", (json.dumps(shaped, sort_keys=True, default=str), risk,
                                    json.dumps(parts, sort_keys=True) if parts else None, lead_id))


def _complaint(row: tuple) -> Complaint:
    vals = list(row)
    vals[6] = json.loads(vals[6]) if vals[6] else None
    return Complaint(*vals)


class LeadStore:
    """The leads database. Open with ``LeadStore(path)``; close with :meth:`close`.

    ``clock`` exists so tests (and back-fills) can set the time a record is written.
    """

    def __init__(self, path: str | Path, *, clock=time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        # isolation_level=None: no implicit transactions; every write says BEGIN/COMMIT itself.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=10000")
        with self._tx() as db:
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    db.execute(stmt)
            added = set()
            for table, column, kind in _MIGRATIONS:
                have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                    added.add(column)
            if "risk" in added:
                _verdict_shaped(db)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock up front (no upgrade deadlock)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def _read(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def journal_mode(self) -> str:
        return self._read("PRAGMA journal_mode")[0][0]

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
        rows = self._read(f"SELECT {_LEAD_COLS} FROM leads WHERE id = ?", (_record_id(lead_id),))
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
        row = db.execute("SELECT brand, status FROM leads WHERE id = ?", (_record_id(lead_id),)).fetchone()
        if row is None or (brand is not None and row[0] != brand):
            raise NotFoundError(f"lead {lead_id} not found")
        return row[1]

    def _move(self, db: sqlite3.Connection, lead_id: int, status: str, note: str, who: str, brand: str | None,
              now: float) -> None:
        """One decision inside an open transaction; checks everything before writing anything."""
        current = self._lead_status(db, lead_id, brand)
        if status not in TRANSITIONS[current]:
            raise IllegalTransitionError(current, status)
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
            out = db.execute(f"SELECT {_LEAD_COLS} FROM leads WHERE id = ?", (_record_id(lead_id),)).fetchone()
        return _lead(out)

    def undo(self, lead_id: int, *, note: str = "", who: str = "", brand: str | None = None) -> Lead:
        """Take back the lead's last decision not already taken back: a new history entry
        (``kind="undo"``) restores the status before it. Nothing is deleted or rewritten.

        Raises :class:`NotFoundError` or :class:`NothingToUndoError`."""
        self._check_note(note)
        now = self._clock()
        with self._tx() as db:
            self._take_back(db, lead_id, note, who, brand, now)
            out = db.execute(f"SELECT {_LEAD_COLS} FROM leads WHERE id = ?", (_record_id(lead_id),)).fetchone()
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
                          (_record_id(lead_id),))
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

    # ------------------------------------------------------------------ complaints
    def add_complaint(self, brand: str, listing_id: str, verdict: dict[str, Any] | None, *,
                      decided: bool, lead_id: int | None = None, image_path: str | None = None) -> Complaint:
        """Record a brand's complaint; ``decided`` when the automatic check already settled it."""
        validate_brand(brand)
        if not listing_id or len(listing_id) > 512:
            raise InputError("listing_id must be 1..512 characters")
        now = self._clock()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO complaints (brand, listing_id, status, created_at, decided_at, verdict, lead_id, "
                "image_path) VALUES (?,?,?,?,?,?,?,?)",
                (brand, listing_id, "decided" if decided else "pending", now, now if decided else None,
                 json.dumps(verdict, sort_keys=True, default=str) if verdict is not None else None, lead_id,
                 image_path))
            row = db.execute(f"SELECT {_COMPLAINT_COLS} FROM complaints WHERE id = ?", (cur.lastrowid,)).fetchone()
        return _complaint(row)

    def get_complaint(self, complaint_id: int, *, brand: str | None = None) -> Complaint:
        rows = self._read(f"SELECT {_COMPLAINT_COLS} FROM complaints WHERE id = ?", (_record_id(complaint_id),))
        if not rows or (brand is not None and rows[0][1] != brand):
            raise NotFoundError(f"complaint {complaint_id} not found")
        return _complaint(rows[0])

    def decide_complaint(self, complaint_id: int, verdict: dict[str, Any]) -> Complaint:
        """Settle a pending complaint (a human decision after an inconclusive check)."""
        now = self._clock()
        with self._tx() as db:
            row = db.execute("SELECT status FROM complaints WHERE id = ?", (_record_id(complaint_id),)).fetchone()
            if row is None:
                raise NotFoundError(f"complaint {complaint_id} not found")
            if row[0] == "decided":
                raise IllegalTransitionError("decided", "decided")
            db.execute("UPDATE complaints SET status = 'decided', decided_at = ?, verdict = ? WHERE id = ?",
                       (now, json.dumps(verdict, sort_keys=True, default=str), int(complaint_id)))
            out = db.execute(f"SELECT {_COMPLAINT_COLS} FROM complaints WHERE id = ?",
                             (_record_id(complaint_id),)).fetchone()
        return _complaint(out)

    def complaint_report(self, *, brand: str | None = None, since: float | None = None,
                         now: float | None = None) -> ComplaintReport:
        """Share of complaints decided within 24 h (for one brand, or all), since ``since``."""
        now = self._clock() if now is None else now
        where, params = [], []
        if brand is not None:
            where.append("brand = ?")
            params.append(brand)
        if since is not None:
            where.append("created_at >= ?")
            params.append(since)
        sla = COMPLAINT_SLA_SECONDS
        sql = ("SELECT COUNT(*), "
               "SUM(status = 'decided'), "
               "SUM(status = 'decided' AND decided_at - created_at <= ?), "
               "SUM(status = 'pending'), "
               "SUM(status = 'pending' AND ? - created_at > ?) FROM complaints"
               + (" WHERE " + " AND ".join(where) if where else ""))
        total, decided, within, pending, overdue = (int(x or 0) for x in
                                                    self._read(sql, (sla, now, sla, *params))[0])
        due = decided + overdue
        return ComplaintReport(brand, since, total, decided, within, pending, overdue,
                               round(within / due, 6) if due else None)

    # ------------------------------------------------------------------ api keys
    def create_key(self, role: str, label: str = "") -> tuple[str, ApiKey]:
        """A new key for ``role``: returns (token, record). Only the token's hash is stored."""
        validate_role(role)
        key_id = secrets.token_hex(6)
        token = f"{_TOKEN_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        now = self._clock()
        with self._tx() as db:
            db.execute("INSERT INTO api_keys (key_id, key_hash, role, label, created_at) VALUES (?,?,?,?,?)",
                       (key_id, hash_token(token), role, label, now))
        return token, ApiKey(key_id, role, label, now, None)

    def authenticate(self, token: str) -> ApiKey:
        """The key behind ``token``, or :class:`InvalidKeyError`. Constant-time hash comparison."""
        parts = token.split("_", 2) if isinstance(token, str) else []
        if len(parts) != 3 or parts[0] != _TOKEN_PREFIX or not parts[1] or len(token) > 200:
            raise InvalidKeyError("malformed API key")
        rows = self._read("SELECT key_id, key_hash, role, label, created_at, revoked_at FROM api_keys "
                          "WHERE key_id = ?", (parts[1],))
        # Hash and compare even when the id is unknown, so timing says nothing about which ids exist.
        stored = rows[0][1] if rows else "0" * 64
        ok = hmac.compare_digest(hash_token(token), stored)
        if not rows or not ok:
            raise InvalidKeyError("unknown API key")
        key_id, _, role, label, created_at, revoked_at = rows[0]
        if revoked_at is not None:
            raise InvalidKeyError("revoked API key")
        return ApiKey(key_id, role, label, created_at, revoked_at)

    def revoke_key(self, key_id: str) -> None:
        with self._tx() as db:
            cur = db.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                             (self._clock(), key_id))
            if cur.rowcount == 0:
                raise NotFoundError(f"no active key {key_id!r}")

    def list_keys(self) -> list[ApiKey]:
        rows = self._read("SELECT key_id, role, label, created_at, revoked_at FROM api_keys ORDER BY created_at")
        return [ApiKey(*r) for r in rows]
