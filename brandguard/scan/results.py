"""A scan's result rows: one typed row per listing, serialised once.

:class:`ResultRow` is made from a verdict and flows through the scan as it is: the local-stage
counts read its evidence, ranking reads its best hit's SKU, the leads store gets its evidence
dict. Its JSON columns (``top_references``, ``evidence``) are encoded once, when the row is
written to a part (or by the Ray actor that made it), and decoded only where another process
or an earlier run wrote them (rows handed back by Ray actors, flagged rows of earlier parts).
The merge of parts into ``results.parquet`` stays in Arrow: columns are copied, not re-encoded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from brandguard.engine.decide import ReferenceHit, Verdict
from brandguard.inputs import ListingRow
from brandguard.scan.worker import Fingerprint

RESULT_COLUMNS = [
    ("listing_id", pa.string()), ("seller_id", pa.string()), ("title", pa.string()), ("price", pa.float64()),
    ("image", pa.string()), ("verdict", pa.string()), ("brand", pa.string()), ("confidence", pa.float64()),
    ("score", pa.float64()), ("reason", pa.string()), ("top_reference_id", pa.string()),
    ("top_references", pa.string()), ("evidence", pa.string()), ("model_sha256", pa.string()),
    ("image_bytes", pa.int64()), ("image_mtime_ns", pa.int64()), ("image_sha256", pa.string()),
]
RESULT_SCHEMA = pa.schema(RESULT_COLUMNS)
# results.parquet: the parts' columns, then the ranking's
RANK_COLUMNS = [("lead", pa.string()), ("risk", pa.float64()), ("risk_parts", pa.string())]
FINAL_SCHEMA = pa.schema(RESULT_COLUMNS + RANK_COLUMNS)
FLAGGED = ("copy", "knockoff")


@dataclass(frozen=True)
class ResultRow:
    """One listing's result. ``encoded`` holds its JSON columns when they were already written
    by someone else (a Ray actor, an earlier run), so they are passed on, not re-encoded."""

    listing_id: str
    seller_id: str
    title: str
    price: float | None
    image: str
    verdict: str
    brand: str | None
    confidence: float | None
    score: float | None
    reason: str | None
    top: tuple[ReferenceHit, ...]
    evidence: dict[str, Any]
    model_sha256: str
    fingerprint: Fingerprint
    encoded: tuple[str, str] | None = field(default=None, repr=False, compare=False)

    @property
    def top_reference_id(self) -> str | None:
        return self.top[0].reference_id if self.top else None

    @property
    def flagged(self) -> bool:
        """A copy or knockoff of a named brand: what ranking and the leads store consider."""
        return self.verdict in FLAGGED and bool(self.brand)

    def record(self) -> dict[str, Any]:
        """The row as a part stores it (:data:`RESULT_SCHEMA`): the one place it is encoded."""
        top_json, evidence_json = self.encoded or (json.dumps([h.to_dict() for h in self.top]),
                                                   json.dumps(self.evidence, sort_keys=True))
        fp = self.fingerprint
        return {
            "image_bytes": fp.size, "image_mtime_ns": fp.mtime_ns, "image_sha256": fp.sha256,
            "listing_id": self.listing_id, "seller_id": self.seller_id, "title": self.title, "price": self.price,
            "image": self.image, "verdict": self.verdict, "brand": self.brand, "confidence": self.confidence,
            "score": self.score, "reason": self.reason, "top_reference_id": self.top_reference_id,
            "top_references": top_json, "evidence": evidence_json, "model_sha256": self.model_sha256,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> ResultRow:
        """A row another process or an earlier run encoded (:meth:`record`); decoded once, and
        its JSON kept to be written again as it was."""
        top_json, evidence_json = rec.get("top_references") or "[]", rec.get("evidence") or "{}"
        return cls(
            listing_id=rec["listing_id"], seller_id=rec.get("seller_id") or "", title=rec.get("title") or "",
            price=rec.get("price"), image=rec.get("image") or "", verdict=rec["verdict"], brand=rec.get("brand"),
            confidence=rec.get("confidence"), score=rec.get("score"), reason=rec.get("reason"),
            top=tuple(ReferenceHit(**h) for h in json.loads(top_json)), evidence=json.loads(evidence_json),
            model_sha256=rec.get("model_sha256") or "",
            fingerprint=Fingerprint(rec.get("image_bytes"), rec.get("image_mtime_ns"), rec.get("image_sha256")),
            encoded=(rec.get("top_references"), rec.get("evidence")))


def verdict_row(row: ListingRow, v: Verdict, model_sha: str, fp: Fingerprint) -> ResultRow:
    """The result of judging ``row``'s image (or of the row itself being unusable)."""
    return ResultRow(listing_id=row.listing_id, seller_id=row.seller_id, title=row.title, price=row.price,
                     image=row.image, verdict=v.verdict, brand=v.brand, confidence=v.confidence, score=v.score,
                     reason=v.reason, top=tuple(v.top), evidence=v.evidence, model_sha256=model_sha,
                     fingerprint=fp)


def records_table(rows: list[ResultRow]) -> pa.Table:
    """Rows as an Arrow table of :data:`RESULT_SCHEMA` (a part, or a Ray actor's answer)."""
    return pa.Table.from_pylist([r.record() for r in rows], schema=RESULT_SCHEMA)


def read_results(out: str | os.PathLike[str]) -> list[dict]:
    """The rows of ``OUT/results.parquet`` as plain dicts (its columns, JSON as text)."""
    return pq.read_table(Path(out) / "results.parquet").to_pylist()


__all__ = ["ResultRow", "RESULT_SCHEMA", "FINAL_SCHEMA", "RESULT_COLUMNS", "verdict_row", "records_table",
           "read_results"]
