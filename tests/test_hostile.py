"""Hostile inputs through the library and the scanner: every one answered, nothing lost."""

from __future__ import annotations

import json
import resource

import pytest

from brandguard.cli.main import EXIT_OK, main
from brandguard.scan.scanner import ScanOptions, read_results, scan
from brandguard.engine.pipeline import Pipeline
from hostile import hostile_corpus
from tests_helpers import blob_image, save


@pytest.fixture(scope="module")
def pipe(tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_refs")
    for i in range(3):
        save(blob_image(42 + i * 7, 240, 320), root / "refs" / f"brand{i}" / "logo.png")
    assert main(["index", str(root / "refs"), "--bundle", str(tiny_bundle), "--out", str(root / "b")]) == EXIT_OK
    return Pipeline.from_bundle(root / "b", require_index=True)


@pytest.mark.parametrize("name,data,expected", hostile_corpus(), ids=[c[0] for c in hostile_corpus()])
def test_library_answers_every_hostile_input(pipe, name, data, expected):
    (v,) = pipe.check([data])
    if expected is None:
        assert v.verdict in ("copy", "knockoff", "clear"), (name, v)
        assert v.reason is None
    else:
        assert v.verdict == "inconclusive" and v.reason == expected, (name, v.reason, v.evidence)


def test_scanner_keeps_every_hostile_row(pipe, tmp_path):
    corpus = hostile_corpus()
    rows = []
    for i, (name, data, _) in enumerate(corpus):
        (tmp_path / "imgs").mkdir(exist_ok=True)
        (tmp_path / "imgs" / name).write_bytes(data)
        rows.append({"listing_id": f"h{i}", "image": f"imgs/{name}"})
    cat = tmp_path / "cat.jsonl"
    cat.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = scan(cat, pipe, tmp_path / "out", ScanOptions(workers=1, batch_size=5, part_size=7, progress=False))
    got = {r["listing_id"]: r for r in read_results(tmp_path / "out")}
    assert len(got) == len(corpus) == summary.total
    for i, (name, _, expected) in enumerate(corpus):
        r = got[f"h{i}"]
        if expected is None:
            assert r["verdict"] != "inconclusive", (name, r["reason"])
        else:
            assert (r["verdict"], r["reason"]) == ("inconclusive", expected), name


def test_memory_stays_flat_over_repeated_hostile_batches(pipe):
    corpus = [d for _, d, _ in hostile_corpus()]
    for _ in range(3):  # warm-up: allocator pools, ONNX Runtime arenas
        pipe.check(corpus)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(30):
        pipe.check(corpus)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 40, f"peak RSS grew {grown_mb:.1f} MB over 600 hostile images"
