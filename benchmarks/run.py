"""brandguard benchmarks, one command: quality vs baselines, speed, FAISS scaling, descriptor index,
text marks (brand names written in photos).

    python benchmarks/run.py            # full run (what `make bench` calls); tens of minutes
    python benchmarks/run.py --quick    # smoke run on a tiny corpus and tiny sizes (CI); tens of seconds

Writes OUT/results.json (every number, the machine, the versions, the configuration),
OUT/pr_overall.png + OUT/pr_families.png (pooled precision-recall curves) and
docs/BENCHMARKS.md (tables generated from results.json).

Quality runs on the standard corpus's test split by default; point it at any DISC21-style
benchmark with --split DIR, or --references/--queries [--ground-truth] [--query-info]
(see benchmarks/README.md). Speed numbers are medians over --repeats and are reported as
ratios to the decode-only limit of this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (ALL_METHODS, DEFAULT_PHOTOS, REPO, STD_SPLIT, BenchConfig, Dataset,  # noqa: E402
                          environment, pin_threads, snapshot_bundle)

PARTS = ("quality", "speed", "faiss", "local_index", "text")
# descriptor counts of the local_index part (quick: the exact and the IVF-Flat factory)
LOCAL_INDEX_SIZES, LOCAL_INDEX_QUICK_SIZES = (1_000_000, 10_000_000), (10_000, 100_000)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny corpus, 16 listings, FAISS at 2k/20k vectors, 1 repeat: a smoke run")
    p.add_argument("--out", type=Path, default=REPO / "bench_out", help="output folder (default bench_out)")
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "BENCHMARKS.md", help="Markdown report to write")
    p.add_argument("--no-doc", action="store_true", help="do not write the Markdown report")
    p.add_argument("--doc-figures", type=Path, default=None,
                   help="also copy the PR-curve PNGs here and link them from the report (bench_out/ is git-ignored)")
    p.add_argument("--report-only", action="store_true",
                   help="measure nothing: re-read OUT/http.json (and flood.json) and regenerate the Markdown report from OUT/results.json")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="run only these parts")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2,
                   help="cores for multi-threaded parts: ONNX Runtime, FAISS, torch, decode and baseline pools")
    p.add_argument("--repeats", type=int, default=None, help="timing repeats, median reported (default 3; quick 1)")
    p.add_argument("--bundle", type=Path, default=None, help="model bundle (default: the shipped model)")
    g = p.add_argument_group("quality benchmark (DISC21 format, see benchmarks/README.md)")
    g.add_argument("--split", type=Path, default=None,
                   help=f"folder with references/, queries/, ground_truth.csv, queries.csv (default {STD_SPLIT.relative_to(REPO)})")
    g.add_argument("--references", type=Path, default=None, help="references folder (instead of --split)")
    g.add_argument("--queries", type=Path, default=None, help="queries folder (instead of --split)")
    g.add_argument("--ground-truth", type=Path, default=None, help="CSV query_id,reference_id")
    g.add_argument("--query-info", type=Path, default=None, help="CSV query_id,family for per-family metrics")
    g.add_argument("--k", type=int, default=10, help="predictions per query (default 10)")
    g.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=list(ALL_METHODS))
    g.add_argument("--orb-shortlist", type=int, default=0,
                   help="references per query that ORB+RANSAC verifies, shortlisted by tiny-image cosine "
                        "(default 0 = every reference, exhaustive)")
    g.add_argument("--orb-max-queries", type=int, default=None,
                   help="run ORB on a family-stratified subset of this many queries (0 = all; default 250, "
                        "quick: all): exhaustive ORB costs ~4 ms per query-reference pair per core")
    g = p.add_argument_group("speed and FAISS")
    g.add_argument("--photos", type=Path, default=None,
                   help=f"photos to make listing JPEGs from, searched recursively (default {DEFAULT_PHOTOS} when present, "
                        "else procedural images)")
    g.add_argument("--listings", type=int, default=None, help="listing JPEGs for speed (default 2000, so worker start-up is a small share; quick 16)")
    g.add_argument("--ray-workers", type=int, nargs="*", default=[1, 2],
                   help="Ray scans to time, by worker count (default 1 2; none to skip Ray)")
    g.add_argument("--faiss-sizes", type=int, nargs="+", default=None,
                   help="synthetic index sizes (default 100000 1000000; quick 2000 20000)")
    g.add_argument("--faiss-queries", type=int, default=None, help="queries per FAISS size (default 1000; quick 200)")
    g.add_argument("--http-results", type=Path, default=None,
                   help="JSON from the HTTP service benchmark (benchmarks/http_load.py), copied into the results "
                        "if present (default OUT/http.json)")
    return p


def make_config(a: argparse.Namespace) -> BenchConfig:
    if a.split and (a.references or a.queries):
        raise SystemExit("error: give --split or --references/--queries, not both")
    if bool(a.references) != bool(a.queries):
        raise SystemExit("error: --references and --queries go together")
    if a.references:
        ds = Dataset(a.references.as_posix(), a.references, a.queries, a.ground_truth, a.query_info)
    elif a.split:
        ds = Dataset.from_split(a.split)
    elif a.quick:
        ds = None  # built into OUT/corpus_tiny
    else:
        ds = Dataset.from_split(STD_SPLIT, "corpus_std/test")
    photos = a.photos
    if photos is None and DEFAULT_PHOTOS.is_dir():
        photos = DEFAULT_PHOTOS  # every split: 2000 listings need more than the 372 test photos
    sizes = tuple(a.faiss_sizes or ((2000, 20000) if a.quick else (100_000, 1_000_000)))
    # Quick mode times tiny indexes but with the factory the 100k size gets, so the IVF path runs too.
    factory_sizes = tuple(max(n, 100_000) if a.quick and i == len(sizes) - 1 else n for i, n in enumerate(sizes))
    return BenchConfig(
        quick=a.quick, out=a.out.resolve(), repeats=a.repeats or (1 if a.quick else 3), threads=max(1, a.threads),
        listings=a.listings or (16 if a.quick else 2000), photos=photos, bundle=a.bundle, dataset=ds, k=a.k,
        methods=tuple(a.methods), orb_shortlist=a.orb_shortlist,
        orb_max_queries=a.orb_max_queries if a.orb_max_queries is not None else (0 if a.quick else 250),
        faiss_sizes=sizes, faiss_factory_sizes=factory_sizes,
        faiss_queries=a.faiss_queries or (200 if a.quick else 1000), ray_workers=tuple(a.ray_workers or ()),
        http_results=a.http_results or a.out / "http.json", parts=tuple(a.parts), doc=None if a.no_doc else a.doc)


def ensure_dataset(cfg: BenchConfig, log) -> Dataset:  # noqa: ANN001
    """The quality benchmark: the configured one, or (quick) a tiny corpus built now."""
    if cfg.dataset is not None:
        if cfg.dataset.references == STD_SPLIT / "references" and not STD_SPLIT.is_dir():
            log(f"[quality] {STD_SPLIT} missing: building the standard corpus (minutes)")
            from brandguard.cli.main import main as cli_main

            argv = ["corpus", "--size", "standard", "--out", str(STD_SPLIT.parent)]
            if DEFAULT_PHOTOS.is_dir():
                argv += ["--photos", str(DEFAULT_PHOTOS)]
            if cli_main(argv) != 0:
                raise RuntimeError("building the standard corpus failed")
        return cfg.dataset
    from brandguard.datasets.corpus import build_corpus

    out = cfg.out / "corpus_tiny"
    build_corpus(out, size="tiny", seed=0, workers=1, splits=("test",), progress=False)
    return Dataset.from_split(out / "test", "corpus tiny/test (built by --quick)")


def read_http(path: Path) -> dict:
    """The HTTP service's numbers, if its benchmark has written them; else a placeholder."""
    path = Path(path).resolve()
    if path.is_relative_to(REPO):
        path = path.relative_to(REPO)
    if (REPO / path).is_file():
        try:
            return {"provided": True, "path": str(path), "data": json.loads((REPO / path).read_text(encoding="utf-8"))}
        except (OSError, json.JSONDecodeError) as exc:
            return {"provided": False, "expected_path": str(path), "error": f"unreadable: {exc}"}
    return {"provided": False, "expected_path": str(path)}


