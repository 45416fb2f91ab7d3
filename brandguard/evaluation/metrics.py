"""DISC21-style evaluation: read predictions and ground truth, compute µAP and recalls.

µAP follows the Image Similarity Challenge 2021 definition: every (query, reference, score)
prediction of every query is pooled and sorted by decreasing score; precision and recall are
taken after each prediction, recall counted against *all* ground-truth pairs, and
µAP = Σ_i (recall_i − recall_{i−1}) · precision_i. Distractor queries (no ground-truth row)
matter through their false positives, exactly as in the challenge.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from brandguard.errors import InputError

PREDICTION_HEADER = ("query_id", "reference_id", "score")


@dataclass(frozen=True)
class Prediction:
    query_id: str
    reference_id: str
    score: float


def write_predictions(path: str | os.PathLike[str], predictions: Iterable[Prediction]) -> int:
    """Write ``query_id,reference_id,score`` rows; returns the number of rows written."""
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(PREDICTION_HEADER)
        for p in predictions:
            w.writerow((p.query_id, p.reference_id, f"{p.score:.6f}"))
            n += 1
    return n


def read_predictions(path: str | os.PathLike[str]) -> list[Prediction]:
    """Read a predictions CSV, refusing a wrong header or a non-numeric score."""
    out: list[Prediction] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header[:3]) != PREDICTION_HEADER:
            raise InputError(f"{path}: header must be {','.join(PREDICTION_HEADER)}, got {header}")
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 3:
                raise InputError(f"{path}:{line_no}: expected 3 columns, got {row}")
            try:
                score = float(row[2])
            except ValueError as exc:
                raise InputError(f"{path}:{line_no}: score {row[2]!r} is not a number") from exc
            if math.isnan(score):
                raise InputError(f"{path}:{line_no}: score is NaN")
            out.append(Prediction(row[0], row[1], score))
    return out


def read_ground_truth(path: str | os.PathLike[str]) -> dict[str, set[str]]:
    """``query_id,reference_id`` rows -> {query_id: {reference_ids}}; extra columns ignored."""
    gt: dict[str, set[str]] = defaultdict(set)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"query_id", "reference_id"} <= set(reader.fieldnames):
            raise InputError(f"{path}: header must contain query_id,reference_id")
        for row in reader:
            q, r = (row["query_id"] or "").strip(), (row["reference_id"] or "").strip()
            if q and r:
                gt[q].add(r)
    return dict(gt)


def read_query_families(path: str | os.PathLike[str]) -> dict[str, str]:
    """``query_id,family,...`` (the corpus's queries.csv) -> {query_id: family}."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"query_id", "family"} <= set(reader.fieldnames):
            raise InputError(f"{path}: header must contain query_id,family")
        return {row["query_id"]: row["family"] for row in reader}


def ranked_hits(predictions: Sequence[Prediction], gt: Mapping[str, set[str]]) -> list[bool]:
    """Whether each unique (query, reference) pair is a true match, best score first.

    Duplicate pairs count once (the highest score), as in ISC 2021; ties are broken by ids so
    the order does not depend on input order. µAP and every PR curve are built on this.
    """
    best: dict[tuple[str, str], float] = {}
    for p in predictions:
        key = (p.query_id, p.reference_id)
        if key not in best or p.score > best[key]:
            best[key] = p.score
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
    return [r in gt.get(q, ()) for (q, r), _ in ranked]


def pr_curve(predictions: Sequence[Prediction], gt: Mapping[str, set[str]],
             max_points: int | None = None) -> tuple[list[float], list[float]]:
    """Pooled (recall, precision) after each ranked prediction, optionally downsampled."""
    n_gt = sum(len(v) for v in gt.values())
    hits = ranked_hits(predictions, gt)
    recall, precision, tp = [], [], 0
    for i, hit in enumerate(hits, start=1):
        tp += hit
        recall.append(tp / n_gt if n_gt else 0.0)
        precision.append(tp / i)
    if max_points is not None and len(hits) > max_points:
        step = (len(hits) - 1) / (max_points - 1)
        keep = sorted({round(i * step) for i in range(max_points)})
        recall, precision = [recall[i] for i in keep], [precision[i] for i in keep]
    return recall, precision


def micro_ap(predictions: Sequence[Prediction], gt: Mapping[str, set[str]]) -> tuple[float, float]:
    """(µAP, recall at 90% precision) of pooled predictions against ``gt``."""
    n_gt = sum(len(v) for v in gt.values())
    if n_gt == 0:
        return 0.0, 0.0
    ap, prev_recall, recall_at_p90 = 0.0, 0.0, 0.0
    for recall, precision in zip(*pr_curve(predictions, gt)):
        ap += (recall - prev_recall) * precision
        prev_recall = recall
        if precision >= 0.9:
            recall_at_p90 = max(recall_at_p90, recall)
    return ap, recall_at_p90


def recall_at_1(predictions: Sequence[Prediction], gt: Mapping[str, set[str]]) -> float:
    """Share of ground-truth queries whose top-scored prediction is a true match."""
    if not gt:
        return 0.0
    top: dict[str, Prediction] = {}
    for p in sorted(predictions, key=lambda p: (-p.score, p.reference_id)):
        top.setdefault(p.query_id, p)
    hits = sum(1 for q, refs in gt.items() if q in top and top[q].reference_id in refs)
    return hits / len(gt)


def evaluate(
    predictions: Sequence[Prediction],
    ground_truth: Mapping[str, set[str]],
    query_ids: Iterable[str] | None = None,
    families: Mapping[str, str] | None = None,
) -> dict:
    """Overall metrics, and per family when ``families`` maps query ids to a family.

    A family's µAP uses that family's queries plus every distractor query (no ground truth),
    so a family cannot look good by ignoring false positives on unrelated images.
    """
    qset = set(query_ids) if query_ids is not None else None
    if qset is not None:
        unknown = {p.query_id for p in predictions} - qset
        if unknown:
            raise InputError(f"{len(unknown)} predicted query ids are not queries, e.g. {sorted(unknown)[:3]}")
    ap, r90 = micro_ap(predictions, ground_truth)
    result: dict = {
        "n_queries": len(qset) if qset is not None else len({p.query_id for p in predictions} | set(ground_truth)),
        "n_ground_truth_pairs": sum(len(v) for v in ground_truth.values()),
        "n_predictions": len(predictions),
        "micro_ap": round(ap, 6),
        "recall_at_p90": round(r90, 6),
        "recall_at_1": round(recall_at_1(predictions, ground_truth), 6),
    }
    if families:
        by_family: dict[str, dict] = {}
        distractors = {q for q in families if q not in ground_truth}
        for fam in sorted(set(families.values())):
            fam_queries = {q for q, f in families.items() if f == fam}
            if fam_queries <= distractors:
                # A pure distractor family: report how many of its queries draw a prediction
                # at all and the mean top score, since µAP is undefined without positives.
                preds = [p for p in predictions if p.query_id in fam_queries]
                tops: dict[str, float] = {}
                for p in preds:
                    tops[p.query_id] = max(tops.get(p.query_id, -math.inf), p.score)
                by_family[fam] = {
                    "n_queries": len(fam_queries),
                    "mean_top_score": round(sum(tops.values()) / len(tops), 6) if tops else None,
                }
                continue
            keep = fam_queries | distractors
            preds = [p for p in predictions if p.query_id in keep]
            fam_gt = {q: r for q, r in ground_truth.items() if q in fam_queries}
            fap, fr90 = micro_ap(preds, fam_gt)
            by_family[fam] = {
                "n_queries": len(fam_queries),
                "micro_ap": round(fap, 6),
                "recall_at_p90": round(fr90, 6),
                "recall_at_1": round(recall_at_1(preds, fam_gt), 6),
            }
        result["per_family"] = by_family
    return result
