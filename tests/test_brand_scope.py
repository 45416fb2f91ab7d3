"""Brand-scoped search: a brand's check is computed over that brand's references only.

FAISS filters inside the search (an ID selector), so nothing about another brand's references
(score, region, candidate) can reach a brand's answer. Compared with brute force over the
brand's own vectors, for every factory the size rule can pick.
"""

from __future__ import annotations

import numpy as np
import pytest

from brandguard.index.local_store import LocalIndex
from brandguard.index.store import ReferenceIndex, ReferenceRecord
from brandguard.vision.bundle import ModelCard
from test_local_index import DIM, brute_knn, keypoint_sets, perturbed, rootsift_like, stacked

EMB = 32


def card() -> ModelCard:
    return ModelCard(name="t", architecture="t", input_size=64, embedding_dim=EMB, sha256="a" * 64)


def unit(rng, n, d=EMB):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def records(n, brands=7):
    return [ReferenceRecord(f"brand{i % brands}/ref{i}", f"brand{i % brands}") for i in range(n)]


@pytest.mark.parametrize("factory,n", [("IDMap2,Flat", 700), ("IDMap2,IVF16,Flat", 2000),
                                       ("IDMap2,OPQ4,IVF8,PQ4x4", 800)])
def test_brand_search_equals_brute_force_over_that_brand(tmp_path, factory, n):
    rng = np.random.default_rng(0)
    refs, queries = unit(rng, n), unit(rng, 30)
    idx = ReferenceIndex.build(tmp_path, card(), refs, records(n), factory=factory)
    mine = np.array([i for i in range(n) if i % 7 == 3])
    for qi, row in enumerate(idx.search(queries, k=5, brand="brand3")):
        assert row and all(h.brand == "brand3" for h in row)
        if factory == "IDMap2,Flat":
            expected = mine[np.argsort(-(refs[mine] @ queries[qi]))[:5]]
            assert [h.reference_id for h in row] == [f"brand3/ref{i}" for i in expected]
    # unscoped search still sees every brand; an unknown brand finds nothing at all
    assert len({h.brand for row in idx.search(queries, k=20) for h in row}) > 1
    assert idx.search(queries, k=5, brand="nobody") == [[] for _ in range(30)]


def test_scope_follows_generations(tmp_path):
    """Added and removed references enter and leave a brand's scope with their generation."""
    rng = np.random.default_rng(1)
    refs = unit(rng, 40)
    idx = ReferenceIndex.build(tmp_path, card(), refs, records(40, brands=2))
    q = unit(rng, 1)
    before = {h.reference_id for h in idx.search(q, k=40, brand="brand1")[0]}
    assert len(before) == 20
    idx.add(q.copy(), [ReferenceRecord("brand1/new", "brand1")])
    (top, *_), = idx.search(q, k=3, brand="brand1")
    assert top.reference_id == "brand1/new" and top.score == pytest.approx(1.0, abs=1e-5)
    assert all(h.brand == "brand0" for h in idx.search(q, k=40, brand="brand0")[0])
    idx.remove(["brand1/new", "brand1/ref1"])
    after = {h.reference_id for h in idx.search(q, k=40, brand="brand1")[0]}
    assert after == before - {"brand1/ref1"}


@pytest.mark.parametrize("factory", ["IDMap,Flat", "IVF16,Flat"])
def test_descriptor_search_restricted_to_rows_equals_brute_force(factory):
    rng = np.random.default_rng(2)
    sets = keypoint_sets(rng, [150] * 12)
    rows = list(range(12))
    li = LocalIndex.empty(DIM, factory)
    li.add(rows, sets)
    x, pts, ref = stacked(sets, rows)
    only = np.array([2, 5, 9], np.int64)
    keep = np.isin(ref, only)
    q = np.concatenate([perturbed(rng, x[rng.choice(len(x), 60, replace=False)]), rootsift_like(rng, 20)])
    hits = li.search(q, k=4, only_rows=only)
    assert set(np.unique(hits.ref_rows)) <= set(only.tolist())
    if factory == "IDMap,Flat":
        order, dist = brute_knn(q, x[keep], 4)
        assert np.array_equal(hits.ref_rows, ref[keep][order])
        np.testing.assert_allclose(hits.distances, dist, rtol=1e-4, atol=1e-5)
    # removing a reference takes it out of the cached selection too
    li.remove([5])
    assert 5 not in set(np.unique(li.search(q, k=4, only_rows=only).ref_rows).tolist())
    empty = li.search(q, k=4, only_rows=np.array([99], np.int64))
    assert (empty.ref_rows == -1).all() and np.isinf(empty.distances).all()


def test_brand_scoped_check_sees_nothing_of_other_brands(tiny_bundle, tmp_path):
    """A listing that copies brand A's reference, checked in brand B's scope: clear, with no
    score, region or candidate from A; checked unscoped or in A's scope it is flagged for A."""
    from brandguard.engine.pipeline import Pipeline
    from brandguard.inputs import ReferenceRow
    from brandguard.references import build_index, new_bundle_from
    from brandguard.vision.bundle import Bundle
    from tests_helpers import blob_image, encode, save

    imgs = {name: save(blob_image(seed), tmp_path / f"{name}.png") for name, seed in (("acme", 100), ("globex", 101))}
    pipe = Pipeline.from_bundle(new_bundle_from(Bundle.load(tiny_bundle), tmp_path / "b"), depth="fast")
    build_index(pipe, [ReferenceRow("acme/logo", "acme", str(imgs["acme"])),
                       ReferenceRow("globex/logo", "globex", str(imgs["globex"]))])
    data = encode(blob_image(100)[10:230, 15:305], "JPEG", quality=60)
    (everyone,) = pipe.check([data])
    (own,) = pipe.check([data], brand="acme")
    (other,) = pipe.check([data], brand="globex")
    assert everyone.brand == "acme" and own.brand == "acme" and own.verdict == everyone.verdict
    assert everyone.verdict in ("copy", "knockoff")
    assert other.verdict == "clear" and other.brand is None
    assert all(h.brand == "globex" for h in other.top)
    assert other.score is None or other.score < everyone.score - 0.2