def _section(name: str, fn, log) -> dict:  # noqa: ANN001
    t0 = time.perf_counter()
    try:
        sec = fn()
    except Exception as exc:  # noqa: BLE001 - a failed part is reported, the others still run
        traceback.print_exc()
        sec = {"error": f"{type(exc).__name__}: {exc}"}
    sec["seconds"] = round(time.perf_counter() - t0, 2)
    log(f"[{name}] done in {sec['seconds']:.0f}s")
    return sec


def _previous_results(cfg: BenchConfig) -> dict:
    """The results file a partial run (``--parts``) completes, if it is of the same mode."""
    path = cfg.out / "results.json"
    if set(cfg.parts) == set(PARTS) or not path.is_file():
        return {}
    try:
        prev = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}
    return prev if prev.get("mode") == ("quick" if cfg.quick else "full") else {}


def _reuse(previous: dict, part: str, model_sha: str) -> dict:
    """A part not run this time keeps its earlier result when the same model produced it,
    marked with the run it came from; otherwise it is reported as skipped."""
    sec = previous.get(part)
    if not isinstance(sec, dict) or sec.get("skipped") or sec.get("error") or \
            (previous.get("model") or {}).get("sha256") != model_sha:
        return {"skipped": True}
    return {**sec, "reused_from": sec.get("reused_from") or (previous.get("environment") or {}).get("date")}


