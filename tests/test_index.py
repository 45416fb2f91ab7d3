"""Reference index: exact search equals brute force; artifacts verified on load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brandguard.errors import InputError, ModelMismatchError, ReferenceIndexError
from brandguard.index.store import INDEX_FILE, MANIFEST_FILE, ReferenceIndex, ReferenceRecord, choose_factory
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
    data = bytearray((tmp_path / INDEX_FILE).read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / INDEX_FILE).write_bytes(bytes(data))
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
