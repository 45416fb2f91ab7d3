"""Non-learned baselines on a DISC21-style split: perceptual hashes, tiny image, ORB + RANSAC.

Why: a trained embedding is only worth shipping if it beats what needs no training. These set
the floor per family, with the tools a user would otherwise pick:

- ``phash`` ``dhash`` ``whash`` (the ``imagehash`` package, 64-bit), ``pdq`` (``pdqhash``,
  256-bit, compared by Hamming distance as ThreatExchange does) and ``imagededup_{p,d,w,a}hash``
  (imagededup's own 64-bit encoders): near-duplicate finders, all ranked by Hamming distance;
- ``tiny``: 16x16 zero-mean grayscale thumbnail, cosine (a classic global-layout baseline);
- ``orb``: ORB keypoints, brute-force Hamming matching with Lowe's ratio test, RANSAC
  homography; the score is the inlier count. Local features can find a mark inside a photo,
  which no global hash can, but matching every query against every reference is quadratic:
  by default each query is matched against a *shortlist* of its ``orb_shortlist`` most
  similar references by the ``tiny`` score (0 = every reference, exhaustive).

Every image is decoded by brandguard's safe decoder (the same pixels for every method); an
image that cannot be decoded simply has no predictions. Predictions follow the benchmark format
(``query_id,reference_id,score``, top-k per query, higher = more similar): hash scores are
negative Hamming distances, ``tiny`` scores cosines, ``orb`` scores RANSAC inliers plus
1e-3 x the shortlist cosine (a tie-breaker among equal inlier counts).

Optional packages (``pip install -e '.[bench]'``): imagehash, pdqhash, imagededup; each method
imports its package only when it runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from brandguard.errors import ImageDecodeError, InputError

HASH_METHODS = ("phash", "dhash", "whash", "pdq",
                "imagededup_phash", "imagededup_dhash", "imagededup_whash", "imagededup_ahash")
BASELINES = HASH_METHODS + ("tiny", "orb")
ORB_SIDE = 512  # longest side ORB sees; queries of the standard corpus are 512 px already


@dataclass(frozen=True)
class BaselineResult:
    name: str
    predictions_path: Path
    metrics_path: Path | None  # None when there is no ground truth
    metrics: dict | None
    seconds: float
    notes: dict = field(default_factory=dict)  # method-specific facts (shortlist size and recall, failures)


@dataclass(frozen=True)
class OrbOptions:
    """ORB settings. ``shortlist=0`` matches every query against every reference."""

    shortlist: int = 20
    nfeatures: int = 1000
    ratio: float = 0.8
    ransac_px: float = 5.0


def _images(folder: Path) -> list[tuple[str, Path]]:
    from brandguard.inputs import list_images

    return list_images(folder)


def _load_rgb(path: Path) -> np.ndarray | None:
    """RGB pixels through brandguard's safe decoder; None when undecodable (no predictions)."""
    from brandguard.vision.decode import decode_image

    try:
        return decode_image(path).rgb
    except ImageDecodeError:
        return None


# ------------------------------------------------------------------ per-image features
def _hex_bits(hex_hash: str) -> np.ndarray:
    n = len(hex_hash) * 4
    return np.array([(int(hex_hash, 16) >> (n - 1 - i)) & 1 for i in range(n)], bool)


def _hash_bits(method: str, rgb: np.ndarray) -> np.ndarray:
    if method in ("phash", "dhash", "whash"):
        import imagehash
        from PIL import Image

        fn = {"phash": imagehash.phash, "dhash": imagehash.dhash, "whash": imagehash.whash}[method]
        return fn(Image.fromarray(rgb), hash_size=8).hash.reshape(-1).astype(bool)
    if method == "pdq":
        import pdqhash

        bits, _quality = pdqhash.compute(np.ascontiguousarray(rgb))
        return np.asarray(bits, bool).reshape(-1)
    if method.startswith("imagededup_"):
        enc = _imagededup_encoder(method)
        return _hex_bits(enc.encode_image(image_array=rgb))
    raise InputError(f"{method!r} is not a hash method; choose from {HASH_METHODS}")


_ENCODERS: dict[str, object] = {}


def _imagededup_encoder(method: str):  # noqa: ANN202 - imagededup's classes are untyped
    if method not in _ENCODERS:
        from imagededup.methods import AHash, DHash, PHash, WHash

        cls = {"imagededup_phash": PHash, "imagededup_dhash": DHash,
               "imagededup_whash": WHash, "imagededup_ahash": AHash}[method]
        _ENCODERS[method] = cls(verbose=False)
    return _ENCODERS[method]


