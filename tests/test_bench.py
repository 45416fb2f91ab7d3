"""The benchmark harness, run for real in quick mode so it cannot rot.

One subprocess runs ``python benchmarks/run.py --quick`` exactly as ``make bench-quick`` does
(tiny corpus, 16 listings, FAISS at 2k/20k vectors, Ray with 1 and 2 workers); the tests then
check that results.json has every section with values that make sense. No timing is asserted:
speed targets live in the benchmark output only.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brandguard.evaluation.families import DISTRACTOR_FAMILIES, MARK_FAMILIES

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"


def _bench_module(name: str):  # noqa: ANN202
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return __import__(name)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    tmp = tmp_path_factory.mktemp("bench")
    out, doc = tmp / "out", tmp / "BENCHMARKS.md"
    out.mkdir()
    # what benchmarks/http_load.py writes, at its default place: OUT/http.json
    (out / "http.json").write_text(json.dumps({
        "date": "2026-01-01", "phases": [{"name": "closed_c8", "concurrency": 8, "requests": 40, "p50_ms": 180.5,
                                          "p99_ms": 420.0, "images_per_s": 123.5, "status": {"200": 40}}],
        "checks": {"all_answered": True}}))
    proc = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick", "--out", str(out), "--doc", str(doc)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads((out / "results.json").read_text()), out, doc


@pytest.mark.slow  # one real `bench-quick` run in a subprocess (~60 s): make test-all
def test_every_section_present_and_none_failed(quick_run) -> None:
    r, _, _ = quick_run
    for key in ("environment", "config", "model", "quality", "speed", "faiss", "http"):
        assert key in r, key
    for key in ("quality", "speed", "faiss"):
        assert "error" not in r[key], r[key].get("error")
        assert not r[key].get("skipped")
    assert r["mode"] == "quick"
    env = r["environment"]
    assert env["cores"] >= 1 and env["python"].startswith("3.")
    assert env["versions"]["onnxruntime"] and env["versions"]["faiss-cpu"]
    assert len(r["model"]["sha256"]) == 64 and r["model"]["embedding_dim"] > 0


@pytest.mark.slow  # one real `bench-quick` run in a subprocess (~60 s): make test-all
def test_quality_every_method_scored_with_the_same_metrics(quick_run) -> None:
    r, out, _ = quick_run
    from brandguard.evaluation.metrics import read_predictions

    q = r["quality"]
    all_methods = _bench_module("bench_common").ALL_METHODS
    assert set(q["methods"]) == set(all_methods)
    n_queries = q["dataset"]["n_queries"]
    assert n_queries > 0 and q["dataset"]["n_references"] > 0
    for name, m in q["methods"].items():
        assert m["error"] is None, (name, m["error"])
        for metric in ("micro_ap", "recall_at_p90", "recall_at_1"):
            assert 0.0 <= m["overall"][metric] <= 1.0, (name, metric, m["overall"])
        assert m["n_queries"] == n_queries, name
        preds = read_predictions(m["predictions"])
        assert 0 < len(preds) <= q["k"] * n_queries, name
        for fam in MARK_FAMILIES:
            assert 0.0 <= m["per_family"][fam]["micro_ap"] <= 1.0, (name, fam)
        for fam in DISTRACTOR_FAMILIES:
            assert "mean_top_score" in m["per_family"][fam], (name, fam)
    assert q["methods"]["brandguard"]["notes"]["model_sha256"] == r["model"]["sha256"]
    # light copies are near-duplicates: a perceptual hash and exhaustive ORB must find most of them
    for name in ("phash", "pdq", "orb"):
        assert q["methods"][name]["per_family"]["copy_light"]["recall_at_1"] >= 0.6, (name, q["methods"][name])
    assert q["methods"]["orb"]["notes"]["shortlist"] == "all"
    for key in ("overall", "per_family"):
        png = Path(q["figures"][key])
        assert png.parent == out and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


@pytest.mark.slow  # one real `bench-quick` run in a subprocess (~60 s): make test-all
def test_speed_rates_and_ratios(quick_run) -> None:
    r, _, _ = quick_run
    s = r["speed"]
    n = s["listings"]
    assert n == r["config"]["listings"] == 16
    rate_keys = ["decode_full_1proc", "decode_draft_1proc", "decode_limit_all_cores", "scan_local", "scan_ray_1w",
                 "scan_ray_2w", "imagededup_cnn", "imagededup_phash", "imagededup_phash_1proc"]
    rate_keys += [k for k in s if k.startswith("embed_batch32_")]
    assert any(k.startswith("embed_batch32_") for k in s)
    for key in rate_keys:
        v = s[key]
        assert "error" not in v, (key, v.get("error"))
        assert v["median_per_s"] > 0 and all(x > 0 for x in v["runs_per_s"]), key
    for key in ("decode_full_1proc", "decode_limit_all_cores", "scan_local", "scan_ray_2w", "imagededup_cnn"):
        assert s[key]["items"] == n, key
    for key in ("scan_local", "scan_ray_1w", "scan_ray_2w"):
        assert sum(s[key]["extra"]["verdicts"].values()) == n, key
    assert s["scan_ray_2w"]["extra"]["workers"] == 2 and s["scan_ray_2w"]["extra"]["engine"] == "ray"
    cnn = s["imagededup_cnn"]["extra"]
    assert cnn["weights"].startswith("random") and cnn["encoding_dim"] == 576  # MobileNetV3-small after pooling
    for key, value in s["ratios"].items():
        assert value is not None and math.isfinite(value) and value > 0, key
    lim = s["decode_limit_all_cores"]["median_per_s"]
    # ratios are stored rounded to 3 decimals
    assert s["ratios"]["scan_local_vs_decode_limit"] == pytest.approx(s["scan_local"]["median_per_s"] / lim, abs=6e-4)
    assert s["decode_full_all_cores"]["items"] == n and s["decode_full_all_cores"]["median_per_s"] > 0


@pytest.mark.slow  # one real `bench-quick` run in a subprocess (~60 s): make test-all
def test_stage_costs_add_up_and_bound_the_scan(quick_run) -> None:
    """The CPU breakdown is internally consistent: the stages the main process runs are inside
    its judge total, the total is the sum of the parts, and the ceiling follows from it."""
    r, _, _ = quick_run
    st = r["speed"]["stages"]
    ms = st["stages_cpu_ms_per_listing"]
    for key in ("read", "sha256", "decode", "resize", "normalise", "embed", "search", "judge_total_main_process"):
        assert ms[key] > 0, key
    # judge runs normalise + embed + search and more, measured separately; allow timer granularity
    assert ms["judge_total_main_process"] >= 0.8 * (ms["normalise"] + ms["embed"] + ms["search"])
    total = ms["read"] + ms["sha256"] + ms["decode"] + ms["resize"] + ms["judge_total_main_process"]
    assert st["total_cpu_ms_per_listing"] == pytest.approx(total, abs=1e-3)
    cores = r["speed"]["cores_used"]
    assert st["ceiling_per_s"] == pytest.approx(cores * 1e3 / total, rel=1e-3)
    assert st["ceiling_vs_decode_only"] == pytest.approx((ms["read"] + ms["decode"]) / total, abs=1e-3)
    from brandguard.vision.prepare import decode_side

    assert st["decode_side"] == decode_side(r["model"]["input_size"], "full")
    deep = r["speed"].get("deep_stages") or {}
    if deep.get("stages_cpu_ms_per_listing"):  # auto's keypoint glance is measured beside thorough's stages
        dms = deep["stages_cpu_ms_per_listing"]
        assert dms["glance_keypoints"] > 0 and dms["glance_search_fits"] >= 0
        assert dms["glance_keypoints"] < dms["keypoints_mirror_parts"]  # 400 px against 640 px with parts
        assert 0 <= deep["glance_routed"] <= deep["listings"] and deep["glance_rows_per_listing"] > 0


def test_ablation_report_from_results(tmp_path: Path) -> None:
    """The ablation table is generated from its results file: deltas against the baseline row."""
    abl = _bench_module("ablation")
    row = {f"{f}_{m}": 0.1 for f in MARK_FAMILIES for m in ("map", "r1")}
    res = {"command": "python benchmarks/ablation.py", "date": "2026-01-01 00:00 UTC", "cores": 2,
           "split": "data_cache/corpus_std/test", "steps": 10, "seed": 0,
           "variants": [{"variant": "baseline", "what": "recipe", "micro_ap": 0.25, "train_minutes": 1.0, **row},
                        {"variant": "no_koleo", "what": "no KoLeo", "micro_ap": 0.20, "train_minutes": 1.0, **row}],
           "length": [], "inference": [{"variant": "+ grid", "micro_ap": 0.3, "seconds": 5.0, **row}], "notes": []}
    text = abl.write_markdown(res, tmp_path / "ABLATION.md").read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("| no_koleo")]
    assert len(lines) == 1 and "| -0.050 |" in lines[0]
    assert "| baseline | recipe | 0.250 |  |" in text and "| + grid | 0.300 |" in text
    metrics = {"micro_ap": 0.5, "recall_at_1": 0.6,
               "per_family": {f: {"micro_ap": 0.1 * i, "recall_at_1": 0.2} for i, f in enumerate(MARK_FAMILIES)}}
    s = abl.summarise(metrics)
    assert s["micro_ap"] == 0.5 and s["knockoff_map"] == pytest.approx(0.3) and s["knockoff_r1"] == 0.2


@pytest.mark.slow  # one real `bench-quick` run in a subprocess (~60 s): make test-all
def test_faiss_sizes_factories_and_recall(quick_run) -> None:
    r, _, _ = quick_run
    from brandguard.index.factories import choose_factory

    f = r["faiss"]
    assert f["dim"] == r["model"]["embedding_dim"]
    flat, ivf = f["runs"]
    assert flat["factory"] == choose_factory(flat["n"]) == "IDMap2,Flat"
    assert ivf["factory"] == choose_factory(ivf["factory_chosen_for"]) and "IVF" in ivf["factory"]
    for run in (flat, ivf):
        assert run["bytes_per_vector"] >= 4 * f["dim"]  # float32 vectors are stored uncompressed
        assert run["build_s"] >= 0 and run["exact_search_qps"] > 0
        for row in run["search"]:
            assert 0.0 <= row["recall_at_1"] <= row["recall_at_10"] <= 1.0
            assert row["qps"] > 0 and row["qps_1thread"] > 0
    assert flat["search"][0]["recall_at_1"] == 1.0  # exact search agrees with brute force
    probes = [row["nprobe"] for row in ivf["search"]]
    assert probes[0] == 1 and probes == sorted(probes)
    from brandguard.index.factories import DEFAULT_NPROBE

    defaults = [row["nprobe"] for row in ivf["search"] if row.get("product_default")]
    nlist = int(ivf["factory"].split("IVF")[1].split(",")[0])
    assert defaults == [min(nlist, max(DEFAULT_NPROBE, nlist // 32))]  # what tune_search sets on load
    recalls = [row["recall_at_1"] for row in ivf["search"]]
    assert recalls == sorted(recalls)  # probing more lists can only find more true neighbours
    est = f["estimate_10M"]
    assert est["factory"] == choose_factory(10_000_000) and not est["measured"]
    assert 0 < est["memory_gb"] < est["raw_float32_gb"]


@pytest.mark.slow  # one real `bench-quick` run in a subprocess (~60 s): make test-all
def test_http_slot_and_markdown(quick_run) -> None:
    r, _, doc = quick_run
    assert r["http"]["provided"] and r["http"]["data"]["phases"][0]["images_per_s"] == 123.5
    text = doc.read_text()
    for heading in ("## Quality", "## Speed", "## FAISS search", "## HTTP service"):
        assert heading in text
    labels = _bench_module("bench_common").LABELS
    for label in labels.values():
        assert f"| {label} |" in text, label
    assert r["model"]["sha256"][:12] in text and f"{r['environment']['cores']} cores" in text
    assert "| closed_c8 | 8 | 40 | 180.50 | 420.00 | 123.50 | 200: 40 |" in text
    assert "| checks.all_answered | True |" in text
    assert "![PR curves, overall](" in text


def test_pr_curve_integrates_to_micro_ap() -> None:
    """The plotted curve is the one µAP integrates (same pooling, dedup and tie order)."""
    from brandguard.evaluation.metrics import Prediction, micro_ap

    pr_curve = _bench_module("bench_quality").pr_curve
    rng = np.random.default_rng(1)
    gt = {f"q{i}": {f"r{i}"} for i in range(30)}
    preds = [Prediction(f"q{q}", f"r{r}", float(rng.integers(0, 5))) for q in range(40) for r in rng.choice(30, 4)]
    preds += [Prediction(f"q{q}", f"r{q}", 4.0) for q in range(0, 30, 3)]
    c = pr_curve(preds, gt)
    area = float(np.sum(np.diff(np.concatenate([[0.0], c.recall])) * c.precision))
    assert area == pytest.approx(micro_ap(preds, gt)[0], abs=1e-9)
    assert area > 0


def test_hash_baseline_hamming_matches_bit_count() -> None:
    from brandguard.datasets.baselines import hamming_similarity

    rng = np.random.default_rng(0)
    q, r = rng.random((5, 64)) > 0.5, rng.random((7, 64)) > 0.5
    expected = -np.array([[np.count_nonzero(a != b) for b in r] for a in q])
    assert np.array_equal(hamming_similarity(q, r), expected)


def test_partial_run_reuses_earlier_sections_of_the_same_model(tmp_path: Path) -> None:
    """`--parts faiss` completes an earlier full results file instead of blanking its other parts,
    but never mixes in numbers of another model or another mode."""
    run = _bench_module("run")
    prev = {"mode": "full", "model": {"sha256": "a" * 64}, "environment": {"date": "2026-01-01 00:00 UTC"},
            "quality": {"methods": {}}, "speed": {"error": "boom"}, "faiss": {"runs": []}}
    (tmp_path / "results.json").write_text(json.dumps(prev))
    cfg = run.make_config(run.build_parser().parse_args(["--out", str(tmp_path), "--parts", "faiss"]))
    loaded = run._previous_results(cfg)
    assert loaded == prev
    assert run._reuse(loaded, "quality", "a" * 64) == {"methods": {}, "reused_from": "2026-01-01 00:00 UTC"}
    assert run._reuse(loaded, "speed", "a" * 64) == {"skipped": True}  # a failed part is not carried over
    assert run._reuse(loaded, "quality", "b" * 64) == {"skipped": True}  # another model's numbers never are
    quick = run.make_config(run.build_parser().parse_args(["--quick", "--out", str(tmp_path), "--parts", "faiss"]))
    assert run._previous_results(quick) == {}
    full = run.make_config(run.build_parser().parse_args(["--out", str(tmp_path)]))
    assert run._previous_results(full) == {}
