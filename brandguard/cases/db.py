"""The cases database: leads, their feedback history, complaints and API keys in one SQLite file.

WAL mode (readers never block the writer), every write one explicit ``BEGIN IMMEDIATE``
transaction, one connection shared behind a lock, so the store is safe to call from any
thread of a server's threadpool. Columns added after the first release are migrated in place.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from brandguard.errors import BrandguardError
from brandguard.errors import NotFoundError as RecordNotFound

SCHEMA = """
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

# Columns added after the first release: (table, column, type). Added in place when missing.
MIGRATIONS = (("leads", "original_path", "TEXT"), ("complaints", "image_path", "TEXT"),
               ("leads", "risk", "REAL"), ("leads", "risk_parts", "TEXT"),
               ("feedback", "kind", "TEXT NOT NULL DEFAULT 'decision'"), ("feedback", "undoes", "INTEGER"))

class LeadStoreError(BrandguardError):
    """Base of the errors the leads store raises on purpose."""


class NotFoundError(LeadStoreError, RecordNotFound):
    """A lead or complaint does not exist, or is not visible to the caller's brand."""


class IllegalTransitionError(LeadStoreError):
    """A status change the lifecycle does not allow (a decided lead, a settled complaint);
    ``allowed`` names the moves there are from ``current``."""

    def __init__(self, current: str, wanted: str, allowed: Iterable[str] = ()) -> None:
        self.current = current
        self.wanted = wanted
        allowed = ", ".join(sorted(allowed)) or "none (final state)"
        super().__init__(f"cannot move a lead from {current!r} to {wanted!r}; allowed: {allowed}")


def record_id(value: int) -> int:
    """An id as SQLite can take it; anything outside 64 bits cannot exist, so it is not found."""
    v = int(value)
    if not (-(2**63) <= v < 2**63):
        raise NotFoundError(f"record {value} not found")
    return v


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



class CasesDB:
    """The connection, its transactions and the schema; :class:`~brandguard.cases.leads.LeadStore`
    adds what each table means (leads, complaints, keys).

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
            for stmt in SCHEMA.strip().split(";"):
                if stmt.strip():
                    db.execute(stmt)
            added = set()
            for table, column, kind in MIGRATIONS:
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

