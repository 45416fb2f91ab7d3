"""The deep depths' decision: a listing's candidates (global, local and shape evidence, fused
into one probability each) turned into a verdict with its evidence and the rule that decided.

Kept apart from ``pipeline`` (which gathers the evidence) so the decision reads in one place.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from typing import TYPE_CHECKING

from brandguard.engine.decide import ReferenceHit, Verdict
from brandguard.engine.fusion import FEATURES, DeepCalibration, prefer_sources
from brandguard.vision.local import LocalFeatures
from brandguard.vision.local_match import LocalMatch
from brandguard.vision.shapes import ShapeMatch

if TYPE_CHECKING:
    from brandguard.engine.pipeline import Pipeline


def decide_visual(pipe: "Pipeline", hits: list[ReferenceHit], ev: dict, matches: list[LocalMatch],
                  source: bytes | str | os.PathLike[str] | None = None,
                  listing: LocalFeatures | None = None,
                  shapes: dict[int, ShapeMatch] | None = None) -> Verdict:
    """Fuse global hits, local matches and shape placements into one probability per reference,
    then decide.

    A flagged reference without copy geometry from the descriptor index (a flat mark has
    few SIFT keypoints) but with a global score from the fast path's verify floor gets the
    fast path's ORB check against that one reference, with ``source``: a copy is a copy
    whichever stage proves it."""
    deep = pipe.calibration.deep or DEFAULT_DEEP
    cands = pipe.deep_candidates(hits, matches, listing, shapes)
    if not cands:
        return Verdict("clear", confidence=1.0, evidence={**ev, "note": "no references indexed"})
    probs, swaps = prefer_sources([c.hit.brand for c in cands], deep.probability([c.evidence for c in cands]),
                                  [c.agreement for c in cands], deep.source_ncc, deep.source_beyond,
                                  deep.sibling_factor)
    order = sorted(range(len(cands)), key=lambda j: (-probs[j], cands[j].hit.reference_id))
    top = tuple(replace(cands[j].hit, score=round(float(probs[j]), 6)) for j in order[: pipe.top_k])
    # the most probable candidate that clears its own threshold (an outline fit is held to the
    # shape threshold), else the most probable one
    pick = next((j for j in order if float(probs[j]) >= deep.flag_for(cands[j].evidence)), order[0])
    need = deep.flag_for(cands[pick].evidence)
    by_geometry = False
    if float(probs[pick]) < need:  # a strong geometric match flags on its own
        strongest = max(range(len(cands)), key=lambda j: (cands[j].match.inliers if cands[j].match else 0, probs[j]))
        m = cands[strongest].match
        if m is not None and m.inliers >= deep.geometry_inliers:
            pick, by_geometry = strongest, True
    best_hit, best_ev, best_match = cands[pick].hit, cands[pick].evidence, cands[pick].match
    best_shape = cands[pick].shape
    if cands[pick].agreement is not None:
        ev["agreement"] = cands[pick].agreement.to_dict()
    if best_shape is not None:
        ev["shape"] = best_shape.to_dict()
    if pick in swaps:
        other, share = swaps[pick]
        ev["source_choice"] = (f"{best_hit.reference_id} agrees on {share:.0%} of the photo outside "
                               f"{cands[other].hit.reference_id}'s outline: the listing was made from it")
    p = float(probs[pick])
    th, _ = pipe.calibration.for_brand(best_hit.brand)
    stage = ("global+local" if best_match is not None and not best_ev.global_absent else
             "local" if best_match is not None else
             "shape" if best_shape is not None and best_ev.global_absent else
             "global+shape" if best_shape is not None else "global")
    ev.update(stage=stage, fused_probability=round(p, 6), global_score=round(best_ev.global_score, 6),
              calibration=deep.method, calibrated=deep.method != "default",
              thresholds={"flag_probability": need, "copy_inliers": deep.copy_inliers,
                          "copy_area": deep.copy_area, "global_copy": th.copy})
    if best_match is not None:
        ev["local"] = best_match.to_dict()
        ev["match_box"] = list(best_match.box)
    elif best_shape is not None:
        ev["match_box"] = list(best_shape.box)
    ev["thresholds"]["geometry_inliers"] = deep.geometry_inliers
    whole = (best_match is not None and not best_match.mirrored and best_match.inliers >= deep.copy_inliers
             and best_match.area_share >= deep.copy_area)
    if p < need and not by_geometry:
        # What the fast stage flags stays flagged: a flat mark (a swoosh, arches) gives SIFT a
        # handful of keypoints, so no local evidence is no evidence against a global match.
        fast = pipe.decide_fast(hits, dict(ev), source)
        if fast.verdict in ("copy", "knockoff"):
            ev.update({k: v for k, v in fast.evidence.items() if k in ("geometry", "decided_by")})
            ev["decided_by"] = (f"fused probability {p:.2f} < {need:.2f}, but the global stage flags it: "
                                + fast.evidence.get("decided_by", f"global score {fast.score:.2f} >= "
                                                    f"{th.knockoff:.2f} -> {fast.verdict}"))
            ev["stage"] = "global"
            if fast.brand != best_hit.brand:  # the local evidence is about another reference
                for key in ("local", "match_box", "agreement", "source_choice", "shape"):
                    ev.pop(key, None)
            score = next((h.score for h in top if h.reference_id == fast.top[0].reference_id), p) if fast.top else p
            return Verdict(fast.verdict, brand=fast.brand, confidence=fast.confidence, score=score, top=top,
                           evidence=ev)
        ev["decided_by"] = f"fused probability {p:.2f} < {need:.2f}{_held(need, deep)} -> clear"
        return Verdict("clear", confidence=round(deep.confidence(p, False, need), 4), score=round(p, 6), top=top,
                       evidence=ev)
    geometry = None
    if (not whole and source is not None and not best_ev.global_absent
            and best_ev.global_score >= pipe.calibration.verify_from(best_hit.brand)
            and best_ev.global_score < th.copy):
        geometry = pipe.verify(source, best_hit.reference_id)
        ev["geometry"] = geometry.to_dict()
    if not best_ev.global_absent and best_ev.global_score >= th.copy:
        kind, rule = "copy", f"global score {best_ev.global_score:.2f} >= {th.copy:.2f} -> copy"
    elif geometry is not None and geometry.inliers >= pipe.calibration.min_inliers and not geometry.mirrored:
        kind, rule = "copy", (f"ORB check: {geometry.inliers} inliers >= {pipe.calibration.min_inliers} "
                              "against the whole reference -> copy")
    elif whole:
        kind, rule = "copy", (f"{best_match.inliers} inliers >= {deep.copy_inliers}, outline covers "
                              f"{best_match.area_share:.0%} of the photo >= {deep.copy_area:.0%} -> copy")
    else:
        why = ("mirrored match" if best_match is not None and best_match.mirrored else
               "partial local agreement" if best_match is not None else
               (f"the mark's outline fits {'mirrored ' if best_shape.mirrored else ''}(IoU {best_shape.iou:.2f})"
                if best_shape is not None else "global similarity without copy geometry"))
        kind, rule = "knockoff", f"{why} -> knockoff"
    flag_rule = (f"{best_match.inliers} inliers >= {deep.geometry_inliers} (geometric match)" if by_geometry
                 else f"fused probability {p:.2f} >= {need:.2f}{_held(need, deep)}")
    ev["decided_by"] = f"{flag_rule}; {rule}" + (f"; {ev['source_choice']}" if "source_choice" in ev else "")
    conf = (1.0 / (1.0 + math.exp(-((best_match.inliers - deep.geometry_inliers) / 5.0 + 2.0))) if by_geometry
            else deep.confidence(p, True, need))
    return Verdict(kind, brand=best_hit.brand, confidence=round(conf, 4), score=round(p, 6), top=top, evidence=ev)


def _held(need: float, deep: DeepCalibration) -> str:
    """Names the shape threshold in a decision when it is the one applied."""
    return " (the shape threshold: an outline fit without a geometric match)" if need != deep.flag else ""


# Before a bundle is calibrated for the deep stage: a hand-set fusion (inliers dominate, the
# global score helps) so that thorough/auto still work, flagged as uncalibrated in evidence.
DEFAULT_DEEP = DeepCalibration(
    weights=(1.0, -0.3, 0.5, 0.5, 0.5, 0.5, 0.3, 0.2, 0.0, 0.2, 0.0, 0.0, 0.3, 0.3, 0.0, 0.0, 0.3), bias=-2.0,
    mean=(0.3,) + (0.0,) * 16,
    scale=(0.1, 1.0, 1.0, 0.5, 0.5, 0.5, 0.3, 0.1, 1.0, 1.0, 1.0, 1.0, 0.1, 0.5, 0.1, 1.0, 1.0), method="default",
    features=FEATURES[:17])