def _tiny_vec(rgb: np.ndarray, side: int = 16) -> np.ndarray:
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    v = cv2.resize(g, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32).reshape(-1)
    v -= v.mean()
    return v / max(1e-6, float(np.linalg.norm(v)))


@dataclass(frozen=True)
class OrbFeatures:
    points: np.ndarray  # K x 2 float32, in the (resized) image's pixels
    descriptors: np.ndarray  # K x 32 uint8 (empty when no keypoint)


def _orb_features(rgb: np.ndarray, nfeatures: int) -> OrbFeatures:
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    s = ORB_SIDE / max(g.shape)
    if s < 1:
        g = cv2.resize(g, (round(g.shape[1] * s), round(g.shape[0] * s)), interpolation=cv2.INTER_AREA)
    kps, des = cv2.ORB_create(nfeatures=nfeatures).detectAndCompute(g, None)
    if des is None or not kps:
        return OrbFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))
    return OrbFeatures(np.array([k.pt for k in kps], np.float32), des)


def _feature_job(args: tuple[str, str, int]):  # noqa: ANN202 - returns one of several feature types
    method, path, nfeatures = args
    rgb = _load_rgb(Path(path))
    if rgb is None:
        return None
    if method == "tiny":
        return _tiny_vec(rgb)
    if method == "orb":
        return _orb_features(rgb, nfeatures)
    return _hash_bits(method, rgb)


def _init_worker() -> None:
    cv2.setNumThreads(1)


_POOL: list = []  # the shared pool while inside worker_pool()
IN_PROCESS_BELOW = 64  # fewer jobs than this run in-process: spawning workers would cost more


@contextmanager
def worker_pool(workers: int) -> Iterator[None]:
    """Share one process pool across methods (workers import their libraries once, not per method)."""
    if workers <= 1:
        yield
        return
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        _POOL.append((pool, workers))
        try:
            yield
        finally:
            _POOL.pop()


