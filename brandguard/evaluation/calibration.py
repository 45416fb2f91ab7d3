"""Calibrate verdict thresholds to a target precision on held-out labelled data.

Input is a corpus split in the benchmark format (``references/``, ``queries/``,
``ground_truth.csv``, ``queries.csv`` with a ``family`` per query). Every query is judged by
the real pipeline (regions, search, verification) against an index of that split's
references, then:

- the **flag** threshold (``knockoff``) is the lowest score at which flagged queries point at
  the right brand with at least the target precision (a flag on a distractor, or on the wrong
  brand, is a false positive);
- the **copy** threshold is the lowest score at which flags called ``copy`` really are copy
  families (copy_light, copy_strong) with the target precision.

Thresholds come from brands the model never saw in training (the val split), so they are the
global fallback for any new brand; brands with their own feedback labels get their own.
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from brandguard.inputs import read_references
from brandguard.errors import InputError
from brandguard.evaluation.families import FAMILY_VERDICT, MARK_FAMILIES
from brandguard.evaluation.metrics import read_ground_truth, read_query_families
from brandguard.inputs import list_images
from brandguard.references import build_index, new_bundle_from
from brandguard.vision.bundle import Bundle
from brandguard.engine.decide import CALIBRATION_FILE, Calibration
from brandguard.engine.fusion import DeepCalibration
from brandguard.engine.pipeline import Pipeline
from brandguard.engine.routing import DepthOptions



@dataclass(frozen=True)
class Judged:
    query_id: str
    family: str
    brand: str  # ground-truth brand ("" for distractors)
    best_brand: str
    score: float
    inliers: int
    verdict: str = ""


def judge_split(pipe: Pipeline, split_dir: Path, threads: int = 1,
                calibration: Calibration | None = None) -> list[Judged]:
    """Run the pipeline over a split's queries against an index of its references.

    Without ``calibration``, every candidate is verified (to calibrate); with one, the verdicts
    are the production ones (to report them)."""
    queries_csv = split_dir / "queries.csv"
    if not queries_csv.is_file():
        raise InputError(f"{split_dir} has no queries.csv (family per query); is it a corpus split?")
    with open(queries_csv, newline="", encoding="utf-8") as f:
        info = {r["query_id"]: r for r in csv.DictReader(f)}
    gt = read_ground_truth(split_dir / "ground_truth.csv")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Pipeline.from_bundle(new_bundle_from(pipe.bundle, Path(tmp)), threads=threads,
                                       region_mode=pipe.region_mode, depth=DepthOptions("fast"))
        build_index(scratch, read_references(split_dir / "references"), threads=threads)
        # Judge with verification always on: thresholds must not gate the evidence they calibrate.
        scratch.calibration = calibration or Calibration(copy=1.0, knockoff=-1.0, method="calibrating")
        out: list[Judged] = []
        queries = list_images(split_dir / "queries")
        for start in range(0, len(queries), 64):
            chunk = queries[start:start + 64]
            verdicts = scratch.check([str(p) for _, p in chunk])
            for (qid, _), v in zip(chunk, verdicts):
                row = info.get(qid, {})
                refs = gt.get(qid, set())
                brand = next(iter(refs)).split("/")[0] if refs else ""
                g = v.evidence.get("geometry") or {}
                out.append(Judged(qid, row.get("family", ""), brand, v.brand or (v.top[0].brand if v.top else ""),
                                  float(v.score) if v.score is not None else -1.0, int(g.get("inliers", 0)),
                                  v.verdict))
        scratch.index.close()
    return out


def threshold_at_precision(scored: list[tuple[float, bool]], target: float) -> tuple[float, float, int]:
    """Lowest threshold whose set {score >= t} has precision >= target: (t, precision, n_true_kept)."""
    ranked = sorted(scored, key=lambda x: -x[0])
    best = (ranked[0][0] + 1e-6 if ranked else 1.0, 1.0, 0)
    tp = 0
    for i, (s, ok) in enumerate(ranked, start=1):
        tp += ok
        nxt = ranked[i][0] if i < len(ranked) else None
        if nxt is not None and nxt == s:
            continue  # a threshold cannot split tied scores
        if tp / i >= target:
            best = (s, tp / i, tp)
    return best


def calibrate(judged: list[Judged], target: float = 0.95, min_inliers: int | None = None,
              max_verify_share: float = 0.2) -> tuple[Calibration, dict]:
    """Calibrate, choosing ``min_inliers`` (unless given) for the most right flags at ``target``."""
    if min_inliers is not None:
        return _calibrate(judged, target, min_inliers, max_verify_share)
    best = None
    for m in (10, 15, 20, 30, 45):
        cal, report = _calibrate(judged, target, m, max_verify_share)
        found = sum(f["flagged_right_brand"] for f in report["per_family"].values())
        if best is None or found > best[0]:
            best = (found, cal, report)
    return best[1], best[2]


def _calibrate(judged: list[Judged], target: float, min_inliers: int,
               max_verify_share: float) -> tuple[Calibration, dict]:
    """Global thresholds at ``target`` precision, plus the measured precision/recall per family.

    Three numbers: ``knockoff`` (flag on similarity alone), ``copy`` (call a flag a copy), and
    ``verify_floor``: from there on, a candidate whose local features agree geometrically with
    its reference (>= ``min_inliers``) is flagged as a copy. The floor is the lowest score that
    keeps the precision of all flags at ``target``, but no lower than the score above which
    ``max_verify_share`` of distractors lie, because every verification costs a decode and a
    keypoint match.
    """
    def right(j: Judged) -> bool:
        return bool(j.brand) and j.best_brand == j.brand

    t_flag, p_flag, _ = threshold_at_precision([(j.score, right(j)) for j in judged], target)
    flagged = [j for j in judged if j.score >= t_flag]
    copy_scored = [(j.score, FAMILY_VERDICT.get(j.family) == "copy" and right(j)) for j in flagged]
    t_copy, p_copy, _ = threshold_at_precision(copy_scored, target) if copy_scored else (1.0, 1.0, 0)

    distractor_scores = sorted((j.score for j in judged if not j.brand), reverse=True)
    cost_floor = distractor_scores[int(len(distractor_scores) * max_verify_share)] if distractor_scores else -1.0
    # Walk the verified candidates below t_flag from the top down; keep lowering the floor while
    # the union of flags (score >= t_flag, or verified and score >= floor) stays precise enough.
    tp = sum(right(j) for j in flagged)
    n = len(flagged)
    floor = None
    extra = sorted((j for j in judged if j.score < t_flag and j.inliers >= min_inliers), key=lambda j: -j.score)
    for j in extra:
        if j.score < cost_floor:
            break
        tp, n = tp + right(j), n + 1
        if tp / n >= target:
            floor = j.score
    # A target no cut reaches yields a threshold just above the top score; clamp so the file
    # stays valid (similarities never exceed 1, so 1.0 means "never on similarity alone").
    t_flag, t_copy = min(t_flag, 1.0), min(t_copy, 1.0)
    cal = Calibration(copy=round(max(t_copy, t_flag), 6), knockoff=round(t_flag, 6), min_inliers=min_inliers,
                      verify_floor=round(floor, 6) if floor is not None else None,
                      method=f"global, precision {target:.2f} on {len(judged)} held-out queries")

    def is_flag(j: Judged) -> bool:
        return j.score >= cal.knockoff or (cal.verify_floor is not None and j.score >= cal.verify_floor
                                           and j.inliers >= min_inliers)

    flags = [j for j in judged if is_flag(j)]
    report = {"target_precision": target, "flag_threshold": cal.knockoff, "flag_precision": round(p_flag, 4),
              "copy_threshold": cal.copy, "copy_precision": round(p_copy, 4), "verify_floor": cal.verify_floor,
              "precision_all_flags": round(sum(right(j) for j in flags) / len(flags), 4) if flags else None,
              "verified_share_of_distractors": round(
                  sum(1 for j in judged if not j.brand and cal.verify_floor is not None
                      and j.score >= cal.verify_floor) / max(1, len(distractor_scores)), 4),
              "n_queries": len(judged), "per_family": {}}
    for fam in sorted({j.family for j in judged}):
        js = [j for j in judged if j.family == fam]
        found = [j for j in js if is_flag(j)]
        good = [j for j in found if right(j)]
        report["per_family"][fam] = {"n": len(js), "flagged": len(found), "flagged_right_brand": len(good),
                                     "recall": round(len(good) / len(js), 4) if fam in MARK_FAMILIES else None}
    return cal, report


def verdict_report(judged: list[Judged]) -> dict:
    """Verdicts vs what each query was built to be: confusion matrix, precision and recall.

    A flag (copy or knockoff) counts as right only with the right brand. ``logo_in_photo``
    (the mark on a product, no reference image reused) is expected as ``knockoff``.
    """
    found_kinds = ("copy", "knockoff", "clear", "inconclusive")
    confusion = {e: {f: 0 for f in found_kinds} for e in ("copy", "knockoff", "clear")}
    per_family: dict[str, dict] = {}
    for j in judged:
        expected = FAMILY_VERDICT.get(j.family, "clear" if not j.brand else "copy")
        confusion[expected][j.verdict if j.verdict in found_kinds else "inconclusive"] += 1
        f = per_family.setdefault(j.family, {"n": 0, "flagged": 0, "flagged_right_brand": 0, "exact_verdict": 0})
        f["n"] += 1
        flagged = j.verdict in ("copy", "knockoff")
        f["flagged"] += flagged
        f["flagged_right_brand"] += flagged and bool(j.brand) and j.best_brand == j.brand
        f["exact_verdict"] += j.verdict == expected and (expected == "clear" or j.best_brand == j.brand)
    flags = [j for j in judged if j.verdict in ("copy", "knockoff")]
    right = [j for j in flags if j.brand and j.best_brand == j.brand]
    for fam, f in per_family.items():
        f["recall"] = round(f["flagged_right_brand"] / f["n"], 4) if FAMILY_VERDICT.get(fam) != "clear" else None
        f["false_flag_rate"] = round(f["flagged"] / f["n"], 4) if FAMILY_VERDICT.get(fam) == "clear" else None
    copies = [j for j in flags if j.verdict == "copy"]
    return {"n_queries": len(judged), "confusion": confusion,
            "flag_precision": round(len(right) / len(flags), 4) if flags else None,
            "copy_precision": round(sum(FAMILY_VERDICT.get(j.family) == "copy" and j.best_brand == j.brand
                                        for j in copies) / len(copies), 4) if copies else None,
            "per_family": per_family}


def run_verdict_report(bundle_dir: Path, split_dir: Path, threads: int = 1, region_mode: str = "full") -> dict:
    """Production verdicts of ``bundle_dir`` (its own calibration) on a labelled split."""
    t0 = time.perf_counter()
    pipe = Pipeline.from_bundle(Bundle.load(bundle_dir).path, threads=threads, region_mode=region_mode)
    report = verdict_report(judge_split(pipe, split_dir, threads=threads, calibration=pipe.calibration))
    report.update(split=str(split_dir), calibration=pipe.calibration.method, seconds=round(time.perf_counter() - t0, 1))
    return report


def run_calibration(bundle_dir: Path, split_dir: Path, target: float = 0.95, threads: int = 1,
                    region_mode: str = "full") -> dict:
    """Calibrate ``bundle_dir``'s model on ``split_dir`` and write ``calibration.json`` into the bundle."""
    t0 = time.perf_counter()
    pipe = Pipeline.from_bundle(Bundle.load(bundle_dir).path, threads=threads, region_mode=region_mode)
    judged = judge_split(pipe, split_dir, threads=threads)
    cal, report = calibrate(judged, target)
    (Path(bundle_dir) / CALIBRATION_FILE).write_text(cal.to_json())
    report.update(seconds=round(time.perf_counter() - t0, 1), split=str(split_dir), region_mode=region_mode,
                  calibration=asdict(cal))
    (Path(bundle_dir) / "calibration_report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


# ---------------------------------------------------------------------- deep (global + local) stage
@dataclass(frozen=True)
class DeepJudged:
    """One query's candidates under thorough depth: (reference_id, brand, evidence, match, agreement)."""

    query_id: str
    family: str
    truth: frozenset[str]  # ground-truth reference ids
    brand: str  # ground-truth brand ("" for distractors)
    candidates: tuple


def judge_split_deep(pipe: Pipeline, split_dir: Path, threads: int = 1, progress: bool = False) -> list[DeepJudged]:
    """Every query of a split through the global and the local stage (thorough), candidates kept.

    The same steps as ``Pipeline.judge`` in thorough depth (prepare with keypoints, embed, search,
    one batched descriptor search, RANSAC, the shape stage), stopping before the decision, which is what the
    fusion and its thresholds are fitted to.
    """
    import numpy as np
    from tqdm import tqdm

    from brandguard.errors import ImageDecodeError
    from brandguard.engine.routing import DepthOptions

    info = read_query_families(split_dir / "queries.csv")
    gt = read_ground_truth(split_dir / "ground_truth.csv")
    out: list[DeepJudged] = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Pipeline.from_bundle(new_bundle_from(pipe.bundle, Path(tmp)), threads=threads,
                                       region_mode=pipe.region_mode, depth=DepthOptions("thorough", text=False))
        build_index(scratch, read_references(split_dir / "references"), threads=threads)
        queries = list_images(split_dir / "queries")
        bar = tqdm(total=len(queries), desc="deep calibration", unit="img", disable=not progress)
        for start in range(0, len(queries), 64):
            chunk = []
            for qid, p in queries[start:start + 64]:
                try:
                    chunk.append((qid, scratch.prepare(str(p), local=True)))
                except ImageDecodeError:
                    continue
            bar.update(len(queries[start:start + 64]))
            if not chunk:
                continue
            vecs = scratch.embed_crops(np.concatenate([it.crops for _, it in chunk]))
            merged = scratch.search_merged([it for _, it in chunk], vecs)
            feats = {i: it.local for i, (_, it) in enumerate(chunk)}
            local = scratch.match_local(feats)
            shaped = scratch.match_shapes(feats)
            for i, ((qid, _), (hits, _ev)) in enumerate(zip(chunk, merged)):
                refs = gt.get(qid, set())
                cands = tuple((c.hit.reference_id, c.hit.brand, c.evidence, c.match, c.agreement)
                              for c in scratch.deep_candidates(hits, local[i], chunk[i][1].local, shaped.get(i)))
                out.append(DeepJudged(qid, info.get(qid, ""), frozenset(refs),
                                      next(iter(refs)).split("/")[0] if refs else "", cands))
        bar.close()
        scratch.index.close()
    return out


def calibrate_deep(judged: list[DeepJudged], target: float = 0.95, max_deep_share: float = 0.3,
                   method_note: str = "") -> tuple[DeepCalibration, dict]:
    """Fit the fusion on candidate pairs, then the flag, copy and auto-gate thresholds.

    - fusion: two unweighted logistic regressions (candidates with a geometric match, and those
      with the global score alone), positive = the query's ground-truth reference;
    - ``source_ncc`` / ``source_beyond`` / ``sibling_factor``: the reference-choice rule
      (:func:`brandguard.engine.fusion.prefer_sources`), fitted after the fusion;
    - ``flag``: lowest probability at which each query's best candidate has the right brand
      with ``target`` precision (a flag on a distractor or another brand is a false positive);
    - ``copy_inliers`` / ``copy_area``: the pair that calls the most flags ``copy`` whose family
      expects a copy (``FAMILY_VERDICT``), while ``target`` of its copy calls do (a mark pasted
      into a photo is not a copy);
    - ``auto_gate``: the best global score above which ``max_deep_share`` of the distractors lie:
      auto depth sends those (and brand hints, titles, keypoint-glance fits, audits) through the
      local stage; ``auto_keeps_right_flags`` in the report is the gate's share alone.
    """
    import numpy as np

    from brandguard.engine.fusion import FEATURES, fit_logistic, prefer_sources

    # Unweighted logistic models, one per kind of evidence: candidates with a geometric match,
    # those the shape stage placed without one, and those with the global score alone.
    # Unweighted, their probabilities are calibrated posteriors that compare across listings;
    # class weighting (each class half the weight) put the regimes on different scales and cost
    # strong copies 0.17 uAP on the test split.
    sets: dict[str, tuple[list, list]] = {"matched": ([], []), "shape": ([], []), "global": ([], [])}
    for j in judged:
        for rid, _brand, e, *_rest in j.candidates:
            xs, ys = sets["matched" if e.inliers > 0 else "shape" if e.shape else "global"]
            xs.append(e.vector())
            ys.append(1.0 if rid in j.truth else 0.0)
    y_all = [y for _, ys in sets.values() for y in ys]
    if not y_all or not 0 < sum(y_all) < len(y_all):
        raise InputError("deep calibration needs candidates with both true and false matches")

    def model(xs: list, ys: list) -> dict | None:
        if not xs or not 0 < sum(ys) < len(ys):
            return None
        w, b, mean, scale = fit_logistic(np.array(xs), np.array(ys), class_weight=False)
        return {"weights": [float(v) for v in w], "bias": float(b), "mean": [float(v) for v in mean],
                "scale": [float(v) for v in scale]}

    models = {k: model(*v) for k, v in sets.items()}
    if models["matched"] is not None and models["global"] is not None:
        main_model, global_only, shape_only = models["matched"], models["global"], models["shape"]
    else:  # a regime lacks positives or negatives: one model for all
        main_model = model([x for xs, _ in sets.values() for x in xs], y_all)
        global_only = shape_only = None
    w, b, mean, scale = (main_model[k] for k in ("weights", "bias", "mean", "scale"))
    fused = DeepCalibration(tuple(map(float, w)), float(b), tuple(map(float, mean)), tuple(map(float, scale)),
                            global_only=global_only, shape_only=shape_only)
    raw = [fused.probability([c[2] for c in j.candidates]) if j.candidates else None for j in judged]

    def with_sources(ncc: float, beyond: float, sibling: float = 1.0) -> list:
        return [None if p is None else prefer_sources([c[1] for c in j.candidates], p,
                                                      [c[4] for c in j.candidates],
                                                      ncc, beyond, sibling)[0] for j, p in zip(judged, raw)]

    # The source rule's two thresholds: the pair that puts the true reference first most often.
    src = None
    for ncc in (0.5, 0.6, 0.7):
        for beyond in (0.04, 0.06, 0.08, 0.12):
            ps = with_sources(ncc, beyond)
            right = sum(1 for j, p in zip(judged, ps) if p is not None and j.truth
                        and j.candidates[int(np.argmax(p))][0] in j.truth)
            if src is None or right > src[0]:
                src = (right, ncc, beyond, ps)
    _, src_ncc, src_beyond, probs_all = src
    # How far a brand's other references fall behind its first: the factor with the best pooled
    # average precision (the ranking µAP scores), since the first place is already settled.
    sib = max((pooled_average_precision(judged, ps), -f, f, ps)
              for f in (1.0, 0.7, 0.5, 0.3) for ps in [with_sources(src_ncc, src_beyond, f)])
    sibling_factor, probs_all = sib[2], sib[3]
    best = []  # per query: (p, right brand, family, evidence, match, global best)
    for j, probs in zip(judged, probs_all):
        if not j.candidates:
            best.append((0.0, False, j.family, None, None, -1.0))
            continue
        k = int(np.argmax(probs))
        g = max((c[2].global_score for c in j.candidates if not c[2].global_absent), default=-1.0)
        best.append((float(probs[k]), bool(j.brand) and j.candidates[k][1] == j.brand, j.family,
                     j.candidates[k][2], j.candidates[k][3], g))
    t_flag, p_flag, _ = threshold_at_precision([(p, ok) for p, ok, *_ in best], target)
    t_flag = min(t_flag, 1.0)
    # Flags resting on an outline fit alone meet the target on their own (>= 20 of them on val):
    # chance meets an outline more often than inliers, and a flag's evidence should not borrow
    # precision from the geometric ones.
    # (``DeepCalibration.flag_for`` applies the same rule at decision time.)
    def outline_alone(e) -> bool:  # noqa: ANN001 - PairEvidence or None
        return e is not None and e.inliers == 0 and e.shape and shape_only is not None

    shape_t, shape_prec, shape_n = None, None, 0
    shaped = [(p, ok) for p, ok, _f, e, *_ in best if p >= t_flag and outline_alone(e)]
    if len(shaped) >= 20:
        t, shape_prec, _ = threshold_at_precision(shaped, target)
        shape_t, shape_n = round(min(max(t, t_flag), 1.0), 6), len(shaped)

    def need(e) -> float:  # noqa: ANN001
        return shape_t if shape_t is not None and outline_alone(e) else t_flag

    flagged = [bq for bq in best if bq[0] >= need(bq[3])]
    choice = (10**9, 1.0, 0, 1.0)  # (inliers, area, copies called right, precision)
    for inl in (8, 10, 15, 20, 30, 45):
        for area in (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5):
            calls = [bq for bq in flagged if bq[4] is not None and not bq[4].mirrored
                     and bq[4].inliers >= inl and bq[4].area_share >= area]
            good = sum(1 for bq in calls if bq[1] and FAMILY_VERDICT.get(bq[2]) == "copy")
            prec = good / len(calls) if calls else 1.0
            if prec >= target and good > choice[2]:
                choice = (inl, area, good, prec)
    # Geometry alone: the lowest inlier count whose best match names the right brand with at least
    # 0.99 precision (stricter than the target: it bypasses the fusion) over >= 20 queries.
    geo_t, geo_prec = 10**6, None
    strongest = []
    for j in judged:
        ms = [(c[3].inliers, c[1]) for c in j.candidates if c[3] is not None]
        if ms:
            inl, brand = max(ms)
            strongest.append((inl, bool(j.brand) and brand == j.brand))
    for t in (8, 10, 12, 15, 20, 30, 45):
        sel = [ok for inl, ok in strongest if inl >= t]
        if len(sel) >= 20 and sum(sel) / len(sel) >= max(target, 0.99):
            geo_t, geo_prec = t, sum(sel) / len(sel)
            break
    distractor_g = sorted((bq[5] for bq in best if bq[2].startswith("distractor")), reverse=True)
    gate = distractor_g[int(len(distractor_g) * max_deep_share)] if distractor_g else -1.0
    cal = DeepCalibration(fused.weights, fused.bias, fused.mean, fused.scale, flag=round(t_flag, 6),
                          copy_inliers=int(min(choice[0], 10**6)), copy_area=float(choice[1]),
                          auto_gate=round(float(gate), 6), geometry_inliers=geo_t, source_ncc=src_ncc,
                          source_beyond=src_beyond, sibling_factor=sibling_factor, global_only=global_only,
                          shape_only=shape_only, shape_flag=shape_t,
                          method=f"fusion fitted on {len(judged)} held-out queries, precision {target:.2f}"
                          + (f"; {method_note}" if method_note else ""))
    per_family: dict[str, dict] = {}
    for p, ok, fam, e, *_rest in best:
        f = per_family.setdefault(fam, {"n": 0, "flagged": 0, "flagged_right_brand": 0})
        f["n"] += 1
        hit = p >= need(e)
        f["flagged"] += hit
        f["flagged_right_brand"] += hit and ok
    for fam, f in per_family.items():
        f["recall" if fam in MARK_FAMILIES else "false_flag_rate"] = round(
            (f["flagged_right_brand"] if fam in MARK_FAMILIES else f["flagged"]) / f["n"], 4)
    gated = [bq for bq in flagged if bq[1]]
    report = {"features": list(FEATURES), "weights": [round(v, 4) for v in w], "bias": round(b, 4),
              "n_pairs": len(y_all), "n_positive_pairs": int(sum(y_all)), "flag_threshold": cal.flag,
              "flag_precision": round(p_flag, 4), "shape_flag_threshold": shape_t,
              "shape_flag_precision": round(shape_prec, 4) if shape_prec is not None else None,
              "shape_flags_at_flag": shape_n, "copy_inliers": cal.copy_inliers, "copy_area": cal.copy_area,
              "copy_calls_right": choice[2], "copy_precision": round(choice[3], 4), "auto_gate": cal.auto_gate,
              "geometry_inliers": geo_t, "source_ncc": src_ncc, "source_beyond": src_beyond,
              "sibling_factor": sibling_factor,
              "geometry_precision": round(geo_prec, 4) if geo_prec else None,
              "auto_keeps_right_flags": round(sum(1 for bq in gated if bq[5] >= gate) / len(gated), 4) if gated else None,
              "per_family": per_family}
    return replace(cal, report=report), report


def pooled_average_precision(judged: list[DeepJudged], probs: list) -> float:
    """Average precision of every candidate of every query pooled and sorted by probability,
    over all ground-truth pairs (found or not): µAP without the top-k cut."""
    import numpy as np

    scored = [(float(p), c[0] in j.truth) for j, ps in zip(judged, probs) if ps is not None
              for c, p in zip(j.candidates, ps)]
    n_true = sum(len(j.truth) for j in judged)
    if not scored or not n_true:
        return 0.0
    scored.sort(key=lambda t: -t[0])
    hits = np.cumsum([ok for _, ok in scored])
    right = np.array([ok for _, ok in scored], bool)
    return float((hits[right] / (np.flatnonzero(right) + 1)).sum() / n_true)


def run_deep_calibration(bundle_dir: Path, split_dir: Path, target: float = 0.95, threads: int = 1,
                         progress: bool = False) -> dict:
    """Fit the fusion and the deep thresholds on ``split_dir``; stored in the bundle's calibration.json
    beside the global thresholds (which are kept), the report in calibration_report.json."""
    t0 = time.perf_counter()
    pipe = Pipeline.from_bundle(Bundle.load(bundle_dir).path, threads=threads, depth=DepthOptions("fast"))
    if pipe.extractor is None:
        raise InputError(f"{bundle_dir}: the model card has no local_features; nothing to calibrate for depth")
    judged = judge_split_deep(pipe, split_dir, threads=threads, progress=progress)
    deep, report = calibrate_deep(judged, target)
    cal = replace(Calibration.load(bundle_dir), deep=deep)
    (Path(bundle_dir) / CALIBRATION_FILE).write_text(cal.to_json())
    report.update(seconds=round(time.perf_counter() - t0, 1), split=str(split_dir))
    path = Path(bundle_dir) / "calibration_report.json"
    full = json.loads(path.read_text()) if path.is_file() else {}
    full["deep"] = report
    path.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return report
