"""Pipeline, scanner and CLI end to end, on a real (tiny) ONNX model, FAISS and SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brandguard.cli.main import EXIT_ARTIFACT, EXIT_OK, EXIT_USAGE, main
from brandguard.errors import BundleError
from brandguard.scan.scanner import ScanOptions, read_results, scan
from brandguard.vision.bundle import CARD_FILE, Bundle
from brandguard.engine.pipeline import Pipeline
from tests_helpers import blob_image, fresh_python, save

BRANDS = ["acme", "bolt", "cora", "dune"]


@pytest.fixture()
def catalogue(tmp_path: Path) -> Path:
    """References for 4 brands; listings: crops/re-encodes of them, unrelated images, bad rows."""
    refs = tmp_path / "refs"
    for i, b in enumerate(BRANDS):
        save(blob_image(100 + i), refs / b / "logo.png")
    listings = tmp_path / "listings"
    rows = []
    for i, b in enumerate(BRANDS):
        img = blob_image(100 + i)
        save(img[10:230, 15:305], listings / f"copy_{b}.jpg", quality=60)
        rows.append({"listing_id": f"copy_{b}", "image": f"listings/copy_{b}.jpg", "seller_id": "s1", "price": 10})
    for j in range(3):
        save(blob_image(500 + j), listings / f"other_{j}.jpg", quality=85)
        rows.append({"listing_id": f"other_{j}", "image": f"listings/other_{j}.jpg", "price": "5.5"})
    (listings / "fake.jpg").write_bytes(b"<html>definitely not a jpeg</html>")
    rows += [{"listing_id": "fake", "image": "listings/fake.jpg"},
             {"listing_id": "gone", "image": "listings/missing.jpg"},
             {"listing_id": "cheap", "image": "listings/other_0.jpg", "price": "abc"}]
    cat = tmp_path / "catalogue.jsonl"
    cat.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken json\n")
    return tmp_path


def indexed_bundle(tiny_bundle: Path, catalogue: Path) -> Path:
    out = catalogue / "bundle"
    assert main(["index", str(catalogue / "refs"), "--bundle", str(tiny_bundle), "--out", str(out)]) == EXIT_OK
    return out


def test_copies_found_distractors_clear_bad_rows_inconclusive(tiny_bundle, catalogue):
    bundle = indexed_bundle(tiny_bundle, catalogue)
    pipe = Pipeline.from_bundle(bundle, require_index=True)
    summary = scan(catalogue / "catalogue.jsonl", pipe, catalogue / "scan",
                   ScanOptions(workers=1, batch_size=4, part_size=3, progress=False))
    rows = {r["listing_id"]: r for r in read_results(catalogue / "scan")}
    assert summary.total == len(rows) == 11  # every row once, the broken JSON line included
    for b in BRANDS:
        assert rows[f"copy_{b}"]["verdict"] == "copy" and rows[f"copy_{b}"]["brand"] == b
        assert rows[f"copy_{b}"]["top_reference_id"] == f"{b}/logo"
    for j in range(3):
        assert rows[f"other_{j}"]["verdict"] == "clear", rows[f"other_{j}"]
    assert rows["fake"]["verdict"] == "inconclusive" and rows["fake"]["reason"] == "not_an_image"
    assert rows["gone"]["reason"] == "missing_file"
    assert rows["cheap"]["reason"] == "bad_price"
    broken = [r for r in rows.values() if r["listing_id"].startswith("catalogue.jsonl:")]
    assert len(broken) == 1 and broken[0]["verdict"] == "inconclusive"
    assert summary.verdicts == {"copy": 4, "clear": 3, "inconclusive": 4}
    assert len(list((catalogue / "scan" / "parts").glob("part-*.parquet"))) == 4


def test_resume_does_not_rescan_or_duplicate(tiny_bundle, catalogue):
    bundle = indexed_bundle(tiny_bundle, catalogue)
    pipe = Pipeline.from_bundle(bundle, require_index=True)
    out = catalogue / "scan"
    opts = ScanOptions(workers=0, batch_size=2, part_size=2, progress=False)
    scan(catalogue / "catalogue.jsonl", pipe, out, opts)
    parts = sorted((out / "parts").glob("part-*.parquet"))
    for p in parts[2:]:  # simulate a scan killed after two complete parts
        p.unlink()
    s2 = scan(catalogue / "catalogue.jsonl", pipe, out, opts)
    assert s2.unchanged == 4 and s2.scanned == 7
    ids = [r["listing_id"] for r in read_results(out)]
    assert len(ids) == len(set(ids)) == 11


def test_incremental_scan_only_new_or_changed(tiny_bundle, catalogue):
    bundle = indexed_bundle(tiny_bundle, catalogue)
    pipe = Pipeline.from_bundle(bundle, require_index=True)
    out = catalogue / "scan"
    opts = ScanOptions(workers=0, batch_size=4, part_size=100, progress=False)
    scan(catalogue / "catalogue.jsonl", pipe, out, opts)
    # Next day: one new listing, and a seller replaced other_1's photo with a copy of cora's logo.
    save(blob_image(102)[5:235, 5:315], catalogue / "listings" / "other_1.jpg", quality=75)
    save(blob_image(103), catalogue / "listings" / "new.jpg", quality=80)
    with open(catalogue / "catalogue.jsonl", "a") as f:
        f.write(json.dumps({"listing_id": "new", "image": "listings/new.jpg"}) + "\n")
    # ...and the image of listing "gone", missing yesterday, has arrived.
    save(blob_image(101)[0:220, 0:300], catalogue / "listings" / "missing.jpg", quality=80)
    s2 = scan(catalogue / "catalogue.jsonl", pipe, out, opts)
    assert (s2.scanned, s2.changed) == (3, 2)  # new + replaced photo + the arrived one
    assert s2.unchanged == s2.total - 3
    rows = {r["listing_id"]: r for r in read_results(out)}
    assert len(rows) == 12
    assert rows["gone"]["verdict"] == "copy" and rows["gone"]["brand"] == "bolt"
    assert rows["other_1"]["verdict"] == "copy" and rows["other_1"]["brand"] == "cora"
    assert rows["new"]["brand"] == "dune" and len(rows["new"]["image_sha256"]) == 64


def test_index_add_and_reference_store(tiny_bundle, catalogue):
    bundle = indexed_bundle(tiny_bundle, catalogue)
    extra = catalogue / "extra"
    save(blob_image(300), extra / "echo" / "logo.png")
    assert main(["index", str(extra), "--out", str(bundle), "--add"]) == EXIT_OK
    pipe = Pipeline.from_bundle(bundle, require_index=True)
    assert pipe.index.brands() == sorted(BRANDS + ["echo"]) and pipe.index.generation == 2
    # the bundle holds its own copy of every reference image, so it can move
    for rec in pipe.index.records():
        assert (bundle / rec.source).is_file() and not Path(rec.source).is_absolute()
    assert main(["index", str(extra), "--out", str(bundle), "--add"]) == EXIT_USAGE  # duplicate ids


def test_geometric_verification_turns_a_weak_match_into_a_copy(tiny_bundle, catalogue):
    """A small crop of a reference pasted into a larger photo: weak embedding match, but ORB +
    RANSAC find the reference's region; the evidence carries inliers and the matched box."""
    import cv2

    from brandguard.engine.decide import Calibration

    refs = catalogue / "refs_textured"
    rng = np.random.default_rng(0)
    tex = (rng.random((240, 320, 3)) * 255).astype(np.uint8)
    tex = cv2.GaussianBlur(tex, (3, 3), 0)
    save(tex, refs / "tex" / "logo.png")
    for i in range(3):
        save(blob_image(400 + i), refs / f"other{i}" / "logo.png")
    out = catalogue / "b2"
    assert main(["index", str(refs), "--bundle", str(tiny_bundle), "--out", str(out)]) == EXIT_OK
    scene = blob_image(777, 480, 640)
    scene[100:340, 200:520] = tex
    pipe = Pipeline.from_bundle(out)
    pipe.calibration = Calibration(copy=0.99, knockoff=-1.0, method="test")  # force verification
    (v,) = pipe.check([cv2.imencode(".jpg", scene[..., ::-1])[1].tobytes()])
    g = v.evidence["geometry"]
    assert v.verdict == "copy" and v.brand == "tex" and v.evidence["decided_by"] == "geometric verification"
    assert g["inliers"] >= 15 and not g["mirrored"]
    x0, y0, x1, y1 = g["box"]
    assert abs(x0 - 200) < 25 and abs(y0 - 100) < 25 and abs(x1 - 520) < 25 and abs(y1 - 340) < 25
    assert abs(g["scale"] - 1.0) < 0.1