def _map(fn: Callable, jobs: list, workers: int) -> list:
    """``fn`` over ``jobs`` in order; ``workers`` > 1 uses processes (the shared pool when open)."""
    if workers <= 1 or len(jobs) < IN_PROCESS_BELOW:
        return [fn(j) for j in jobs]
    if _POOL:
        pool, n = _POOL[-1]
        return pool.map(fn, jobs, chunksize=max(1, len(jobs) // (n * 8)))
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        return pool.map(fn, jobs, chunksize=max(1, len(jobs) // (workers * 8)))


def features(method: str, paths: Sequence[Path], workers: int = 1, nfeatures: int = 1000) -> list:
    """Per-image features of ``method`` (None where the image could not be decoded)."""
    return _map(_feature_job, [(method, str(p), nfeatures) for p in paths], workers)


# ------------------------------------------------------------------ scoring
def hamming_similarity(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Q x R negative Hamming distances between boolean bit matrices (higher = more similar)."""
    qi, ri = q.astype(np.int32), r.astype(np.int32)
    agree = qi @ ri.T + (1 - qi) @ (1 - ri).T
    return (agree - q.shape[1]).astype(np.float32)


def _stack(feats: list, dim: int, dtype) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    ok = np.array([f is not None for f in feats], bool)
    arr = np.zeros((len(feats), dim), dtype)
    for i, f in enumerate(feats):
        if f is not None:
            arr[i] = f
    return arr, ok


def _global_similarity(method: str, qpaths: Sequence[Path], rpaths: Sequence[Path],
                       workers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Q x R similarities, query ok mask, reference ok mask) for a hash method or ``tiny``."""
    qf, rf = features(method, qpaths, workers), features(method, rpaths, workers)
    dim = next((len(f) for f in qf + rf if f is not None), 1)
    if method == "tiny":
        q, qok = _stack(qf, dim, np.float32)
        r, rok = _stack(rf, dim, np.float32)
        return q @ r.T, qok, rok
    q, qok = _stack(qf, dim, bool)
    r, rok = _stack(rf, dim, bool)
    return hamming_similarity(q, r), qok, rok


def similarity(method: str, queries: Sequence[Path], references: Sequence[Path], workers: int = 1) -> np.ndarray:
    """Q x R similarity matrix (higher = more similar) for a global method; -inf where undecodable."""
    if method not in BASELINES or method == "orb":
        raise InputError(f"unknown global baseline {method!r}; choose from {BASELINES[:-1]}")
    sims, qok, rok = _global_similarity(method, queries, references, workers)
    sims[~qok, :] = -np.inf
    sims[:, ~rok] = -np.inf
    return sims


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, scores.shape[1])
    idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)


_ORB_REFS: dict = {}


def _init_orb_worker(refs: list[OrbFeatures | None], opts: OrbOptions) -> None:
    cv2.setNumThreads(1)
    _ORB_REFS.update(refs=refs, opts=opts)


def _ransac_inliers(q: OrbFeatures, r: OrbFeatures, opts: OrbOptions, matcher: cv2.BFMatcher) -> int:
    if len(q.descriptors) < 2 or len(r.descriptors) < 2:
        return 0
    good = [m for m, n in (p for p in matcher.knnMatch(q.descriptors, r.descriptors, k=2) if len(p) == 2)
            if m.distance < opts.ratio * n.distance]
    if len(good) < 4:
        return 0
    src = q.points[[m.queryIdx for m in good]].reshape(-1, 1, 2)
    dst = r.points[[m.trainIdx for m in good]].reshape(-1, 1, 2)
    _, mask = cv2.findHomography(src, dst, cv2.RANSAC, opts.ransac_px)
    return int(mask.sum()) if mask is not None else 0


def _orb_query_job(args: tuple[OrbFeatures | None, list[int]]) -> list[int]:
    q, candidates = args
    refs, opts = _ORB_REFS["refs"], _ORB_REFS["opts"]
    if q is None:
        return [0] * len(candidates)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    return [_ransac_inliers(q, refs[c], opts, matcher) if refs[c] is not None else 0 for c in candidates]


def orb_scores(queries: Sequence[Path], references: Sequence[Path], opts: OrbOptions = OrbOptions(),
               workers: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Q x R scores, -inf outside the shortlist; Q x S shortlist indices; query ok mask)."""
    tiny, qok, rok = _global_similarity("tiny", queries, references, workers)
    tiny[:, ~rok] = -np.inf
    s = len(references) if opts.shortlist <= 0 else min(opts.shortlist, len(references))
    shortlist = _top_k(tiny, s)
    qf = features("orb", queries, workers, opts.nfeatures)
    rf = features("orb", references, workers, opts.nfeatures)
    jobs = [(qf[i], [int(c) for c in shortlist[i]]) for i in range(len(queries))]
    if workers <= 1 or len(jobs) < IN_PROCESS_BELOW:
        _init_orb_worker(rf, opts)
        inliers = [_orb_query_job(j) for j in jobs]
    else:
        with mp.get_context("spawn").Pool(workers, initializer=_init_orb_worker, initargs=(rf, opts)) as pool:
            inliers = pool.map(_orb_query_job, jobs, chunksize=max(1, len(jobs) // (workers * 16)))
    scores = np.full(tiny.shape, -np.inf, np.float32)
    for i, (row, cand) in enumerate(zip(inliers, shortlist)):
        scores[i, cand] = np.asarray(row, np.float32) + 1e-3 * np.nan_to_num(tiny[i, cand], neginf=-1.0)
    scores[~qok, :] = -np.inf
    return scores, shortlist, qok


def predict(method: str, split_dir: Path | None = None, k: int = 10, *, references: Path | None = None,
            queries: Path | None = None, workers: int = 1, orb: OrbOptions = OrbOptions(),
            query_ids: Sequence[str] | None = None) -> list:
    """Top-k predictions for every query (``split_dir/{references,queries}`` or explicit folders).

    ``query_ids`` restricts the queries (a documented subset for slow methods such as ORB).
    """
    preds, _ = _predict(method, split_dir, k, references, queries, workers, orb, query_ids)
    return preds


def _predict(method: str, split_dir: Path | None, k: int, references: Path | None, queries: Path | None,
             workers: int, orb: OrbOptions, query_ids: Sequence[str] | None) -> tuple[list, dict]:
    from brandguard.evaluation.metrics import Prediction

    if method not in BASELINES:
        raise InputError(f"unknown baseline {method!r}; choose from {BASELINES}")
    if k < 1:
        raise InputError("k must be >= 1")
    ref_dir = Path(references) if references else Path(split_dir) / "references"
    q_dir = Path(queries) if queries else Path(split_dir) / "queries"
    refs, qs = _images(ref_dir), _images(q_dir)
    if query_ids is not None:
        wanted = set(query_ids)
        qs = [q for q in qs if q[0] in wanted]
    if not refs or not qs:
        raise InputError(f"need images under {ref_dir} and {q_dir}")
    qpaths, rpaths = [p for _, p in qs], [p for _, p in refs]
    notes: dict = {"queries": len(qs), "references": len(refs)}
    if method == "orb":
        sims, shortlist, qok = orb_scores(qpaths, rpaths, orb, workers)
        notes.update(shortlist=orb.shortlist if orb.shortlist > 0 else "all", shortlist_by="tiny",
                     nfeatures=orb.nfeatures, ratio=orb.ratio, ransac_px=orb.ransac_px)
        notes["_shortlist"] = {qs[i][0]: [refs[int(c)][0] for c in shortlist[i]] for i in range(len(qs))}
    else:
        sims, qok, rok = _global_similarity(method, qpaths, rpaths, workers)
        sims[:, ~rok] = -np.inf
    notes["undecodable_queries"] = int((~qok).sum())
    top = _top_k(sims, k)
    preds = []
    for qi, (qid, _) in enumerate(qs):
        if not qok[qi]:
            continue
        for ri in top[qi]:
            if np.isfinite(sims[qi, int(ri)]):
                preds.append(Prediction(qid, refs[int(ri)][0], float(sims[qi, int(ri)])))
    return preds, notes


def run_baseline(method: str, split_dir: Path | None, out_dir: Path, k: int = 10, *,
                 references: Path | None = None, queries: Path | None = None,
                 ground_truth: Path | None = None, query_info: Path | None = None, workers: int = 1,
                 orb: OrbOptions = OrbOptions(), query_ids: Sequence[str] | None = None) -> BaselineResult:
    """Write ``out_dir/<method>/predictions.csv`` and, with ground truth, ``metrics.json``.

    With ``split_dir`` the corpus layout is used (``ground_truth.csv`` and ``queries.csv``
    beside ``references/`` and ``queries/``); explicit paths override it.
    """
    from brandguard.evaluation.metrics import evaluate, read_ground_truth, read_query_families, write_predictions

    t0 = time.perf_counter()
    out = Path(out_dir) / method
    out.mkdir(parents=True, exist_ok=True)
    preds, notes = _predict(method, split_dir, k, references, queries, workers, orb, query_ids)
    shortlist = notes.pop("_shortlist", None)
    pred_path = out / "predictions.csv"
    write_predictions(pred_path, preds)
    gt_path = Path(ground_truth) if ground_truth else (Path(split_dir) / "ground_truth.csv" if split_dir else None)
    fam_path = Path(query_info) if query_info else (Path(split_dir) / "queries.csv" if split_dir else None)
    metrics = metrics_path = None
    if gt_path is not None and gt_path.is_file():
        q_dir = Path(queries) if queries else Path(split_dir) / "queries"
        qids = [q for q, _ in _images(q_dir)]
        if query_ids is not None:
            wanted = set(query_ids)
            qids = [q for q in qids if q in wanted]
        keep = set(qids)
        gt = {q: r for q, r in read_ground_truth(gt_path).items() if q in keep}
        families = read_query_families(fam_path) if fam_path is not None and fam_path.is_file() else None
        if families is not None:
            families = {q: f for q, f in families.items() if q in keep}
        metrics = evaluate(preds, gt, qids, families)
        if shortlist is not None and gt:
            hit = sum(1 for q, r in gt.items() if r & set(shortlist.get(q, ())))
            notes["shortlist_recall"] = round(hit / len(gt), 4)
        metrics.update(baseline=method, k=k, **notes)
        metrics_path = out / "metrics.json"
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return BaselineResult(method, pred_path, metrics_path, metrics, time.perf_counter() - t0, notes)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m brandguard.datasets.baselines",
        description="Run non-learned baselines (perceptual hashes, PDQ, imagededup hashes, 16x16 tiny image, "
        "ORB+RANSAC) on a DISC21-style split folder (references/, queries/, optional ground_truth.csv and "
        "queries.csv) and write predictions and metrics.",
    )
    p.add_argument("--split", type=Path, required=True, help="e.g. data_cache/corpus_std/test")
    p.add_argument("--out", type=Path, required=True, help="writes OUT/<method>/predictions.csv and metrics.json")
    p.add_argument("--methods", nargs="+", choices=BASELINES, default=["phash", "tiny"])
    p.add_argument("--k", type=int, default=10, help="predictions kept per query")
    p.add_argument("--workers", type=int, default=1, help="processes for feature extraction and ORB matching")
    p.add_argument("--orb-shortlist", type=int, default=OrbOptions.shortlist,
                   help="references per query ORB verifies, shortlisted by the tiny-image score (0 = all)")
    a = p.parse_args(argv)
    cv2.setNumThreads(1)
    try:
        for m in a.methods:
            r = run_baseline(m, a.split, a.out, a.k, workers=a.workers, orb=OrbOptions(shortlist=a.orb_shortlist))
            summary = {k: r.metrics[k] for k in ("micro_ap", "recall_at_p90", "recall_at_1")} if r.metrics else "no ground truth"
            print(f"{m}: {r.predictions_path} ({r.seconds:.1f}s) {summary}")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