def run(cfg: BenchConfig, argv: list[str], log=print) -> dict:  # noqa: ANN001
    import cv2

    from brandguard.vision.bundle import Bundle

    cv2.setNumThreads(cfg.threads)
    t0 = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    previous = _previous_results(cfg)
    stale_outputs = {"quality": ("quality", "corpus_tiny", "pr_overall.png", "pr_families.png"), "speed": ("speed",)}
    for stale in ("model_bundle", *(x for part in cfg.parts for x in stale_outputs.get(part, ()))):
        target = cfg.out / stale
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    env = environment()
    bundle = snapshot_bundle(cfg.bundle, cfg.out / "model_bundle")
    card = Bundle.load(bundle).card
    results: dict = {
        "schema": "brandguard-bench/1", "mode": "quick" if cfg.quick else "full",
        "command": "python benchmarks/run.py" + (" " + " ".join(argv) if argv else ""),
        "environment": env,
        "config": json.loads(json.dumps(cfg.__dict__, default=str)),
        "model": {"name": card.name, "sha256": card.sha256, "architecture": card.architecture,
                  "input_size": card.input_size, "embedding_dim": card.embedding_dim,
                  "source": str(cfg.bundle or "shipped default bundle")},
    }
    ds: Dataset | None = None
    if "quality" in cfg.parts or "speed" in cfg.parts:
        ds = ensure_dataset(cfg, log)
    if "quality" in cfg.parts:
        from bench_quality import run_quality

        results["quality"] = _section("quality", lambda: run_quality(cfg, ds, bundle, log), log)
    else:
        results["quality"] = _reuse(previous, "quality", card.sha256)
    if "speed" in cfg.parts:
        from bench_speed import run_speed

        results["speed"] = _section("speed", lambda: run_speed(cfg, bundle, ds.references, log), log)
    else:
        results["speed"] = _reuse(previous, "speed", card.sha256)
    if "faiss" in cfg.parts:
        from bench_faiss import run_faiss

        results["faiss"] = _section("faiss", lambda: run_faiss(cfg, card.embedding_dim, log), log)
    else:
        results["faiss"] = _reuse(previous, "faiss", card.sha256)
    if "local_index" in cfg.parts:
        from bench_local_index import run_local_index_bench

        sizes = LOCAL_INDEX_QUICK_SIZES if cfg.quick else LOCAL_INDEX_SIZES
        results["local_index"] = _section("local_index", lambda: run_local_index_bench(
            sizes, threads=cfg.threads, repeats=cfg.repeats, log=log), log)
    else:
        results["local_index"] = _reuse(previous, "local_index", card.sha256)
    if "text" in cfg.parts:
        from bench_text import run_text

        std = ds if ds is not None else (Dataset.from_split(STD_SPLIT) if STD_SPLIT.is_dir() else None)
        std_split = Path(std.references).parent if std is not None and std.ground_truth else None
        results["text"] = _section("text", lambda: run_text(cfg, bundle, log, std_split=std_split), log)
    else:
        results["text"] = _reuse(previous, "text", card.sha256)
    results["http"] = read_http(cfg.http_results)
    results["flood"] = read_http(Path(cfg.http_results).with_name("flood.json"))  # benchmarks/flood.py
    results["seconds"] = round(time.perf_counter() - t0, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    if a.report_only:
        from bench_report import write_markdown

        path = a.out / "results.json"
        results = json.loads(path.read_text(encoding="utf-8"))
        results["http"] = read_http(a.http_results or a.out / "http.json")  # the load test may have run since
        results["flood"] = read_http((a.http_results or a.out / "http.json").with_name("flood.json"))
        path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"report: {write_markdown(results, a.doc)}")
        return 0
    cfg = make_config(a)
    pin_threads(cfg.threads)
    results = run(cfg, argv)
    path = cfg.out / "results.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    print(f"results: {path}")
    if cfg.doc is not None:
        from bench_report import write_markdown

        if a.doc_figures is not None and isinstance(results.get("quality"), dict):
            figs = results["quality"].get("figures") or {}
            a.doc_figures.mkdir(parents=True, exist_ok=True)
            for key, src in list(figs.items()):
                dest = a.doc_figures / Path(src).name
                shutil.copyfile(src, dest)
                figs[key] = str(dest)
        print(f"report: {write_markdown(results, cfg.doc)}")
    failed = [k for k in PARTS if isinstance(results.get(k), dict) and results[k].get("error")]
    if failed:
        print(f"error: parts failed: {', '.join(failed)} (see results.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
