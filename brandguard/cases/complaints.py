"""Complaints: a brand reports a listing; it is checked at once and settled, and the 24 h report
says how fast complaints get decided."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from brandguard.cases.db import IllegalTransitionError, NotFoundError, record_id
from brandguard.cases.keys import validate_brand
from brandguard.errors import InputError

COMPLAINT_SLA_SECONDS = 24 * 3600


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


_COMPLAINT_COLS = "id, brand, listing_id, status, created_at, decided_at, verdict, lead_id, image_path"


def _complaint(row: tuple) -> Complaint:
    vals = list(row)
    vals[6] = json.loads(vals[6]) if vals[6] else None
    return Complaint(*vals)


class ComplaintBook:
    """The complaint methods of the leads store (mixed into ``LeadStore``, which owns the database)."""

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
        rows = self._read(f"SELECT {_COMPLAINT_COLS} FROM complaints WHERE id = ?", (record_id(complaint_id),))
        if not rows or (brand is not None and rows[0][1] != brand):
            raise NotFoundError(f"complaint {complaint_id} not found")
        return _complaint(rows[0])

    def decide_complaint(self, complaint_id: int, verdict: dict[str, Any]) -> Complaint:
        """Settle a pending complaint (a human decision after an inconclusive check)."""
        now = self._clock()
        with self._tx() as db:
            row = db.execute("SELECT status FROM complaints WHERE id = ?", (record_id(complaint_id),)).fetchone()
            if row is None:
                raise NotFoundError(f"complaint {complaint_id} not found")
            if row[0] == "decided":
                raise IllegalTransitionError("decided", "decided")
            db.execute("UPDATE complaints SET status = 'decided', decided_at = ?, verdict = ? WHERE id = ?",
                       (now, json.dumps(verdict, sort_keys=True, default=str), int(complaint_id)))
            out = db.execute(f"SELECT {_COMPLAINT_COLS} FROM complaints WHERE id = ?",
                             (record_id(complaint_id),)).fetchone()
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

