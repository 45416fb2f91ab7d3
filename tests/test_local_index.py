"""Descriptor index: exact search equals brute force, IVF finds the true neighbours, files round
trip, removal is exact, and the index is committed in step with the global index (reload, model
and feature checks, corruption, kill -9)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from brandguard.errors import InputError, ModelMismatchError, ReferenceIndexError
from brandguard.index.local_store import LocalIndex
from brandguard.index.manifest import MANIFEST_FILE, LocalSpec
from brandguard.index.store import ReferenceIndex, ReferenceRecord
from brandguard.vision.bundle import ModelCard
from brandguard.vision.local import LocalFeatures

DIM = 128
EMB = 32
SPEC = LocalSpec("sift", DIM, "x" * 64)


def card() -> ModelCard:
    return ModelCard(name="t", architecture="t", input_size=64, embedding_dim=EMB, sha256="a" * 64)


def unit(rng, n, d=EMB):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


_CENTRES = np.abs(np.random.default_rng(123).standard_normal((200, DIM)))
_CENTRES /= np.linalg.norm(_CENTRES, axis=1, keepdims=True)


def rootsift_like(rng, n):
    """Clustered, non-negative, unit-L2 descriptors (RootSIFT-shaped), all from the same clusters."""
    x = _CENTRES[rng.integers(0, len(_CENTRES), n)] + 0.04 * rng.standard_normal((n, DIM))
    x = np.maximum(x, 0.0)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def keypoint_sets(rng, counts, first_size=100):
    """One LocalFeatures per count; every keypoint position is unique, every image size too."""
    out = []
    for i, c in enumerate(counts):
        size = (first_size + i, 2 * first_size + i)
        pts = (rng.random((c, 2)) * size).astype(np.float32)
        out.append(LocalFeatures(pts, rootsift_like(rng, c), size))
    return out


def perturbed(rng, x, noise=0.01):
    q = np.maximum(x + noise * rng.standard_normal(x.shape), 0.0)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def stacked(sets, rows):
    d = np.concatenate([s.descriptors for s in sets])
    p = np.concatenate([s.points for s in sets])
    r = np.concatenate([np.full(len(s.descriptors), row, np.int64) for s, row in zip(sets, rows)])
    return d, p, r


def brute_knn(q, x, k):
    d = (q.astype(np.float64) ** 2).sum(1)[:, None] + (x.astype(np.float64) ** 2).sum(1)[None] - \
        2 * q.astype(np.float64) @ x.astype(np.float64).T
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


def counts_of(rng, n_refs, total):
    counts = 100 + rng.multinomial(total - 100 * n_refs, np.full(n_refs, 1 / n_refs))
    assert counts.sum() == total
    return counts


# ---------------------------------------------------------------- search
def test_exact_search_equals_brute_force():
    rng = np.random.default_rng(0)
    sets = keypoint_sets(rng, counts_of(rng, 20, 5000))
    rows = [3 + 5 * i for i in range(20)]  # reference rows need not be 0..n-1
    li = LocalIndex.empty(DIM, "IDMap,Flat")
    li.add(rows, sets)
    assert len(li) == 5000 and li.references() == 20
    assert li.sizes == {r: s.image_size for r, s in zip(rows, sets)}
    x, pts, ref = stacked(sets, rows)
    q = np.concatenate([perturbed(rng, x[rng.choice(5000, 150, replace=False)]), rootsift_like(rng, 50)])
    hits = li.search(q, k=5)
    order, dist = brute_knn(q, x, 5)
    assert np.array_equal(hits.ref_rows, ref[order])
    assert np.array_equal(hits.points, pts[order])
    np.testing.assert_allclose(hits.distances, dist, rtol=1e-4, atol=1e-5)
    assert hits.distances.shape == (200, 5) and hits.points.shape == (200, 5, 2)


def test_search_edge_cases():
    rng = np.random.default_rng(1)
    li = LocalIndex.empty(DIM, "IDMap,Flat")
    empty = li.search(rootsift_like(rng, 4), k=3)  # nothing stored yet
    assert (empty.ref_rows == -1).all() and np.isinf(empty.distances).all()
    li.add([7, 8], keypoint_sets(rng, [2, 0]))  # a reference without descriptors is kept (its size)
    assert len(li) == 2 and li.references() == 2
    hits = li.search(rootsift_like(rng, 3), k=4)  # more neighbours asked than stored
    assert (hits.ref_rows[:, :2] == 7).all() and (hits.ref_rows[:, 2:] == -1).all()
    assert np.isinf(hits.distances[:, 2:]).all() and (hits.points[:, 2:] == 0).all()
    assert li.search(np.zeros((0, DIM), np.float32)).ref_rows.shape == (0, 5)
    with pytest.raises(InputError):
        li.search(rootsift_like(rng, 2)[:, :64])
    with pytest.raises(InputError):
        li.add([9], [LocalFeatures(np.zeros((3, 2), np.float32), np.zeros((3, 64), np.float32), (1, 1))])
    bad = rootsift_like(rng, 3)
    bad[1, 5] = np.nan
    with pytest.raises(InputError):
        li.add([9], [LocalFeatures(np.zeros((3, 2), np.float32), bad, (1, 1))])
    with pytest.raises(InputError):
        li.add([9, 10], keypoint_sets(rng, [3]))
    with pytest.raises(InputError):
        LocalIndex.empty(DIM, "NoSuchIndex")
    assert len(li) == 2


def test_ivf_recall_against_brute_force():
    rng = np.random.default_rng(2)
    sets = keypoint_sets(rng, counts_of(rng, 40, 20_000))
    rows = list(range(40))
    li = LocalIndex.empty(DIM, "IVF64,Flat")
    assert li.needs_training()
    li.add(rows, sets)
    assert not li.needs_training() and len(li) == 20_000
    x, pts, ref = stacked(sets, rows)
    q = np.concatenate([perturbed(rng, x[rng.choice(len(x), 300, replace=False)]), rootsift_like(rng, 200)])
    hits = li.search(q, k=5)
    order, _ = brute_knn(q, x, 5)
    found = (hits.ref_rows[:, 0] == ref[order[:, 0]]) & (hits.points[:, 0] == pts[order[:, 0]]).all(axis=1)
    assert found.mean() >= 0.9, found.mean()


def test_probe_share_probes_fewer_lists_and_exact_ignores_it():
    """The glance's cheaper search: a share of the tuned IVF probes, the same ids where it finds
    them, lower recall than the full search; an exact index gives identical results."""
    import faiss

    rng = np.random.default_rng(4)
    # unclustered descriptors: a true neighbour's list is often not among the nearest two
    sets = []
    for i, c in enumerate(counts_of(rng, 40, 20_000)):
        d = rng.random((c, DIM)).astype(np.float32)
        sets.append(LocalFeatures((rng.random((c, 2)) * 100).astype(np.float32),
                                  d / np.linalg.norm(d, axis=1, keepdims=True), (100 + i, 100)))
    li = LocalIndex.empty(DIM, "IVF64,Flat")
    li.add(list(range(40)), sets)
    ivf = faiss.extract_index_ivf(li._index)
    assert ivf.nprobe == 8  # tuned: at least 8
    x, _pts, ref = stacked(sets, list(range(40)))
    q = perturbed(rng, x[rng.choice(len(x), 400, replace=False)], noise=0.03)
    order, _ = brute_knn(q, x, 1)
    full, quarter = li.search(q, k=3), li.search(q, k=3, probe_share=0.25)
    assert ivf.nprobe == 8  # the index's own setting is untouched
    hit_full = (full.ref_rows[:, 0] == ref[order[:, 0]]).mean()
    hit_quarter = (quarter.ref_rows[:, 0] == ref[order[:, 0]]).mean()
    assert hit_quarter < hit_full and hit_quarter >= 0.2, (hit_quarter, hit_full)
    # the same as asking FAISS for nprobe 2 directly
    ivf.nprobe = 2
    direct = li.search(q, k=3)
    ivf.nprobe = 8
    assert np.array_equal(direct.ref_rows, quarter.ref_rows)
    # restricted to some references, the share still applies and only those rows come back
    only = li.search(q, k=3, only_rows=np.arange(10), probe_share=0.25)
    assert set(np.unique(only.ref_rows)) <= set(range(10)) | {-1}
    exact = LocalIndex.empty(DIM, "IDMap,Flat")
    exact.add(list(range(40)), sets)
    assert np.array_equal(exact.search(q, k=3, probe_share=0.25).ref_rows, exact.search(q, k=3).ref_rows)
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(InputError):
            li.search(q, k=3, probe_share=bad)


# ---------------------------------------------------------------- files
@pytest.mark.parametrize("factory,n", [("IDMap,Flat", 3000), ("IVF32,Flat", 6000)])
def test_bytes_round_trip_gives_identical_results(factory, n):
    rng = np.random.default_rng(3)
    sets = keypoint_sets(rng, counts_of(rng, 12, n))
    li = LocalIndex.empty(DIM, factory)
    li.add(list(range(12)), sets)
    li.remove([4])
    faiss_bytes, meta_bytes = li.to_bytes()
    back = LocalIndex.from_bytes(faiss_bytes, meta_bytes, factory, DIM)
    assert len(back) == len(li) and back.sizes == li.sizes and back.references() == 11 and back.factory == factory
    q = rootsift_like(rng, 100)
    a, b = li.search(q, k=5), back.search(q, k=5)
    assert np.array_equal(a.ref_rows, b.ref_rows) and np.array_equal(a.points, b.points)
    assert np.array_equal(a.distances, b.distances)
    # both keep going the same way: descriptor ids continue, never reused
    extra = keypoint_sets(rng, [50], first_size=900)
    li.add([20], extra)
    back.add([20], extra)
    hits = back.search(extra[0].descriptors, k=1)
    assert (hits.ref_rows[:, 0] == 20).all() and np.array_equal(hits.points[:, 0], extra[0].points)
    assert np.array_equal(li.search(q, k=5).ref_rows, back.search(q, k=5).ref_rows)


def test_from_bytes_refuses_garbage_and_mismatches():
    rng = np.random.default_rng(4)
    li = LocalIndex.empty(DIM, "IDMap,Flat")
    li.add([0, 1], keypoint_sets(rng, [5, 6]))
    faiss_bytes, meta_bytes = li.to_bytes()
    with pytest.raises(ReferenceIndexError):
        LocalIndex.from_bytes(faiss_bytes, meta_bytes, "IDMap,Flat", 64)  # other dimension
    with pytest.raises(ReferenceIndexError):
        LocalIndex.from_bytes(b"not faiss", meta_bytes, "IDMap,Flat", DIM)
    with pytest.raises(ReferenceIndexError):
        LocalIndex.from_bytes(faiss_bytes, b"not an npz", "IDMap,Flat", DIM)
    other = LocalIndex.empty(DIM, "IDMap,Flat")
    other.add([0], keypoint_sets(rng, [4]))
    with pytest.raises(ReferenceIndexError):  # metadata of another index: counts disagree
        LocalIndex.from_bytes(faiss_bytes, other.to_bytes()[1], "IDMap,Flat", DIM)


# ---------------------------------------------------------------- removal
def test_remove_removes_exactly_their_descriptors():
    rng = np.random.default_rng(5)
    counts = counts_of(rng, 20, 5000)
    sets = keypoint_sets(rng, counts)
    rows = list(range(20))
    gone = [2, 9, 17]
    li = LocalIndex.empty(DIM, "IDMap,Flat")
    li.add(rows, sets)
    li.remove(gone + [999])  # an unknown row is nothing to remove
    assert len(li) == 5000 - sum(counts[g] for g in gone)
    assert li.references() == 17 and not set(gone) & set(li.sizes)
    keep = [r for r in rows if r not in gone]
    fresh = LocalIndex.empty(DIM, "IDMap,Flat")
    fresh.add(keep, [sets[r] for r in keep])
    q = np.concatenate([perturbed(rng, np.concatenate([sets[g].descriptors for g in gone])), rootsift_like(rng, 100)])
    a, b = li.search(q, k=5), fresh.search(q, k=5)
    assert not np.isin(a.ref_rows, gone).any()
    assert np.array_equal(a.ref_rows, b.ref_rows) and np.array_equal(a.points, b.points)
    np.testing.assert_allclose(a.distances, b.distances, rtol=1e-5, atol=1e-6)
    # every kept descriptor is still there, under its own reference and position
    x, pts, ref = stacked([sets[r] for r in keep], keep)
    hits = li.search(x, k=1)
    assert np.array_equal(hits.ref_rows[:, 0], ref) and np.array_equal(hits.points[:, 0], pts)


def test_remove_from_ivf():
    rng = np.random.default_rng(6)
    counts = counts_of(rng, 10, 4000)
    sets = keypoint_sets(rng, counts)
    li = LocalIndex.empty(DIM, "IVF16,Flat")
    li.add(list(range(10)), sets)
    li.remove([0, 5])
    assert len(li) == 4000 - counts[0] - counts[5] and li.references() == 8
    keep = [r for r in range(10) if r not in (0, 5)]
    x, pts, ref = stacked([sets[r] for r in keep], keep)
    hits = li.search(x, k=1)  # a stored vector's own list is always probed: found exactly
    assert np.array_equal(hits.ref_rows[:, 0], ref) and np.array_equal(hits.points[:, 0], pts)
    assert (hits.distances[:, 0] < 1e-5).all()
    gone = li.search(np.concatenate([sets[0].descriptors, sets[5].descriptors]), k=5)
    assert not np.isin(gone.ref_rows, [0, 5]).any()


@pytest.mark.parametrize("factory", ["IDMap2,Flat", "IVF16,Flat"])
def test_descriptor_index_gives_its_vectors_back(factory):
    rng = np.random.default_rng(7)
    sets = keypoint_sets(rng, counts_of(rng, 10, 2000))
    li = LocalIndex.empty(DIM, factory)
    li.add(list(range(10)), sets)
    li.remove([3])
    keep = [r for r in range(10) if r != 3]
    d, ref, xy = li.descriptors()
    x, pts, ref_expected = stacked([sets[r] for r in keep], keep)
    assert np.array_equal(ref, ref_expected) and np.array_equal(xy, pts)
    np.testing.assert_array_equal(d, x)  # flat codes store the vectors as they are


def test_rebuild_keeps_local_features(tmp_path):
    rng = np.random.default_rng(11)
    counts = [int(c) for c in rng.integers(5, 60, 20)]
    sets = keypoint_sets(rng, counts)
    recs = records(20, counts=counts)
    idx = ReferenceIndex.build(tmp_path, card(), unit(rng, 20), recs, local=sets, local_spec=SPEC)
    new = idx.rebuilt(card())
    assert_in_step(new, {r.reference_id: s for r, s in zip(recs, sets)})


# ---------------------------------------------------------------- committed with the global index
def records(n, start=0, counts=None):
    return [ReferenceRecord(f"brand{i % 3}/ref{i}", f"brand{i % 3}", sku=str(counts[i - start]) if counts is not None
                            else "") for i in range(start, start + n)]


def assert_in_step(idx, sets_by_id):
    """Global and local agree: every live reference's descriptors are stored under one row of
    its own (found at distance 0 at their positions), nothing else is, sizes match."""
    live = [r.reference_id for r in idx.records()]
    assert len(live) == len(idx)
    assert len(idx.local) == sum(len(sets_by_id[r].descriptors) for r in live)
    assert idx.local.references() == len(live)
    assert idx.manifest.local["count"] == len(idx.local) and idx.manifest.local["references"] == len(live)
    seen = set()
    for rid in live:
        s = sets_by_id[rid]
        if not len(s.descriptors):
            continue
        hits = idx.local.search(s.descriptors, k=1)
        row = int(hits.ref_rows[0, 0])
        assert (hits.ref_rows[:, 0] == row).all() and row not in seen, rid
        assert np.array_equal(hits.points[:, 0], s.points) and (hits.distances[:, 0] < 1e-5).all(), rid
        assert idx.local.sizes[row] == s.image_size, rid
        seen.add(row)


def test_reference_index_keeps_global_and_local_in_step(tmp_path):
    rng = np.random.default_rng(8)
    counts = [int(c) for c in rng.integers(5, 60, 40)]
    counts[7] = 0  # a reference without keypoints
    sets = keypoint_sets(rng, counts)
    recs = records(40, counts=counts)
    by_id = {r.reference_id: s for r, s in zip(recs, sets)}
    vecs = unit(rng, 40)
    idx = ReferenceIndex.build(tmp_path, card(), vecs[:30], recs[:30], local=sets[:30], local_spec=SPEC)
    assert idx.local is not None and idx.manifest.local["extractor"] == "sift"
    assert_in_step(idx, by_id)
    assert idx.add(vecs[30:], recs[30:], local=sets[30:]) == 2
    assert_in_step(idx, by_id)
    assert idx.remove([recs[i].reference_id for i in (1, 7, 33)]) == 3
    assert_in_step(idx, by_id)
    # the removed references' descriptors are gone: their own descriptors find other rows, not at distance 0
    hits = idx.local.search(sets[33].descriptors, k=1)
    assert (hits.distances[:, 0] > 1e-4).all()
    idx.close()
    back = ReferenceIndex.load(tmp_path, card(), local_spec=SPEC)
    assert back.generation == 3 and len(back) == 37
    assert_in_step(back, by_id)
    # one generation's files, nothing else
    assert len(list(tmp_path.glob("local-*.faiss"))) == 1 and len(list(tmp_path.glob("local-*.npz"))) == 1
    # an index with local features refuses references without them, and is left as it was
    with pytest.raises(InputError):
        back.add(unit(rng, 1), records(1, start=100))
    with pytest.raises(InputError):
        back.add(unit(rng, 2), records(2, start=100), local=keypoint_sets(rng, [3]))
    assert back.generation == 3
    back.close()
    assert_in_step(ReferenceIndex.load(tmp_path, card(), local_spec=SPEC), by_id)


def test_reference_index_refuses_other_local_features_and_corruption(tmp_path):
    rng = np.random.default_rng(9)
    sets = keypoint_sets(rng, [int(c) for c in rng.integers(5, 40, 12)])
    ReferenceIndex.build(tmp_path, card(), unit(rng, 12), records(12), local=sets, local_spec=SPEC).close()
    with pytest.raises(ModelMismatchError, match="local features"):
        ReferenceIndex.load(tmp_path, card(), local_spec=LocalSpec("sift", DIM, "y" * 64))
    assert len(ReferenceIndex.load(tmp_path, card(), local_spec=SPEC).local) == sum(len(s.descriptors) for s in sets)
    local_file = tmp_path / json.loads((tmp_path / MANIFEST_FILE).read_text())["local"]["index_file"]
    data = bytearray(local_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    local_file.write_bytes(bytes(data))
    with pytest.raises(ReferenceIndexError, match="checksum"):
        ReferenceIndex.load(tmp_path, card(), local_spec=SPEC)


WRITER = """
import sys, numpy as np
from brandguard.index.manifest import LocalSpec
from brandguard.index.store import ReferenceIndex, ReferenceRecord
from brandguard.vision.bundle import ModelCard
from brandguard.vision.local import LocalFeatures
card = ModelCard(name="t", architecture="t", input_size=64, embedding_dim=32, sha256="a" * 64)
idx = ReferenceIndex.load(sys.argv[1], card, local_spec=LocalSpec("sift", 128, "x" * 64))
rng = np.random.default_rng(int(sys.argv[2]))
n = 0
while True:
    v = rng.standard_normal((4, 32)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    counts = rng.integers(0, 400, 4)
    sets = [LocalFeatures(rng.random((c, 2), dtype=np.float32) * 100, rng.random((c, 128), dtype=np.float32),
                          (100, 100)) for c in counts]
    recs = [ReferenceRecord(f"w{sys.argv[2]}/{n + i}", "w", sku=str(c)) for i, c in enumerate(counts)]
    idx.add(v, recs, local=sets)
    idx.remove([recs[0].reference_id])
    n += 4
    print(idx.generation, flush=True)
"""


def test_kill_9_during_local_writes_leaves_both_indexes_in_step(tmp_path):
    rng = np.random.default_rng(10)
    counts = [int(c) for c in rng.integers(0, 400, 50)]
    ReferenceIndex.build(tmp_path, card(), unit(rng, 50), records(50, counts=counts),
                         local=keypoint_sets(rng, counts), local_spec=SPEC).close()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(attempt)], stdout=subprocess.PIPE,
                                text=True)
        proc.stdout.readline()  # at least one generation committed
        time.sleep(float(rng.uniform(0.0, 0.1)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        idx = ReferenceIndex.load(tmp_path, card(), local_spec=SPEC)
        live = idx.records()
        assert len(live) == len(idx) and idx.generation > 1
        assert len(idx.local) == sum(int(r.sku) for r in live)
        assert idx.local.references() == len(live)
        idx.add(unit(rng, 1), [ReferenceRecord(f"after/{attempt}", "after", sku="7")],
                local=keypoint_sets(rng, [7]))
        idx.close()
        again = ReferenceIndex.load(tmp_path, card(), local_spec=SPEC)
        assert len(again.local) == sum(int(r.sku) for r in again.records())
        again.close()
        # debris of the killed write is gone after the next commit
        assert len(list(tmp_path.glob("local-*.faiss"))) == 1 and len(list(tmp_path.glob("local-*.npz"))) == 1
        assert not list(tmp_path.glob(".local-*.tmp"))
