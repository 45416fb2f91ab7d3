"""Reference index: exact search equals brute force; artifacts verified on load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brandguard.errors import InputError, ModelMismatchError, ReferenceIndexError
from brandguard.index.manifest import MANIFEST_FILE
from brandguard.index.factories import choose_factory
from brandguard.index.store import ReferenceIndex, ReferenceRecord
from brandguard.vision.bundle import ModelCard

DIM = 32


def card(sha: str = "a" * 64, dim: int = DIM) -> ModelCard:
    return ModelCard(name="t", architecture="t", input_size=64, embedding_dim=dim, sha256=sha)


def unit(rng, n, d=DIM):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def records(n):
    return [ReferenceRecord(f"brand{i % 7}/ref{i}", f"brand{i % 7}", sku=f"s{i}", kind="logo") for i in range(n)]


def test_search_matches_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    refs, queries = unit(rng, 500), unit(rng, 40)
    idx = ReferenceIndex.build(tmp_path, card(), refs, records(500))
    hits = idx.search(queries, k=5)
    brute = queries @ refs.T
    for qi, row in enumerate(hits):
        expected = np.argsort(-brute[qi])[:5]
        assert [h.reference_id for h in row] == [f"brand{i % 7}/ref{i}" for i in expected]
        assert row[0].score == pytest.approx(float(brute[qi, expected[0]]), abs=1e-5)
    assert row[0].brand == row[0].reference_id.split("/")[0]


def test_reload_roundtrip_and_metadata(tmp_path):
    rng = np.random.default_rng(1)
    refs = unit(rng, 50)
    ReferenceIndex.build(tmp_path, card(), refs, records(50)).close()
    idx = ReferenceIndex.load(tmp_path, card())
    assert len(idx) == 50 and idx.manifest.factory == "IDMap2,Flat"
    assert idx.search(refs[7], k=1)[0][0].reference_id == "brand0/ref7"
    assert idx.brands() == [f"brand{i}" for i in range(7)]
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert manifest["model_sha256"] == "a" * 64 and manifest["dim"] == DIM and manifest["count"] == 50
    assert manifest["metric"] == "inner_product" and len(manifest["index_sha256"]) == 64


def test_other_model_is_refused(tmp_path):
    rng = np.random.default_rng(2)
    ReferenceIndex.build(tmp_path, card(), unit(rng, 10), records(10)).close()
    with pytest.raises(ModelMismatchError, match="built with model"):
        ReferenceIndex.load(tmp_path, card(sha="b" * 64))
    with pytest.raises(ModelMismatchError):
        ReferenceIndex.load(tmp_path, card(dim=64))


def test_corrupted_index_file_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    ReferenceIndex.build(tmp_path, card(), unit(rng, 10), records(10)).close()
    index_file = tmp_path / json.loads((tmp_path / MANIFEST_FILE).read_text())["index_file"]
    data = bytearray(index_file.read_bytes())
    data[-5] ^= 0xFF
    index_file.write_bytes(bytes(data))
    with pytest.raises(ReferenceIndexError, match="checksum"):
        ReferenceIndex.load(tmp_path, card())


def test_manifest_missing_or_garbled(tmp_path):
    with pytest.raises(ReferenceIndexError):
        ReferenceIndex.load(tmp_path, card())
    rng = np.random.default_rng(4)
    ReferenceIndex.build(tmp_path, card(), unit(rng, 10), records(10)).close()
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ReferenceIndexError):
        ReferenceIndex.load(tmp_path, card())


def test_inputs_validated_at_boundary(tmp_path):
    rng = np.random.default_rng(5)
    with pytest.raises(InputError):
        ReferenceIndex.build(tmp_path, card(), unit(rng, 10, 16), records(10))
    with pytest.raises(InputError):
        ReferenceIndex.build(tmp_path, card(), unit(rng, 10), records(9))
    bad = unit(rng, 10)
    bad[3, 0] = np.nan
    with pytest.raises(InputError):
        ReferenceIndex.build(tmp_path, card(), bad, records(10))
    idx = ReferenceIndex.build(tmp_path, card(), unit(rng, 10), records(10))
    # float64, non-contiguous input is accepted and converted
    q = np.asfortranarray(unit(rng, 3).astype(np.float64))
    assert len(idx.search(q, k=2)) == 3
    with pytest.raises(InputError):
        idx.search(unit(rng, 3, 16))


def test_factory_rule():
    assert choose_factory(10) == "IDMap2,Flat"
    assert choose_factory(99_999) == "IDMap2,Flat"
    assert "IVF" in choose_factory(500_000) and "PQ" not in choose_factory(500_000)
    assert "PQ" in choose_factory(20_000_000)


def test_add_remove_equals_rebuilt_index(tmp_path):
    rng = np.random.default_rng(6)
    vecs = unit(rng, 300)
    recs = records(300)
    idx = ReferenceIndex.build(tmp_path / "inc", card(), vecs[:200], recs[:200])
    assert idx.add(vecs[200:], recs[200:]) == 2
    removed = [r.reference_id for r in recs[::7]]
    assert idx.remove(removed) == 3
    idx.close()
    inc = ReferenceIndex.load(tmp_path / "inc", card())
    keep = [i for i, r in enumerate(recs) if r.reference_id not in set(removed)]
    full = ReferenceIndex.build(tmp_path / "full", card(), vecs[keep], [recs[i] for i in keep])
    queries = unit(rng, 30)
    a, b = inc.search(queries, k=8), full.search(queries, k=8)
    assert [[h.reference_id for h in row] for row in a] == [[h.reference_id for h in row] for row in b]
    assert len(inc) == len(full) == len(keep)
    assert {r.reference_id for r in inc.records()} == {recs[i].reference_id for i in keep}
    # only the current generation's files remain
    assert len(list((tmp_path / "inc").glob("index-*.faiss"))) == 1


def test_add_rejects_duplicates_and_remove_rejects_unknown(tmp_path):
    rng = np.random.default_rng(7)
    idx = ReferenceIndex.build(tmp_path, card(), unit(rng, 10), records(10))
    with pytest.raises(InputError, match="already exist"):
        idx.add(unit(rng, 1), [records(10)[3]])
    with pytest.raises(InputError, match="not in the index"):
        idx.remove(["nope/never"])
    assert idx.generation == 1 and len(idx) == 10
    idx.remove(["brand3/ref3"])
    idx.add(unit(rng, 1), [records(10)[3]])  # re-adding a removed id is fine
    assert len(ReferenceIndex.load(tmp_path, card())) == 10


WRITER = """
import sys, numpy as np
from brandguard.index.store import ReferenceIndex, ReferenceRecord
from brandguard.vision.bundle import ModelCard
card = ModelCard(name="t", architecture="t", input_size=64, embedding_dim=64, sha256="a" * 64)
idx = ReferenceIndex.load(sys.argv[1], card)
rng = np.random.default_rng(int(sys.argv[2]))
n = 0
while True:
    v = rng.standard_normal((500, 64)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    recs = [ReferenceRecord(f"w{sys.argv[2]}/{n + i}", "w") for i in range(500)]
    idx.add(v, recs)
    idx.remove([recs[0].reference_id])
    n += 500
    print(idx.generation, flush=True)
"""


def test_kill_during_writes_leaves_a_loadable_index(tmp_path):
    """kill -9 a process that is adding and removing references; the index must still load."""
    import signal
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(8)
    c = card(dim=64)
    ReferenceIndex.build(tmp_path, c, unit(rng, 20000, 64), records(20000)).close()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(attempt)], stdout=subprocess.PIPE,
                                text=True)
        proc.stdout.readline()  # at least one generation committed
        time.sleep(float(rng.uniform(0.0, 0.15)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        idx = ReferenceIndex.load(tmp_path, c)
        n = len(idx)
        assert len(idx.records()) == n
        hits = idx.search(unit(rng, 2, 64), k=3)
        assert all(len(h) == 3 for h in hits)
        idx.add(unit(rng, 1, 64), [ReferenceRecord(f"after/{attempt}", "after")])
        idx.close()
        assert len(ReferenceIndex.load(tmp_path, c)) == n + 1
        assert len(list(tmp_path.glob("index-*.faiss"))) == 1  # debris of the killed write is gone


def test_ivf_index_is_searched_with_enough_lists(tmp_path):
    """An IVF index must not be left at FAISS's nprobe=1 (recall collapses)."""
    import faiss

    rng = np.random.default_rng(9)
    vecs = unit(rng, 4000)
    idx = ReferenceIndex.build(tmp_path, card(), vecs, records(4000), factory="IDMap2,IVF64,Flat")
    assert faiss.extract_index_ivf(idx._index).nprobe == 32
    idx.close()
    loaded = ReferenceIndex.load(tmp_path, card())
    assert faiss.extract_index_ivf(loaded._index).nprobe == 32
    queries = vecs[:200] + 0.05 * unit(rng, 200)
    hits = loaded.search(queries, k=1)
    recall = np.mean([h[0].reference_id == records(4000)[i].reference_id for i, h in enumerate(hits)])
    assert recall > 0.95


def test_growing_past_exact_search_rebuilds_with_the_size_rule(tmp_path):
    rng = np.random.default_rng(11)
    vecs = unit(rng, 100_010)
    recs = [ReferenceRecord(f"b{i % 50}/r{i}", f"b{i % 50}") for i in range(100_010)]
    idx = ReferenceIndex.build(tmp_path, card(), vecs[:99_990], recs[:99_990])
    assert idx.manifest.factory == "IDMap2,Flat" and not idx.needs_rebuild()
    idx.add(vecs[99_990:], recs[99_990:])
    assert idx.needs_rebuild()
    new = idx.rebuilt(card())
    assert new.manifest.factory.startswith("IDMap2,IVF") and len(new) == 100_010
    hits = new.search(vecs[[5, 99_995]], k=1)  # the stored vectors came back exactly
    assert [h[0].reference_id for h in hits] == ["b5/r5", "b45/r99995"] and hits[0][0].score > 0.999
    new.close()
    assert ReferenceIndex.load(tmp_path, card()).manifest.factory == new.manifest.factory
