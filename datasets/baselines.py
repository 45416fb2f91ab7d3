"""Non-learned baselines on a DISC21-style split: perceptual hash and tiny-image cosine.

Why: a trained embedding is only worth shipping if it beats what needs no training. These two
set the floor per family: pHash catches near-duplicate copies, the 16x16 tiny image catches
global layout; neither should find a small mark in a photo or a knockoff.

Predictions follow the benchmark format (``query_id,reference_id,score``, top-k per query,
higher = more similar): pHash scores are negative Hamming distances, tiny-image scores cosines.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from brandguard.errors import InputError

BASELINES = ("phash", "tiny")


@dataclass(frozen=True)
class BaselineResult:
    name: str
    predictions_path: Path
    metrics_path: Path | None  # None when brandguard.evaluation or ground truth is unavailable
    metrics: dict | None
    seconds: float


def _images(folder: Path) -> list[tuple[str, Path]]:
    from brandguard.evaluation import list_images

    return list_images(folder)


def _read_gray(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise InputError(f"could not decode {path}")
    return img


def phash_features(paths: Sequence[Path], hash_size: int = 8) -> np.ndarray:
    """N x hash_size**2 boolean pHash bits (the ``imagehash`` implementation)."""
    import imagehash
    from PIL import Image

    out = np.zeros((len(paths), hash_size * hash_size), bool)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            out[i] = imagehash.phash(im.convert("RGB"), hash_size=hash_size).hash.reshape(-1)
    return out


def tiny_features(paths: Sequence[Path], side: int = 16) -> np.ndarray:
    """N x side**2 zero-mean, unit-norm grayscale thumbnails (a classic global baseline)."""
    out = np.zeros((len(paths), side * side), np.float32)
    for i, p in enumerate(paths):
        v = cv2.resize(_read_gray(p), (side, side), interpolation=cv2.INTER_AREA).astype(np.float32).reshape(-1)
        v -= v.mean()
        out[i] = v / max(1e-6, float(np.linalg.norm(v)))
    return out


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, scores.shape[1])
    idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)


def similarity(method: str, queries: Sequence[Path], references: Sequence[Path]) -> np.ndarray:
    """Q x R similarity matrix (higher = more similar) for ``method`` in BASELINES."""
    if method == "phash":
        q, r = phash_features(queries), phash_features(references)
        # Hamming distance via bit agreement: d = n_bits - (q.r + (1-q).(1-r))
        qi, ri = q.astype(np.int32), r.astype(np.int32)
        agree = qi @ ri.T + (1 - qi) @ (1 - ri).T
        return (agree - q.shape[1]).astype(np.float32)  # = -Hamming distance
    if method == "tiny":
        return tiny_features(queries) @ tiny_features(references).T
    raise InputError(f"unknown baseline {method!r}; choose from {BASELINES}")


def predict(method: str, split_dir: Path, k: int = 10) -> list:
    """Top-k predictions for every query of ``split_dir`` (``references/`` and ``queries/``)."""
    from brandguard.evaluation import Prediction

    split_dir = Path(split_dir)
    refs, queries = _images(split_dir / "references"), _images(split_dir / "queries")
    if not refs or not queries:
        raise InputError(f"{split_dir} needs images under references/ and queries/")
    if k < 1:
        raise InputError("k must be >= 1")
    sims = similarity(method, [p for _, p in queries], [p for _, p in refs])
    top = _top_k(sims, k)
    preds = []
    for qi, (qid, _) in enumerate(queries):
        for ri in top[qi]:
            preds.append(Prediction(qid, refs[int(ri)][0], float(sims[qi, int(ri)])))
    return preds


def run_baseline(method: str, split_dir: Path, out_dir: Path, k: int = 10) -> BaselineResult:
    """Write ``out_dir/<method>/predictions.csv`` and, with ground truth, ``metrics.json``."""
    from brandguard.evaluation import evaluate, read_ground_truth, read_query_families, write_predictions

    t0 = time.perf_counter()
    split_dir, out = Path(split_dir), Path(out_dir) / method
    out.mkdir(parents=True, exist_ok=True)
    preds = predict(method, split_dir, k)
    pred_path = out / "predictions.csv"
    write_predictions(pred_path, preds)
    metrics = metrics_path = None
    gt_path = split_dir / "ground_truth.csv"
    if gt_path.is_file():
        qids = [q for q, _ in _images(split_dir / "queries")]
        fam_path = split_dir / "queries.csv"
        families = read_query_families(fam_path) if fam_path.is_file() else None
        metrics = evaluate(preds, read_ground_truth(gt_path), qids, families)
        metrics["baseline"] = method
        metrics["k"] = k
        metrics_path = out / "metrics.json"
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return BaselineResult(method, pred_path, metrics_path, metrics, time.perf_counter() - t0)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m brandguard.datasets.baselines",
        description="Run non-learned baselines (pHash, 16x16 tiny image) on a DISC21-style split folder "
        "(references/, queries/, optional ground_truth.csv and queries.csv) and write predictions and metrics.",
    )
    p.add_argument("--split", type=Path, required=True, help="e.g. data_cache/corpus_std/test")
    p.add_argument("--out", type=Path, required=True, help="writes OUT/<method>/predictions.csv and metrics.json")
    p.add_argument("--methods", nargs="+", choices=BASELINES, default=list(BASELINES))
    p.add_argument("--k", type=int, default=10, help="predictions kept per query")
    a = p.parse_args(argv)
    cv2.setNumThreads(1)
    run: Callable[[str], BaselineResult] = lambda m: run_baseline(m, a.split, a.out, a.k)  # noqa: E731
    try:
        for m in a.methods:
            r = run(m)
            summary = {k: r.metrics[k] for k in ("micro_ap", "recall_at_p90", "recall_at_1")} if r.metrics else "no ground truth"
            print(f"{m}: {r.predictions_path} ({r.seconds:.1f}s) {summary}")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
