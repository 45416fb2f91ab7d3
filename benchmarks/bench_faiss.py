"""FAISS: build time, memory per vector, search rate and recall vs exact search, by index size.

The factory at each size is the one ``brandguard.index.store.choose_factory`` picks (what
``brandguard index`` builds), built the way ``ReferenceIndex.build`` builds it: inner-product
metric, trained on all the vectors, added with ids. ``nprobe`` is swept (1 = FAISS's own default,
8, 32) and the product's setting (``tune_search``: 32, or 1/32 of the lists for big indexes) is
always among the rows, marked, so the recall the product actually gets is visible.

Synthetic data: database = random unit vectors of the model's dimension; queries = database
vectors plus Gaussian noise (renormalised), like a re-encoded copy of a reference, so every query
has a meaningful nearest neighbour. Recall@k = share of queries whose exact nearest neighbour (brute
force, ``faiss.knn``) is among the index's top k (FAISS's "1-recall@k").
Uniform random queries would be IVF's worst case and are not what a copy detector sees.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

from bench_common import BenchConfig

NPROBE_SWEEP = (1, 8, 32)


@dataclass(frozen=True)
class FaissRun:
    n: int
    dim: int
    factory: str
    factory_chosen_for: int  # n whose choose_factory() string this is (== n outside quick mode)
    build_s: float
    train_s: float
    add_s: float
    bytes_per_vector: float
    index_bytes: int
    threads: int
    n_queries: int
    exact_search_qps: float
    search: list[dict]  # per nprobe: qps (all threads), qps_1thread, recall_at_1, recall_at_10


def synthetic(n: int, dim: int, nq: int, seed: int = 0, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xb = np.empty((n, dim), np.float32)
    for i in range(0, n, 100_000):  # in chunks: bounded temporary memory at 1M+
        c = rng.standard_normal((min(100_000, n - i), dim), dtype=np.float32)
        xb[i:i + len(c)] = c / np.linalg.norm(c, axis=1, keepdims=True)
    src = rng.choice(n, size=nq, replace=False)
    xq = xb[src] + noise * rng.standard_normal((nq, dim), dtype=np.float32)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    return xb, np.ascontiguousarray(xq, dtype=np.float32)


def _recall(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    """FAISS's "1-recall@k": share of queries whose exact nearest neighbour is in the top k found."""
    return round(float(np.mean([e[0] in f[:k] for f, e in zip(found, exact)])), 4)


def _qps(fn, nq: int, repeats: int) -> float:  # noqa: ANN001
    runs = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        runs.append(nq / max(time.perf_counter() - t0, 1e-9))
    return round(statistics.median(runs), 1)


def bench_size(n: int, factory_n: int, dim: int, nq: int, threads: int, repeats: int, k: int = 10) -> FaissRun:
    import faiss

    from brandguard.index.factories import choose_factory, tune_search

    faiss.omp_set_num_threads(threads)
    factory = choose_factory(factory_n)
    xb, xq = synthetic(n, dim, nq)
    t0 = time.perf_counter()
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(xb)
    t1 = time.perf_counter()
    index.add_with_ids(xb, np.arange(n, dtype=np.int64))
    t2 = time.perf_counter()
    size = int(faiss.serialize_index(index).size)
    _, exact = faiss.knn(xq, xb, k, faiss.METRIC_INNER_PRODUCT)
    exact_qps = _qps(lambda: faiss.knn(xq, xb, k, faiss.METRIC_INNER_PRODUCT), nq, 1)
    del xb
    ivf = None
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        pass
    product_nprobe = None
    if ivf is not None:
        tune_search(index)  # exactly what ReferenceIndex does on load
        product_nprobe = int(ivf.nprobe)
    probes = sorted({p for p in NPROBE_SWEEP if p <= ivf.nlist} | {product_nprobe}) if ivf is not None else [None]
    search = []
    for p in probes:
        if ivf is not None:
            ivf.nprobe = p
        _, found = index.search(xq, k)
        row = {"nprobe": p, "recall_at_1": _recall(found, exact, 1), "recall_at_10": _recall(found, exact, 10),
               "qps": _qps(lambda: index.search(xq, k), nq, repeats)}
        faiss.omp_set_num_threads(1)
        row["qps_1thread"] = _qps(lambda: index.search(xq, k), nq, repeats)
        faiss.omp_set_num_threads(threads)
        if p == product_nprobe:
            row["product_default"] = True
        search.append(row)
    return FaissRun(n, dim, factory, factory_n, round(t2 - t0, 2), round(t1 - t0, 2), round(t2 - t1, 2),
                    round(size / n, 1), size, threads, nq, exact_qps, search)


