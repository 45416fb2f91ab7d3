"""References held for an admin's decision, and the audit log of every change to references.

A brand key may register its own references, but an image that another brand's registered
reference matches at copy level would move that brand's detections to the newcomer (a brand
registering Apple's logo as its own turns Apple's knockoffs into its leads). Such a reference
is held here, out of the index, until an admin approves or rejects it. Every add, removal,
hold and decision is written to the audit log, with who did it.

One SQLite file per bundle (``references/quarantine.sqlite``, WAL), beside the stored images.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brandguard.errors import InputError, NotFoundError

QUARANTINE_FILE = "quarantine.sqlite"
STATUSES = ("pending", "approved", "rejected")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS held (
    id TEXT PRIMARY KEY,
    reference_id TEXT NOT NULL,
    brand TEXT NOT NULL,
    sku TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    conflicts TEXT NOT NULL,
    submitted_by TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    decided_by TEXT,
    decided_at REAL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS held_status ON held(status, submitted_at);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    reference_id TEXT NOT NULL,
    brand TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Conflict:
    """Another brand's registered reference that a new image matches at copy level."""

    reference_id: str
    brand: str
    verdict: str
    score: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"reference_id": self.reference_id, "brand": self.brand, "verdict": self.verdict,
                "score": self.score}


@dataclass(frozen=True)
class HeldReference:
    """A reference waiting for (or given) an admin's decision. ``source`` is its stored image,
    relative to the bundle, exactly as an indexed reference's would be."""

    id: str
    reference_id: str
    brand: str
    sku: str
    kind: str
    source: str
    sha256: str
    conflicts: tuple[Conflict, ...]
    submitted_by: str
    submitted_at: float
    status: str = "pending"
    decided_by: str | None = None
    decided_at: float | None = None
    note: str = ""

    def to_dict(self, with_conflicts: bool = True) -> dict[str, Any]:
        """JSON view; ``with_conflicts=False`` for the submitting brand, who must not learn
        another brand's reference ids."""
        d = {k: getattr(self, k) for k in ("id", "reference_id", "brand", "sku", "kind", "sha256", "submitted_by",
                                           "submitted_at", "status", "decided_by", "decided_at", "note")}
        if with_conflicts:
            d["conflicts"] = [c.to_dict() for c in self.conflicts]
        else:
            d["conflicts"] = len(self.conflicts)
        return d


class Quarantine:
    """The held references and the audit log of one bundle."""

    def __init__(self, bundle_dir: str | Path) -> None:
        folder = Path(bundle_dir) / "references"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / QUARANTINE_FILE
        self._db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # ---------------------------------------------------------------- held references
    def hold(self, reference_id: str, brand: str, sku: str, kind: str, source: str, sha256: str,
             conflicts: list[Conflict], actor: str) -> HeldReference:
        """Hold a new reference; refused if the same id is already waiting."""
        if self._db.execute("SELECT 1 FROM held WHERE reference_id = ? AND status = 'pending'",
                            (reference_id,)).fetchone():
            raise InputError(f"reference {reference_id!r} is already waiting for an admin's decision")
        held = HeldReference(uuid.uuid4().hex, reference_id, brand, sku, kind, source, sha256, tuple(conflicts),
                             actor, time.time())
        with self._tx():
            self._db.execute(
                "INSERT INTO held (id, reference_id, brand, sku, kind, source, sha256, conflicts, submitted_by, "
                "submitted_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (held.id, reference_id, brand, sku, kind, source, sha256,
                 json.dumps([c.to_dict() for c in conflicts]), actor, held.submitted_at))
            self._log(actor, "hold", reference_id, brand, {"held_id": held.id, "sha256": sha256,
                                                          "conflicts": [c.to_dict() for c in conflicts]})
        return held

    def get(self, held_id: str, brand: str | None = None) -> HeldReference:
        """One held reference (``brand``: only if it is that brand's; otherwise not found)."""
        row = self._db.execute(f"SELECT {_COLUMNS} FROM held WHERE id = ?", (held_id,)).fetchone()
        if row is None or (brand is not None and row[2] != brand):
            raise NotFoundError(f"held reference {held_id!r} not found")
        return _held(row)

    def list(self, status: str | None = "pending", brand: str | None = None, limit: int = 100) -> list[HeldReference]:
        if status is not None and status not in STATUSES:
            raise InputError(f"status must be one of {', '.join(STATUSES)}")
        sql, args = f"SELECT {_COLUMNS} FROM held WHERE 1=1", []
        if status is not None:
            sql, args = sql + " AND status = ?", [*args, status]
        if brand is not None:
            sql, args = sql + " AND brand = ?", [*args, brand]
        rows = self._db.execute(sql + " ORDER BY submitted_at, id LIMIT ?", (*args, max(1, min(limit, 1000))))
        return [_held(r) for r in rows]

    def pending_sources(self) -> set[str]:
        """Stored images that pending references still need (kept by the leftover cleaner)."""
        return {s for (s,) in self._db.execute("SELECT source FROM held WHERE status = 'pending'")}

    def decide(self, held_id: str, approve: bool, actor: str, note: str = "") -> HeldReference:
        """Record an admin's decision on a pending reference (the caller indexes an approved one)."""
        held = self.get(held_id)
        if held.status != "pending":
            raise InputError(f"held reference {held_id!r} was already {held.status}")
        status = "approved" if approve else "rejected"
        now = time.time()
        with self._tx():
            self._db.execute("UPDATE held SET status = ?, decided_by = ?, decided_at = ?, note = ? WHERE id = ?",
                             (status, actor, now, note[:1000], held_id))
            self._log(actor, "approve" if approve else "reject", held.reference_id, held.brand,
                      {"held_id": held_id, "note": note[:1000]})
        return self.get(held_id)

    # ---------------------------------------------------------------- audit
    def audit(self, actor: str, action: str, reference_id: str, brand: str, detail: dict[str, Any]) -> None:
        with self._tx():
            self._log(actor, action, reference_id, brand, detail)

    def audit_log(self, limit: int = 100, brand: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT seq, at, actor, action, reference_id, brand, detail FROM audit", []
        if brand is not None:
            sql, args = sql + " WHERE brand = ?", [brand]
        rows = self._db.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, max(1, min(limit, 1000))))
        return [{"seq": s, "at": at, "actor": a, "action": act, "reference_id": rid, "brand": b,
                 "detail": json.loads(d)} for s, at, a, act, rid, b, d in rows]

    def _log(self, actor: str, action: str, reference_id: str, brand: str, detail: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO audit (at, actor, action, reference_id, brand, detail) VALUES (?,?,?,?,?,?)",
                         (time.time(), actor, action, reference_id, brand, json.dumps(detail, sort_keys=True)))

    def _tx(self):  # noqa: ANN202 - a context manager over one IMMEDIATE transaction
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


_COLUMNS = ("id, reference_id, brand, sku, kind, source, sha256, conflicts, submitted_by, submitted_at, status, "
            "decided_by, decided_at, note")


def _held(row: tuple) -> HeldReference:
    conflicts = tuple(Conflict(**c) for c in json.loads(row[7]))
    return HeldReference(*row[:7], conflicts, *row[8:])
