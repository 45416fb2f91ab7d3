"""Descriptor index (``index/local_store.py``): build time, bytes per descriptor, kNN recall vs
exact search and query rate, by index size.

The factory at each size is the one ``choose_descriptor_factory(n)`` picks (what
``ReferenceIndex.build`` gives a descriptor index of that size), built through ``LocalIndex``
itself: ``LocalIndex.empty`` then ``add`` in chunks of whole references; the first ``add`` trains
on a sample of its descriptors exactly as the product does (``train_sample``, LocalIndex's default
unless told). Searches go through ``LocalIndex.search`` (FAISS search + the id -> reference row and
keypoint look-up), in batches of 1000 query descriptors (about one listing's worth), at the nprobe
``tune_descriptor_search`` sets, and at twice and half of it.

Synthetic RootSIFT-like data: ~n/200 cluster centres (|Gaussian|, unit L2); each descriptor = a
centre + a uniform offset + a point of a shared 12-dimensional linear subspace + small isotropic
noise, clipped at 0 and L2-normalised: non-negative unit vectors, clustered, of low intrinsic
dimension like real descriptors. Generated per chunk from a seed, so the data set is never held
in memory (10M x 128 float32 would be 5 GB). The parameters were chosen against real RootSIFT
(``SiftExtractor``, 130k descriptors of 154 clothing photos at 640 px): at 100k descriptors and
IVF1024,Flat, recall@1 of unseen descriptors at nprobe 4/8/16/32 is 0.70/0.83/0.92/0.97 on the
real ones and 0.67/0.82/0.93/0.99 on these, median nearest-neighbour distance 0.39 vs 0.41, its
ratio to the second 0.97 vs 0.965 (uniform |Gaussian| clusters, by contrast, give recall 1.0 at
any nprobe: far too easy).
Queries: 3/4 perturbed copies of stored descriptors (the same keypoint in a re-encoded copy:
+ N(0, 0.015^2) per dimension, clipped, renormalised) and 1/4 fresh draws from the same clusters
(keypoints of unregistered images). Ground truth: exact L2 kNN (``faiss.IndexFlatL2``, chunk by
chunk, merged). recall@1 = share of queries whose index top-1 is the exact top-1; recall@k =
share whose exact nearest neighbour is among the index's top k (FAISS's "1-recall@k");
overlap@k = mean share of the exact top k found in the index's top k (what the votes see).

    python benchmarks/bench_local_index.py --quick --out bench_out/local_index_quick.json
    python benchmarks/bench_local_index.py --out bench_out/local_index.json        # 1M and 10M
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

CHUNK = 500_000  # descriptors generated, searched exactly and added at a time
REF_DESCRIPTORS = 1000  # descriptors per synthetic reference
QUERY_BATCH = 1000  # query descriptors per LocalIndex.search call: about one listing
COPY_SHARE = 0.75
COPY_NOISE = 0.015
LATENT_RANK, LATENT_SCALE, OFFSET, NOISE = 12, 0.2, 0.5, 0.01
XY_BASE = 4096  # a descriptor's id is stored in its keypoint position: x = id % 4096, y = id // 4096
DATA = ("RootSIFT-like: ~n/200 |Gaussian| unit centres, descriptor = centre + uniform offset + a point of a "
        f"shared {LATENT_RANK}-d subspace + N(0, {NOISE}^2), clipped at 0, L2-normalised; "
        f"queries {COPY_SHARE:.0%} stored "
        f"descriptors + N(0, {COPY_NOISE}^2) (clipped, renormalised), the rest fresh draws from the clusters")


@dataclass(frozen=True)
class _Keypoints:
    points: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]


def _unit_nonneg(x: np.ndarray) -> np.ndarray:
    np.maximum(x, 0.0, out=x)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x /= np.maximum(norms, 1e-12)
    return x


class SyntheticDescriptors:
    """Deterministic clustered descriptors, produced chunk by chunk (row i is always the same)."""

    def __init__(self, n: int, dim: int, seed: int = 0):
        self.n, self.dim, self.seed = n, dim, seed
        rng = np.random.default_rng([seed, n, 0])
        centres = np.abs(rng.standard_normal((max(1, n // 200), dim), dtype=np.float32))
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True) + OFFSET / np.sqrt(dim)
        self.basis = rng.standard_normal((LATENT_RANK, dim), dtype=np.float32) * (LATENT_SCALE / np.sqrt(LATENT_RANK))

    @property
    def chunks(self) -> int:
        return -(-self.n // CHUNK)

    def chunk(self, i: int) -> np.ndarray:
        start = i * CHUNK
        m = min(CHUNK, self.n - start)
        return self._draw(np.random.default_rng([self.seed, self.n, 1, i]), m)

    def _draw(self, rng: np.random.Generator, m: int) -> np.ndarray:
        which = rng.integers(0, len(self.centres), m)
        x = rng.standard_normal((m, self.dim), dtype=np.float32)
        x *= NOISE
        x += self.centres[which]
        x += rng.standard_normal((m, LATENT_RANK), dtype=np.float32) @ self.basis
        return _unit_nonneg(x)

    def queries(self, nq: int) -> tuple[np.ndarray, np.ndarray]:
        """(queries, source row or -1 for a fresh draw): one pass over the chunks for the sources."""
        rng = np.random.default_rng([self.seed, self.n, 2])
        n_copy = min(int(round(nq * COPY_SHARE)), self.n)
        src = np.sort(rng.choice(self.n, n_copy, replace=False))
        copies = np.empty((n_copy, self.dim), np.float32)
        for i in range(self.chunks):
            lo, hi = np.searchsorted(src, [i * CHUNK, (i + 1) * CHUNK])
            if hi > lo:
                copies[lo:hi] = self.chunk(i)[src[lo:hi] - i * CHUNK]
        copies += COPY_NOISE * rng.standard_normal(copies.shape, dtype=np.float32)
        fresh = self._draw(rng, nq - n_copy)
        xq = np.concatenate([_unit_nonneg(copies), fresh])
        origin = np.concatenate([src, np.full(nq - n_copy, -1, np.int64)])
        perm = rng.permutation(nq)  # copies and fresh draws mixed in every batch
        return np.ascontiguousarray(xq[perm]), origin[perm]


def _keypoint_sets(x: np.ndarray, start: int) -> tuple[list[int], list[_Keypoints]]:
    """Whole references of REF_DESCRIPTORS descriptors (start is a multiple of it)."""
    rows, sets = [], []
    for lo in range(0, len(x), REF_DESCRIPTORS):
        hi = min(lo + REF_DESCRIPTORS, len(x))
        ids = np.arange(start + lo, start + hi, dtype=np.int64)
        xy = np.stack([ids % XY_BASE, ids // XY_BASE], axis=1).astype(np.float32)
        rows.append((start + lo) // REF_DESCRIPTORS)
        sets.append(_Keypoints(xy, x[lo:hi], (1000, 1000)))
    return rows, sets


def _merge_knn(best_d: np.ndarray, best_i: np.ndarray, d: np.ndarray, i: np.ndarray, k: int):  # noqa: ANN202
    dd, ii = np.concatenate([best_d, d], axis=1), np.concatenate([best_i, i], axis=1)
    order = np.argsort(dd, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dd, order, axis=1), np.take_along_axis(ii, order, axis=1)


def _search_ids(local, xq: np.ndarray, k: int) -> np.ndarray:  # noqa: ANN001
    """The stored descriptor ids of the index's top k, via LocalIndex.search's keypoint positions."""
    out = np.empty((len(xq), k), np.int64)
    for lo in range(0, len(xq), QUERY_BATCH):
        hits = local.search(xq[lo:lo + QUERY_BATCH], k)
        ids = hits.points[..., 1].astype(np.int64) * XY_BASE + hits.points[..., 0].astype(np.int64)
        out[lo:lo + QUERY_BATCH] = np.where(hits.ref_rows >= 0, ids, -1)
    return out


def _recalls(found: np.ndarray, exact: np.ndarray, origin: np.ndarray, k: int) -> dict:
    top1 = found[:, 0] == exact[:, 0]
    in_k = (found[:, :k] == exact[:, :1]).any(axis=1)
    overlap = np.mean([len(set(f[:k]) & set(e[:k])) / k for f, e in zip(found, exact)])
    copy = origin >= 0
    return {"recall_at_1": round(float(top1.mean()), 4), "recall_at_k": round(float(in_k.mean()), 4),
            "overlap_at_k": round(float(overlap), 4),
            "recall_at_1_copies": round(float(top1[copy].mean()), 4) if copy.any() else None,
            "recall_at_1_fresh": round(float(top1[~copy].mean()), 4) if (~copy).any() else None,
            # a copy's own source descriptor at rank 1: what a keypoint match of a re-encoded copy needs
            "source_at_1": round(float((found[copy, 0] == origin[copy]).mean()), 4) if copy.any() else None}


def _rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS of this process so far) in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    try:
        with open("/proc/self/statm") as f:
            cur = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        cur = float("nan")
    return round(cur, 1), round(peak, 1)


def bench_size(n: int, dim: int, nq: int, k: int, threads: int, seed: int, repeats: int,
               train_sample: int | None, log=print) -> dict:  # noqa: ANN001
    import faiss

    from brandguard.index.factories import choose_descriptor_factory, tune_descriptor_search
    from brandguard.index.local_store import LocalIndex

    faiss.omp_set_num_threads(threads)
    load_start = [round(x, 2) for x in os.getloadavg()]
    factory = choose_descriptor_factory(n)
    default_sample = inspect.signature(LocalIndex.add).parameters["train_sample"].default
    sample = default_sample if train_sample is None else int(train_sample)
    data = SyntheticDescriptors(n, dim, seed)
    t0 = time.perf_counter()
    xq, origin = data.queries(nq)
    log(f"[local_index] n={n:,} {factory}: {nq} queries drawn in {time.perf_counter() - t0:.0f}s")

    local = LocalIndex.empty(dim, factory)
    trained_here = local.needs_training()
    gt_d = np.full((nq, k), np.inf, np.float32)
    gt_i = np.full((nq, k), -1, np.int64)
    build_s = first_add_s = exact_s = gen_s = 0.0
    pending: list[np.ndarray] = []
    pending_start = 0
    for c in range(data.chunks):
        t = time.perf_counter()
        x = data.chunk(c)
        gen_s += time.perf_counter() - t
        t = time.perf_counter()
        flat = faiss.IndexFlatL2(dim)
        flat.add(x)
        d, i = flat.search(xq, k)
        del flat
        gt_d, gt_i = _merge_knn(gt_d, gt_i, d, np.where(i >= 0, i + c * CHUNK, -1), k)
        exact_s += time.perf_counter() - t
        pending.append(x)
        # the first add must hold the whole training sample (LocalIndex trains on its first add)
        if not len(local) and sum(len(p) for p in pending) < sample and c + 1 < data.chunks:
            continue
        batch = pending[0] if len(pending) == 1 else np.concatenate(pending)
        pending = []
        rows, sets = _keypoint_sets(batch, pending_start)
        t = time.perf_counter()
        if train_sample is None:
            local.add(rows, sets)
        else:
            local.add(rows, sets, train_sample=sample)
        dt = time.perf_counter() - t
        if not first_add_s:
            first_add_s = dt
        build_s += dt
        pending_start += len(batch)
        del batch, sets
        log(f"[local_index] n={n:,}: {len(local):,} added, build {build_s:.0f}s "
            f"(first add incl. training {first_add_s:.0f}s), exact kNN {exact_s:.0f}s")
    assert len(local) == n, (len(local), n)
    rss_built, _ = _rss_mb()
    faiss_bytes, meta_bytes = local.to_bytes()
    index_bytes, meta_size = len(faiss_bytes), len(meta_bytes)
    del faiss_bytes, meta_bytes

    ivf = None
    try:
        ivf = faiss.extract_index_ivf(local._index)  # the benchmark sweeps nprobe on LocalIndex's own FAISS index
    except RuntimeError:
        pass
    default_nprobe = int(ivf.nprobe) if ivf is not None else None
    if ivf is None:
        probes: list[int | None] = [None]
    else:
        probes = sorted({max(1, default_nprobe // 2), default_nprobe, min(int(ivf.nlist), 2 * default_nprobe)})
    search = []
    for p in probes:
        if p is not None:
            tune_descriptor_search(local._index, p)
        found = _search_ids(local, xq, k)
        row = {"nprobe": p, "default": p == default_nprobe, **_recalls(found, gt_i, origin, k)}
        runs = []
        for _ in range(max(1, repeats)):
            t = time.perf_counter()
            for lo in range(0, nq, QUERY_BATCH):
                local.search(xq[lo:lo + QUERY_BATCH], k)
            runs.append(nq / max(time.perf_counter() - t, 1e-9))
        row["qps"] = round(statistics.median(runs), 1)
        row["qps_runs"] = [round(r, 1) for r in runs]
        search.append(row)
        log(f"[local_index] n={n:,} nprobe={p}: recall@1 {row['recall_at_1']}, recall@{k} {row['recall_at_k']}, "
            f"{row['qps']:,.0f} descriptors/s")
    if ivf is not None:
        tune_descriptor_search(local._index)  # back to the product's setting
    default_row = next(r for r in search if r["default"])
    rss_now, peak = _rss_mb()
    out = {
        "n": n, "dim": dim, "factory": factory, "references": local.references(),
        "nlist": int(ivf.nlist) if ivf is not None else None, "default_nprobe": default_nprobe,
        "train_sample": min(sample, n) if trained_here else None,
        "train_sample_is_default": train_sample is None,
        "build_s": round(build_s, 2), "first_add_s": round(first_add_s, 2),
        "index_bytes": index_bytes, "meta_bytes": meta_size,
        "bytes_per_descriptor": round((index_bytes + meta_size) / n, 1),
        "recall_at_1": default_row["recall_at_1"], "recall_at_k": default_row["recall_at_k"],
        "qps": {str(r["nprobe"]): r["qps"] for r in search},
        "search": search,
        "exact_search_qps": round(nq / max(exact_s, 1e-9), 1), "data_gen_s": round(gen_s, 1),
        "rss_mb_after_build": rss_built, "rss_mb_end": rss_now, "peak_rss_mb": peak,
        # 1/5/15-minute load averages at the start and the end: timings on a shared machine need them
        "load_average": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
    }
    del local, ivf
    gc.collect()
    return out


def run_local_index_bench(sizes=(1_000_000, 10_000_000), dim: int = 128, n_queries: int = 2000, k: int = 5,
                          threads: int = 2, seed: int = 0, log=print, repeats: int = 3,
                          train_sample: int | None = None) -> dict:  # noqa: ANN001
    """The ``local_index`` section of results.json: one run per size, smallest first.

    ``peak_rss_mb`` is the process's peak so far (getrusage), so with sizes in increasing order
    it is the peak of that size's run. ``train_sample`` None = LocalIndex.add's default."""
    import faiss

    faiss.omp_set_num_threads(threads)
    runs = []
    for n in sorted(int(s) for s in sizes):
        t0 = time.perf_counter()
        log(f"[local_index] n={n:,} …")
        r = bench_size(n, dim, min(n_queries, n), k, threads, seed, repeats, train_sample, log)
        r["seconds"] = round(time.perf_counter() - t0, 1)
        log(f"[local_index] n={n:,} {r['factory']}: build {r['build_s']}s, {r['bytes_per_descriptor']} B/descriptor, "
            f"recall@1 {r['recall_at_1']}, qps {r['qps']}, peak RSS {r['peak_rss_mb']:.0f} MB")
        runs.append(r)
        gc.collect()
    return {"dim": dim, "k": k, "n_queries": n_queries, "query_batch": QUERY_BATCH, "threads": threads,
            "seed": seed, "repeats": repeats, "descriptors_per_reference": REF_DESCRIPTORS, "data": DATA,
            "runs": runs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_local_index.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="descriptor counts (default 1000000 10000000)")
    p.add_argument("--quick", action="store_true", help="sizes 100000 1000000")
    p.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    p.add_argument("--queries", type=int, default=2000, help="query descriptors (default 2000)")
    p.add_argument("--k", type=int, default=5, help="neighbours per query descriptor (default 5)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--repeats", type=int, default=3, help="timing repeats, median reported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-sample", type=int, default=None,
                   help="descriptors the IVF is trained on (default: LocalIndex.add's default)")
    a = p.parse_args(argv)
    sizes = tuple(a.sizes or ((100_000, 1_000_000) if a.quick else (1_000_000, 10_000_000)))
    t0 = time.perf_counter()
    res = run_local_index_bench(sizes, a.dim, a.queries, a.k, a.threads, a.seed, repeats=a.repeats,
                                train_sample=a.train_sample)
    from bench_common import environment

    args = sys.argv[1:] if argv is None else argv
    res = {"command": "python benchmarks/bench_local_index.py" + (" " + " ".join(args) if args else ""),
           "environment": environment(), **res, "seconds": round(time.perf_counter() - t0, 1)}
    text = json.dumps(res, indent=2) + "\n"
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text, encoding="utf-8")
        print(f"results: {a.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