def estimate_10m(runs: list[FaissRun], dim: int) -> dict:
    """Extrapolated 10M-vector figures for the factory choose_factory picks at 10M (not measured).

    Memory: PQ code bytes + id bytes per vector (the id overhead measured on the largest IVF run)
    + fixed tables (coarse centroids, PQ codebooks, OPQ matrix). Build: k-means cost scales with
    training points x centroids, so the largest measured train time is scaled by that product
    (FAISS samples at most 256 points per centroid); add time scales with n x nlist.
    """
    from brandguard.index.factories import choose_factory

    n = 10_000_000
    factory = choose_factory(n)
    nlist = int(factory.split("IVF")[1].split(",")[0])
    m = int(factory.rsplit("PQ", 1)[1])
    ivf_runs = [r for r in runs if "IVF" in r.factory]
    base = max(ivf_runs or runs, key=lambda r: r.n)
    base_nlist = int(base.factory.split("IVF")[1].split(",")[0]) if "IVF" in base.factory else 1
    # ids and list bookkeeping per vector: what the IVF-Flat run stored beyond its raw vectors and centroids
    per_vec_overhead = (max(8.0, base.bytes_per_vector - 4 * dim - base_nlist * dim * 4 / base.n)
                        if base.factory.endswith("Flat") else 16.0)
    fixed = nlist * dim * 4 + 256 * dim * 4 + dim * dim * 4
    mem = n * (m + per_vec_overhead) + fixed
    train_pts = min(n, 256 * nlist)
    base_train_pts = min(base.n, 256 * base_nlist)
    train_s = base.train_s * (train_pts * nlist) / max(base_train_pts * base_nlist, 1)
    add_s = base.add_s * (n * nlist) / max(base.n * base_nlist, 1)
    return {
        "n": n, "factory": factory, "measured": False,
        "bytes_per_vector": round(mem / n, 1), "memory_gb": round(mem / 2**30, 2),
        "raw_float32_gb": round(n * dim * 4 / 2**30, 2),
        "build_s_rough": round(train_s + add_s), "based_on": f"{base.factory} at n={base.n}",
        "method": "PQ code + measured per-vector id overhead + fixed tables; build scaled by points x centroids",
        "note": "search speed and recall of PQ codes are not extrapolated; measure on the target machine",
    }


def run_faiss(cfg: BenchConfig, dim: int, log=print) -> dict:  # noqa: ANN001
    """The ``faiss`` section of results.json."""
    runs = []
    for n, fn in zip(cfg.faiss_sizes, cfg.faiss_factory_sizes):
        log(f"[faiss] n={n} …")
        r = bench_size(n, fn, dim, min(cfg.faiss_queries, n), cfg.threads, cfg.repeats)
        log(f"[faiss] n={n} {r.factory}: build {r.build_s}s, {r.bytes_per_vector} B/vector, "
            f"{[(s['nprobe'], s['recall_at_1'], s['qps']) for s in r.search]}")
        runs.append(r)
    return {"dim": dim, "runs": [asdict(r) for r in runs], "estimate_10M": estimate_10m(runs, dim),
            "data": "unit Gaussian database; queries = database vectors + N(0, 0.05^2) noise, renormalised"}