def test_check_bytes_and_regions(tiny_bundle, catalogue):
    bundle = indexed_bundle(tiny_bundle, catalogue)
    pipe = Pipeline.from_bundle(bundle, region_mode="grid")
    data = (catalogue / "listings" / "copy_bolt.jpg").read_bytes()
    v_ok, v_bad = pipe.check([data, b"\x00\x01garbage"])
    assert v_ok.verdict == "copy" and v_ok.brand == "bolt" and v_ok.evidence["region"] in (
        "full", "top_left", "top_right", "bottom_left", "bottom_right", "centre")
    assert v_bad.verdict == "inconclusive" and v_bad.reason == "not_an_image"
    d = v_ok.to_dict()
    assert d["top"][0]["reference_id"] == "bolt/logo" and json.dumps(d)


def test_tampered_model_refused(tiny_bundle, tmp_path):
    import shutil

    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    with open(b / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        Bundle.load(b)
    card = json.loads((tiny_bundle / CARD_FILE).read_text())
    card["input_size"] = 5
    (b / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(BundleError, match="input_size"):
        Bundle.load(b)


def test_index_built_for_another_model_is_refused_by_scan(tiny_bundle, catalogue, capsys):
    bundle = indexed_bundle(tiny_bundle, catalogue)
    import onnx
    from conftest import make_tiny_onnx

    from brandguard.vision.bundle import ModelCard, write_bundle

    # Swap in another model (same graph, other bytes, so another sha256) under the old index.
    model = onnx.load_from_string(make_tiny_onnx())
    model.doc_string = "retrained"
    card = json.loads((bundle / CARD_FILE).read_text())
    write_bundle(bundle, model.SerializeToString(), ModelCard.from_dict(card))
    rc = main(["scan", str(catalogue / "catalogue.jsonl"), "--bundle", str(bundle), "--out",
               str(catalogue / "scan2"), "--workers", "0", "--no-progress"])
    assert rc == EXIT_ARTIFACT
    assert "built with model" in capsys.readouterr().err


def test_eval_cli_writes_predictions_and_metrics(tiny_bundle, tmp_path):
    refs, queries = tmp_path / "R", tmp_path / "Q"
    for i in range(5):
        save(blob_image(200 + i), refs / f"brand{i}" / "logo.png")
        save(blob_image(200 + i)[20:220, 20:300], queries / f"q{i}.jpg", quality=70)
    save(blob_image(999), queries / "distractor.jpg")
    gt = tmp_path / "gt.csv"
    gt.write_text("query_id,reference_id\n" + "".join(f"q{i},brand{i}/logo\n" for i in range(5)))
    out = tmp_path / "eval"
    rc = main(["eval", "--references", str(refs), "--queries", str(queries), "--ground-truth", str(gt),
               "--out", str(out), "--bundle", str(tiny_bundle), "--k", "3"])
    assert rc == EXIT_OK
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines[0] == "query_id,reference_id,score" and len(lines) == 1 + 6 * 3
    m = json.loads((out / "metrics.json").read_text())
    assert m["recall_at_1"] == 1.0 and m["micro_ap"] > 0.9 and m["n_queries"] == 6


def test_cli_usage_errors_have_exit_codes(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["scan"])
    assert exc.value.code == 2
    rc = main(["index", str(tmp_path / "nope"), "--out", str(tmp_path / "b"), "--bundle", str(tmp_path)])
    assert rc == EXIT_ARTIFACT
    assert "model_card.json" in capsys.readouterr().err


def test_inference_imports_no_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
            "import brandguard.engine.pipeline, brandguard.vision.decode, brandguard.index.store\n"
            "import brandguard.scan.scanner, brandguard.scan.report, brandguard.cli.main, brandguard.evaluation.metrics\n"
            "import brandguard.inputs\n"
            "from brandguard.cli.main import build_parser; build_parser()\n"
            "assert 'torch' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
            "print('ok')")
    assert fresh_python(code) == "ok"


def test_decode_worker_imports_only_the_decoder():
    """A scan's decode workers start on every scan: their module must not pull in ONNX Runtime,
    FAISS, pyarrow or torch (0.4 s of imports per worker, and thread pools nobody uses there)."""
    code = ("import sys\n"
            "import brandguard.scan.worker\n"
            "heavy = {'onnxruntime', 'faiss', 'pyarrow', 'torch', 'torchvision', 'ray'}\n"
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    assert fresh_python(code) == "[]"


def test_ray_engine_matches_local(tiny_bundle, catalogue):
    pytest.importorskip("ray")
    bundle = indexed_bundle(tiny_bundle, catalogue)
    pipe = Pipeline.from_bundle(bundle, require_index=True)
    local = scan(catalogue / "catalogue.jsonl", pipe, catalogue / "local",
                 ScanOptions(workers=0, batch_size=4, progress=False))
    remote = scan(catalogue / "catalogue.jsonl", pipe, catalogue / "ray",
                  ScanOptions(engine="ray", workers=2, batch_size=4, progress=False))
    assert local.verdicts == remote.verdicts
    a, b = read_results(catalogue / "local"), read_results(catalogue / "ray")
    assert [r["listing_id"] for r in a] == [r["listing_id"] for r in b]
    for x, y in zip(a, b):
        assert (x["verdict"], x["brand"], x["reason"], x["top_reference_id"]) == \
               (y["verdict"], y["brand"], y["reason"], y["top_reference_id"])
        if x["score"] is not None:
            assert x["score"] == pytest.approx(y["score"], abs=1e-5)


def test_scan_cli_writes_report_with_thumbnails_and_jsonl(tiny_bundle, catalogue, capsys):
    bundle = indexed_bundle(tiny_bundle, catalogue)
    out = catalogue / "cli_scan"
    rc = main(["scan", str(catalogue / "catalogue.jsonl"), "--bundle", str(bundle), "--out", str(out),
               "--workers", "1", "--jsonl", "--no-progress"])
    assert rc == EXIT_OK
    printed = capsys.readouterr().out
    assert "copy_acme" in printed and "not_an_image" in printed  # the terminal table
    page = (out / "report.html").read_text()
    # one card per copy (listing + reference thumbnails) and per inconclusive row (listing only)
    assert page.count('class="card copy"') == 4 and page.count('class="card inconclusive"') == 4
    assert page.count("data:image/jpeg;base64,") >= 4 * 2
    assert "keypoints:" in page  # geometric evidence is shown for verified candidates
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 11 and all(json.loads(x)["verdict"] for x in lines)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdicts"]["inconclusive"] == 4 and summary["inconclusive_reasons"]["missing_file"] == 1


def test_eval_verify_top_ranks_geometric_copies_first(tiny_bundle, tmp_path):
    import cv2

    refs, queries = tmp_path / "R", tmp_path / "Q"
    rng = np.random.default_rng(3)
    for i in range(4):
        tex = cv2.GaussianBlur((rng.random((240, 320, 3)) * 255).astype(np.uint8), (3, 3), 0)
        save(tex, refs / f"brand{i}" / "logo.png")
        scene = blob_image(50 + i, 480, 640)
        scene[120:345, 150:450] = cv2.resize(tex, (300, 225))  # the reference, shrunk, inside a photo
        save(scene, queries / f"q{i}.jpg", quality=92)
    gt = tmp_path / "gt.csv"
    gt.write_text("query_id,reference_id\n" + "".join(f"q{i},brand{i}/logo\n" for i in range(4)))
    out = tmp_path / "eval"
    assert main(["eval", "--references", str(refs), "--queries", str(queries), "--ground-truth", str(gt),
                 "--out", str(out), "--bundle", str(tiny_bundle), "--k", "4", "--verify-top", "4"]) == EXIT_OK
    m = json.loads((out / "metrics.json").read_text())
    assert m["recall_at_1"] == 1.0 and m["micro_ap"] == pytest.approx(1.0) and m["verify_top"] == 4
    rows = [line.split(",") for line in (out / "predictions.csv").read_text().splitlines()[1:]]
    verified = [(q, r) for q, r, s in rows if float(s) > 1.0]
    assert sorted(verified) == [(f"q{i}", f"brand{i}/logo") for i in range(4)]


def test_pipeline_bounds_every_native_thread_pool(tiny_bundle: Path) -> None:
    """``threads`` reaches the BLAS pools too (numpy's and FAISS's OpenBLAS): left alone they keep
    one spinning thread per core after each matrix product, CPU a scan's decode workers need."""
    import faiss
    from threadpoolctl import threadpool_info

    pipe = Pipeline.from_bundle(tiny_bundle, threads=1)
    blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    assert blas, "numpy's BLAS is always loaded"
    assert all(p["num_threads"] == 1 for p in blas), blas
    assert faiss.omp_get_max_threads() == 1
    assert pipe.embedder.info.threads == 1
