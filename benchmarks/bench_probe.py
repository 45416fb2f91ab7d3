"""Baseline: the plain RootSIFT voting probe that motivated the local stage (issue #14).

What a competent engineer writes in an afternoon: SIFT -> RootSIFT for every reference into one
exact FAISS index, each query descriptor's nearest neighbour with Lowe's ratio test against the
second neighbour, votes per reference, a similarity RANSAC on the 10 most-voted references,
score = inliers, the mirrored query tried too. No global embedding, no calibration, no
cross-brand ratio test, no batching. brandguard's thorough depth must beat it on every family.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import cv2
import faiss
import numpy as np

from brandguard.evaluation.metrics import Prediction, write_predictions
from brandguard.inputs import list_images

SIDE = 512


def _rootsift(sift, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    f = min(1.0, SIDE / max(h, w))
    if f < 1:
        img = cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
    kps, d = sift.detectAndCompute(img, None)
    if d is None:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
    d = d / np.maximum(d.sum(1, keepdims=True), 1e-7)
    d = np.sqrt(d).astype(np.float32)
    return np.float32([k.pt for k in kps]) / f, d


def run_probe(references: Path, queries: Path, out_csv: Path, top: int = 10, ratio: float = 0.8,
              threads: int = 1, log=print) -> dict:  # noqa: ANN001
    """Write the probe's predictions (score = inliers) for every query; returns timings."""
    faiss.omp_set_num_threads(threads)
    cv2.setNumThreads(threads)
    sift = cv2.SIFT_create(nfeatures=1000)
    refs = list_images(references)
    pts, descs, owner = [], [], []
    for i, (_, p) in enumerate(refs):
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if img is None:
            continue
        kp, d = _rootsift(sift, img)
        pts.append(kp)
        descs.append(d)
        owner.append(np.full(len(d), i))
    all_pts = np.concatenate(pts)
    index = faiss.IndexFlatL2(128)
    index.add(np.concatenate(descs))
    owner_arr = np.concatenate(owner)
    preds: list[Prediction] = []
    t0 = time.perf_counter()
    qs = list_images(queries)
    for qid, p in qs:
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if img is None:
            continue
        scores: dict[int, int] = {}
        for flip in (False, True):
            kp, d = _rootsift(sift, img[:, ::-1].copy() if flip else img)
            if len(d) < 2:
                continue
            dist, nn = index.search(d, 2)
            good = dist[:, 0] < (ratio ** 2) * dist[:, 1]
            votes = Counter(owner_arr[nn[good, 0]].tolist())
            for r, _ in votes.most_common(top):
                sel = good & (owner_arr[nn[:, 0]] == r)
                if sel.sum() < 4:
                    continue
                m, mask = cv2.estimateAffinePartial2D(all_pts[nn[sel, 0]], kp[sel], method=cv2.RANSAC,
                                                      ransacReprojThreshold=8.0)
                if m is not None and mask is not None:
                    scores[r] = max(scores.get(r, 0), int(mask.sum()))
        preds += [Prediction(qid, refs[r][0], float(s)) for r, s in scores.items() if s > 0]
    dt = time.perf_counter() - t0
    write_predictions(out_csv, preds)
    log(f"[probe] {len(qs)} queries in {dt:.1f}s")
    return {"seconds_per_query": round(dt / max(1, len(qs)), 4), "reference_descriptors": int(index.ntotal)}
