"""From search hits to a verdict a brand can act on.

Thresholds live in the bundle's ``calibration.json`` (written when the index is built or
calibrated); without one, global defaults apply and every verdict says it is uncalibrated.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from brandguard.errors import BundleError
from brandguard.engine.fusion import DeepCalibration
from brandguard.vision.verify import Geometry

VERDICTS = ("copy", "knockoff", "clear", "inconclusive")
CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class ReferenceHit:
    """A candidate reference as a verdict reports it: its labels and the (normalised) score the
    decision used. Built from the index's record with :meth:`of`."""

    reference_id: str
    brand: str
    sku: str
    kind: str
    score: float

    @classmethod
    def of(cls, record: Any, score: float) -> "ReferenceHit":
        """From an index record (any object with the record's fields) and a score."""
        return cls(record.reference_id, record.brand, record.sku, record.kind, score)

    def to_dict(self) -> dict:
        """Plain dict for JSON (``dataclasses.asdict`` deep-copies; this runs per listing)."""
        return {"reference_id": self.reference_id, "brand": self.brand, "sku": self.sku, "kind": self.kind,
                "score": self.score}


@dataclass(frozen=True)
class Verdict:
    """The answer for one image. ``reason`` is set exactly when verdict is ``inconclusive``."""

    verdict: str
    brand: str | None = None
    confidence: float = 0.0
    score: float | None = None
    top: tuple[ReferenceHit, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["top"] = [asdict(h) for h in self.top]
        return d

    @classmethod
    def inconclusive(cls, reason: str, detail: str = "") -> "Verdict":
        return cls(verdict="inconclusive", reason=reason, evidence={"detail": detail} if detail else {})


@dataclass(frozen=True)
class BrandThresholds:
    copy: float
    knockoff: float


@dataclass(frozen=True)
class Calibration:
    """Score thresholds: global, with optional per-brand overrides."""

    copy: float = 0.80
    knockoff: float = 0.60
    per_brand: dict[str, BrandThresholds] = field(default_factory=dict)
    method: str = "default"
    # Inliers of a similarity transform that make a candidate a verified copy.
    min_inliers: int = 15
    # Lowest similarity at which local features are checked: a verified geometric copy is
    # flagged from here on, well below ``knockoff``. None = verify only above ``knockoff``.
    verify_floor: float | None = None
    # Width of the logistic that turns the margin over a threshold into a confidence.
    temperature: float = 0.05
    # Fusion of global and local evidence for thorough/auto depth (None: not calibrated yet).
    deep: DeepCalibration | None = None

    def verify_from(self, brand: str) -> float:
        """Score above which a candidate of ``brand`` is worth a local-feature check."""
        th, _ = self.for_brand(brand)
        return th.knockoff if self.verify_floor is None else min(self.verify_floor, th.knockoff)

    def for_brand(self, brand: str) -> tuple[BrandThresholds, bool]:
        """(thresholds, calibrated?) for ``brand``; uncalibrated brands use the global ones."""
        if brand in self.per_brand:
            return self.per_brand[brand], True
        return BrandThresholds(self.copy, self.knockoff), self.method != "default"

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, bundle_dir: str | Path) -> "Calibration":
        """Read ``calibration.json`` from a bundle, or the defaults when there is none."""
        path = Path(bundle_dir) / CALIBRATION_FILE
        if not path.is_file():
            return cls()
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            per = {b: BrandThresholds(**t) for b, t in d.pop("per_brand", {}).items()}
            deep = d.pop("deep", None)
            cal = cls(per_brand=per, deep=DeepCalibration.from_dict(deep) if deep else None, **d)
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{path} is not a valid calibration file: {exc}") from exc
        for name, th in [("global", cal), *cal.per_brand.items()]:
            # Background-normalised scores (cosine minus background similarity) may be negative.
            if not (-1 <= th.knockoff <= th.copy <= 1):
                raise BundleError(f"{path}: {name} thresholds must satisfy -1 <= knockoff <= copy <= 1")
        return cal


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))


def candidate(hits: Sequence[ReferenceHit], calibration: Calibration) -> ReferenceHit | None:
    """The hit to judge: the best hit of the brand whose own flag threshold it clears most.

    With global thresholds only this is simply the top hit; with per-brand thresholds a brand
    scoring 0.89 against its own 0.80 outranks another scoring 0.90 against a global 0.95.
    """
    if not hits:
        return None
    best_per_brand: dict[str, ReferenceHit] = {}
    for h in hits:
        if h.brand not in best_per_brand or h.score > best_per_brand[h.brand].score:
            best_per_brand[h.brand] = h
    return max(best_per_brand.values(),
               key=lambda h: (h.score - calibration.for_brand(h.brand)[0].knockoff, h.score))


def decide(hits: Sequence[ReferenceHit], calibration: Calibration,
           evidence: dict[str, Any] | None = None, geometry: Geometry | None = None) -> Verdict:
    """Verdict from the merged, best-first hits of one image.

    ``copy``: the best reference is close enough to be the same image, edited, or it is above
    the knockoff threshold and local features confirm a geometric copy of it.
    ``knockoff``: the brand's imagery is clearly resembled, but not as a copy of any reference.
    ``clear``: nothing registered is close.
    """
    ev = dict(evidence or {})
    best = candidate(hits, calibration)
    if best is None:
        return Verdict("clear", confidence=1.0, evidence={**ev, "note": "no references indexed"})
    th, calibrated = calibration.for_brand(best.brand)
    ev.update(calibrated=calibrated, thresholds={"copy": th.copy, "knockoff": th.knockoff},
              calibration=calibration.method,
              # a brand without thresholds of its own uses the global ones, and the evidence says so
              threshold_scope="brand" if best.brand in calibration.per_brand else "global")
    if geometry is not None:
        ev["geometry"] = geometry.to_dict()
    verified = geometry is not None and geometry.inliers >= calibration.min_inliers
    t = calibration.temperature
    if best.score >= th.copy:
        kind, brand, conf = "copy", best.brand, _logistic((best.score - th.copy) / t + 2.0)
    elif verified and best.score >= calibration.verify_from(best.brand):
        kind, brand = "copy", best.brand
        conf = _logistic((geometry.inliers - calibration.min_inliers) / 5.0 + 2.0)
        ev["decided_by"] = "geometric verification"
    elif best.score >= th.knockoff:
        kind, brand = "knockoff", best.brand
        # Confidence that this is brand imagery at all; how sure we are it is not a copy is
        # the distance below the copy threshold.
        conf = _logistic((best.score - th.knockoff) / t)
    else:
        kind, brand, conf = "clear", None, _logistic((th.knockoff - best.score) / t)
    return Verdict(kind, brand=brand, confidence=round(conf, 4), score=round(best.score, 6),
                   top=tuple(hits), evidence=ev)
