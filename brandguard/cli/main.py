"""The ``brandguard`` command line.

Heavy imports happen inside each command, after thread counts are set from the arguments,
so ``brandguard --help`` is instant and no library starts a thread pool of its own size.
Only this module imports ``training`` (for ``brandguard train``), lazily.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_ARTIFACT = 0, 1, 2, 3

SCAN_EPILOG = """\
images: a row's image path is relative to the catalogue file, and must lie under the
  catalogue's folder (symlinks resolved); a row naming another path is judged inconclusive
  (reason path_outside_root). --image-root DIR confines to DIR instead; --allow-absolute-paths
  reads any path. Only regular files are read (a FIFO or device: not_a_regular_file), up to
  the size limit (file_too_large).

exit codes: 0 scan complete (bad rows become inconclusive rows with a reason: bad_row,
            bad_price, missing_image, missing_file, path_outside_root, not_a_regular_file,
            not_an_image, ...; they never stop the scan) · 1 unexpected failure ·
            2 bad arguments or unusable input as a whole, reported in one line: a catalogue
            that is missing, empty or a header only, not the format its name says (e.g. a
            .parquet that is not Parquet), without a listing_id or image column, or with
            columns of the wrong type · 3 bundle, index or registry missing, corrupted or
            mismatched
"""

EPILOG = """\
exit codes: 0 success · 1 unexpected failure · 2 bad arguments or input data ·
            3 bundle, index or registry version missing, corrupted or mismatched ·
            4 (train brand) the evaluation gate rejected the candidate

typical workflow:
  brandguard index refs/ --out my_bundle          # register brand imagery (uses the shipped model)
  brandguard scan catalogue.jsonl --bundle my_bundle --out scan/
  brandguard eval --references R --queries Q --ground-truth gt.csv --out eval/
  brandguard demo --out demo_out                   # everything above on a generated catalogue
  brandguard serve create-key scanner --leads-db leads.sqlite   # prints an API key once
  brandguard serve --bundle my_bundle --leads-db leads.sqlite   # HTTP API on 127.0.0.1:8080
  brandguard train brand acme --references refs/ --registry REG --leads-db leads.sqlite
  brandguard scan catalogue.jsonl --registry REG --out scan/   # what REG's "default" deployment serves
"""


def set_threads(threads: int) -> None:
    """Pin every numeric library's thread pool before it is imported (OpenMP reads env once)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(threads)
    import cv2

    cv2.setNumThreads(threads)


def _add_bundle_arg(p: argparse.ArgumentParser, help_extra: str = "") -> None:
    p.add_argument("--bundle", type=Path, default=None,
                   help="bundle folder (model.onnx + model_card.json [+ index]); default: the shipped model"
                   + help_extra)


def _add_registry_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", type=Path, default=None,
                   help="model registry: use the bundle its --deployment currently serves (instead of --bundle)")
    p.add_argument("--deployment", default="default", help="registry deployment name (default: default)")


def _resolve_bundle(args: argparse.Namespace) -> Path | None:
    """--bundle, or the registry deployment's current version (verified file by file)."""
    from brandguard.registry import resolve_bundle

    return resolve_bundle(args.bundle, getattr(args, "registry", None), getattr(args, "deployment", "default"))


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (0 or negative sizes would loop or divide by zero)."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=positive_int, default=1, help="ONNX Runtime / FAISS / OpenCV threads (default 1)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda uses onnxruntime's CUDA provider when installed, else falls back to cpu")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (for logs)")


def _add_depth_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--depth", choices=("fast", "thorough", "auto"), default="auto",
                   help="fast: global embedding only (hundreds of listings/s per core); thorough: + local "
                        "features (keypoints in a descriptor index, RANSAC geometry) on every image, which finds "
                        "marks small inside photos and mirrored knockoffs; auto (default): local features only "
                        "where the global score passes the calibrated gate, a brand hint or the title names a "
                        "registered brand, or the --audit-share draw picks the listing. A bundle without local "
                        "features runs fast")
    p.add_argument("--audit-share", type=float, default=0.0,
                   help="auto depth: share of other listings sent through the local stage at random (0-1)")


def _depth(args: argparse.Namespace):  # noqa: ANN202
    from brandguard.engine.pipeline import DepthOptions

    return DepthOptions(args.depth, args.audit_share)


# ------------------------------------------------------------------------- index
def cmd_index(args: argparse.Namespace) -> int:
    from brandguard.inputs import read_references
    from brandguard.references import add_references, build_index, bundle_lock, new_bundle_from
    from brandguard.vision.bundle import Bundle, default_bundle_path
    from brandguard.engine.pipeline import Pipeline

    t0 = time.perf_counter()
    model = None if args.add else Bundle.load(args.bundle or default_bundle_path())  # fail fast on artifacts
    rows = read_references(args.references)
    vocabulary = None
    if args.brands is not None:
        from brandguard.engine.textmarks import read_vocabulary

        vocabulary = read_vocabulary(args.brands)
    # the bundle lock: a running service neither reloads half a change nor cleans its new images
    if model is None:
        pipe = Pipeline.from_bundle(args.out, threads=args.threads, device=args.device, require_index=True)
        with bundle_lock(args.out, exclusive=True):
            report = add_references(pipe, rows, vocabulary=vocabulary)
        verb = "added"
    else:
        out = new_bundle_from(model, Path(args.out))
        pipe = Pipeline.from_bundle(out, threads=args.threads, device=args.device)
        with bundle_lock(out, exclusive=True):
            _, report = build_index(pipe, rows, factory=args.factory, threads=args.threads, vocabulary=vocabulary)
        verb = "indexed"
    for ref_id, reason in report.skipped:
        print(f"warning: reference {ref_id} skipped: {reason}", file=sys.stderr)
    print(f"{verb} {report.indexed} references of {report.brands} brands into {args.out} "
          f"({report.factory}{', rebuilt by the size rule' if report.rebuilt else ''}, "
          f"generation {report.generation}, {time.perf_counter() - t0:.1f}s)"
          + (f"; {len(report.skipped)} unreadable, listed above" if report.skipped else ""))
    return EXIT_USAGE if report.skipped and args.strict else EXIT_OK


# ------------------------------------------------------------------------- scan
def cmd_scan(args: argparse.Namespace) -> int:
    from brandguard.scan.report import terminal_table, write_html_report
    from brandguard.scan.results import read_results
    from brandguard.scan.scanner import ScanOptions, scan, scan_root
    from brandguard.engine.pipeline import Pipeline

    pipe = Pipeline.from_bundle(_resolve_bundle(args), threads=args.threads, device=args.device,
                                region_mode=args.regions, require_index=True, depth=_depth(args))
    opts = ScanOptions(engine=args.engine, workers=args.workers, threads=args.threads, batch_size=args.batch_size,
                       part_size=args.part_size,
                       region_mode=args.regions, write_jsonl=args.jsonl, progress=not args.no_progress,
                       leads_db=args.leads_db, brand_info=args.brand_info, image_root=args.image_root,
                       allow_absolute_paths=args.allow_absolute_paths)
    summary = scan(args.catalogue, pipe, args.out, opts)
    rows = read_results(args.out)
    if not args.no_report:
        refs = {r.reference_id: pipe.source_path(r.source) for r in pipe.index.records()}
        page = write_html_report(rows, refs, Path(args.out) / "report.html",
                                 title=f"brandguard scan of {Path(args.catalogue).name}",
                                 summary=json.loads(summary.to_json()), image_root=scan_root(args.catalogue, opts))
        print(f"report: {page}")
    if not args.quiet:
        print(terminal_table(rows))
    print(f"scanned {summary.scanned} of {summary.total} listings ({summary.changed} with a changed image), "
          f"skipped {summary.unchanged} already scanned and unchanged, "
          f"in {summary.seconds:.1f}s ({summary.images_per_second:.1f} img/s): "
          + ", ".join(f"{k} {v}" for k, v in sorted(summary.verdicts.items()))
          + f"; leads {summary.leads} ({summary.new_leads} new in the store), authorised sellers {summary.authorized}")
    return EXIT_OK


# ------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    from brandguard.evaluation.metrics import evaluate, read_ground_truth, read_query_families, write_predictions
    from brandguard.evaluation.predictions import predict
    from brandguard.engine.pipeline import Pipeline

    pipe = Pipeline.from_bundle(_resolve_bundle(args), threads=args.threads, device=args.device,
                                region_mode=args.regions, depth=_depth(args))
    t0 = time.perf_counter()
    run = predict(pipe, args.references, args.queries, k=args.k, verify_top=args.verify_top)
    if not run.query_ids or run.n_references == 0:
        print("error: references and queries must each hold at least one readable image", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = write_predictions(out / "predictions.csv", run.predictions)
    dt = time.perf_counter() - t0
    print(f"wrote {n} predictions for {len(run.query_ids)} queries against {run.n_references} references "
          f"to {out / 'predictions.csv'} ({dt:.1f}s, regions {args.regions}, depth {pipe.depth.depth})")
    if run.unreadable_queries or run.unreadable_references:
        print(f"warning: {len(run.unreadable_queries)} queries and {len(run.unreadable_references)} references "
              f"could not be decoded and have no predictions", file=sys.stderr)
    if args.ground_truth:
        gt = read_ground_truth(args.ground_truth)
        fams = read_query_families(args.query_info) if args.query_info else None
        metrics = evaluate(run.predictions, gt, run.query_ids, fams)
        metrics.update(model_sha256=pipe.card.sha256, k=args.k, seconds=round(dt, 2), regions=args.regions,
                       verify_top=args.verify_top, depth=pipe.depth.depth, local_stage=dict(pipe.depth_counts),
                       unreadable_queries=len(run.unreadable_queries))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        print(f"µAP {metrics['micro_ap']:.4f} · recall@P90 {metrics['recall_at_p90']:.4f} · "
              f"recall@1 {metrics['recall_at_1']:.4f}  → {out / 'metrics.json'}")
        for fam, m in metrics.get("per_family", {}).items():
            if "micro_ap" in m:
                print(f"  {fam:<24} n={m['n_queries']:<5} µAP {m['micro_ap']:.4f}  recall@1 {m['recall_at_1']:.4f}")
    return EXIT_OK


# ------------------------------------------------------------------------- background
def cmd_background(args: argparse.Namespace) -> int:
    from brandguard.evaluation.metrics import read_query_families
    from brandguard.inputs import list_images
    from brandguard.engine.background import write_background
    from brandguard.engine.pipeline import Pipeline

    paths: list[str] = []
    if args.split is not None:
        families = read_query_families(args.split / "queries.csv")
        paths += [str(args.split / "queries" / f"{q}.jpg") for q, fam in families.items() if fam.startswith("distractor")]
    for folder in args.images or []:
        paths += [str(p) for _, p in list_images(folder)]
    paths = paths[: args.max]
    if len(paths) < args.k:
        print(f"error: need at least {args.k} background images, found {len(paths)}", file=sys.stderr)
        return EXIT_USAGE
    pipe = Pipeline.from_bundle(args.bundle, threads=args.threads, device=args.device)
    vecs, errors = pipe.embed_sources(paths)
    keep = [i for i, e in enumerate(errors) if e is None]
    meta = write_background(pipe.bundle.path, pipe.card, vecs[keep], k=args.k, beta=args.beta,
                            source=f"{len(keep)} images: " + ", ".join(
                                str(x) for x in ([args.split] if args.split else []) + list(args.images or [])))
    print(f"background of {meta.count} images (k={meta.k}, beta={meta.beta}) written to {pipe.bundle.path}; "
          f"recalibrate: scores are now normalised")
    return EXIT_OK


# ------------------------------------------------------------------------- calibrate
def cmd_calibrate(args: argparse.Namespace) -> int:
    from brandguard.evaluation.calibration import run_calibration, run_deep_calibration
    from brandguard.vision.bundle import Bundle

    if args.stage in ("global", "both"):
        report = run_calibration(args.bundle, args.split, target=args.target, threads=args.threads,
                                 region_mode=args.regions)
        print(f"flag (knockoff) threshold {report['flag_threshold']:.4f} at precision {report['flag_precision']:.3f}; "
              f"copy threshold {report['copy_threshold']:.4f} at precision {report['copy_precision']:.3f} "
              f"({report['n_queries']} queries, {report['seconds']:.0f}s) -> {args.bundle / 'calibration.json'}")
        for fam, m in report["per_family"].items():
            print(f"  {fam:<24} n={m['n']:<5} flagged {m['flagged']:<5} right brand {m['flagged_right_brand']}")
    if args.stage == "deep" or (args.stage == "both" and Bundle.load(args.bundle).card.local_features):
        deep = run_deep_calibration(args.bundle, args.split, target=args.target, threads=args.threads,
                                    progress=not args.no_progress)
        print(f"deep stage: flag at fused probability {deep['flag_threshold']:.4f} (precision "
              f"{deep['flag_precision']:.3f}); copy = >= {deep['copy_inliers']} inliers covering >= "
              f"{deep['copy_area']:.0%} of the photo (precision {deep['copy_precision']:.3f}); auto gate "
              f"{deep['auto_gate']:.4f} keeps {deep['auto_keeps_right_flags']} of right flags ({deep['seconds']:.0f}s)")
        for fam, m in deep["per_family"].items():
            print(f"  {fam:<24} n={m['n']:<5} flagged {m['flagged']:<5} right brand {m['flagged_right_brand']}")
    if args.report_split is not None:
        from brandguard.evaluation.calibration import run_verdict_report

        vr = run_verdict_report(args.bundle, args.report_split, threads=args.threads, region_mode=args.regions)
        dest = args.bundle / f"verdicts_{args.report_split.name}.json"
        dest.write_text(json.dumps(vr, indent=2, sort_keys=True) + "\n")
        print(f"verdicts on {args.report_split}: flag precision {vr['flag_precision']}, copy precision "
              f"{vr['copy_precision']} -> {dest}")
        print("  expected \\ found   " + "".join(f"{k:>14}" for k in ("copy", "knockoff", "clear", "inconclusive")))
        for exp, row in vr["confusion"].items():
            print(f"  {exp:<18}" + "".join(f"{row[k]:>14}" for k in ("copy", "knockoff", "clear", "inconclusive")))
        for fam, m in vr["per_family"].items():
            print(f"  {fam:<24} n={m['n']:<5} recall {m['recall']}  false-flag rate {m['false_flag_rate']}")
    return EXIT_OK


# ------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from brandguard.cli.demo import run_demo

    return run_demo(Path(args.out), threads=args.threads, workers=args.workers)


# ------------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    from brandguard.serve.__main__ import run

    return run(args)


# ------------------------------------------------------------------------- corpus / train
def cmd_corpus(args: argparse.Namespace) -> int:
    from brandguard.datasets import corpus

    return corpus.run(args)


def cmd_train(args: argparse.Namespace) -> int:
    from brandguard.training import retrain

    return retrain.run(args)


def cmd_registry(args: argparse.Namespace) -> int:
    from brandguard import registry

    return registry.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brandguard", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Find copies and knockoffs of registered brand imagery in marketplace listing photos.")
    from brandguard import __version__

    parser.add_argument("--version", action="version", version=f"brandguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("index", help="register brand reference images: embed them and build the FAISS index",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=(
                           "Embed reference images and write a bundle with a FAISS index.\n\n"
                           "REFERENCES is a folder laid out <brand>/<name>.png, or a JSONL/CSV/Parquet file\n"
                           "with columns brand, path [, reference_id, sku, kind] (paths relative to the file).\n"
                           "The model (model.onnx + card) is copied into --out, which becomes a complete\n"
                           "bundle: pass it to `scan` as --bundle."))
    p.add_argument("references", type=Path)
    _add_bundle_arg(p, " to take the model from")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write (created if missing)")
    p.add_argument("--factory", default=None,
                   help="FAISS factory string (default: chosen by size: IDMap2,Flat below 100k references)")
    p.add_argument("--add", action="store_true",
                   help="add REFERENCES to the existing index in --out instead of rebuilding it")
    p.add_argument("--strict", action="store_true", help="exit 2 if any reference image is unreadable")
    p.add_argument("--brands", type=Path, default=None,
                   help='JSON {brand: {"names": [...], "aliases": [...], "zh": [...]}} (the brands.json of scan\'s '
                        "--brand-info; other keys are ignored): what each brand is called, for brand names "
                        "written in photos and titles (thorough/auto depth); stored with the index. Without "
                        "it a brand is known by its id")
    _add_runtime_args(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("scan", help="check every listing image of a catalogue; write results and a report",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=(
                           "Scan a catalogue: JSONL/CSV/Parquet with listing_id, image [, seller_id, title, price,\n"
                           "brand_hint], or a folder of images. Writes OUT/results.parquet (one row per listing:\n"
                           "verdict copy|knockoff|clear|inconclusive, brand, confidence, top references,\n"
                           "evidence), OUT/summary.json and OUT/report.html. Bad rows become inconclusive\n"
                           "rows with a reason; the scan never stops for them. Re-running the same command\n"
                           "after an interruption resumes where it stopped."), epilog=SCAN_EPILOG)
    p.add_argument("catalogue", type=Path)
    _add_bundle_arg(p, "; must hold an index (see `brandguard index`)")
    _add_registry_arg(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="decode worker processes (default: one per core; the embedder in the main process "
                        "shares them, measured faster than cores - 1; 0 decodes in-process)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per ONNX Runtime batch (default 64)")
    p.add_argument("--part-size", type=positive_int, default=2048,
                   help="results per checkpointed part file (default 2048): at most this much work is redone "
                        "after an interruption")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: decode worker processes + one embedder; ray: --workers Ray actors, each with "
                        "its own model and index (set RAY_ADDRESS to use a cluster)")
    p.add_argument("--regions", choices=("full", "grid"), default="full",
                   help="full: one embedding per image; grid: + 5 crops, finds small logos, ~6x slower")
    p.add_argument("--jsonl", action="store_true", help="also write OUT/results.jsonl")
    p.add_argument("--leads-db", type=Path, default=None,
                   help="SQLite leads store: flagged listings become leads (status new) for their brand")
    p.add_argument("--brand-info", type=Path, default=None,
                   help='JSON {brand: {"authorized_sellers": [...], "reference_prices": {sku: price}, '
                        '"default_price": p}}: authorised sellers are not leads; low prices raise the risk')
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--quiet", action="store_true", help="do not print the results table")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--image-root", type=Path, default=None,
                       help="folder every listing image must lie under (default: the catalogue's folder)")
    where.add_argument("--allow-absolute-paths", action="store_true",
                       help="read listing images at any path (trusted catalogues only)")
    _add_depth_args(p)
    _add_runtime_args(p)
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("eval", help="DISC21-style evaluation: predictions.csv and µAP / recall metrics",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=(
                           "Embed a references folder and a queries folder (any JPEG/PNG/WebP images; an image's\n"
                           "id is its path relative to the folder without extension), search the k nearest\n"
                           "references of every query and write OUT/predictions.csv (query_id,reference_id,score).\n"
                           "With --ground-truth (query_id,reference_id rows; queries without a row are\n"
                           "distractors) also write OUT/metrics.json: µAP as in the Image Similarity Challenge\n"
                           "2021, recall at 90% precision, recall@1 (and per family with --query-info)."))
    p.add_argument("--references", type=Path, required=True)
    p.add_argument("--queries", type=Path, required=True)
    p.add_argument("--ground-truth", type=Path, default=None)
    p.add_argument("--query-info", type=Path, default=None,
                   help="CSV with query_id,family for per-family metrics (the corpus's queries.csv)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--k", type=positive_int, default=10, help="predictions per query (default 10)")
    p.add_argument("--regions", choices=("full", "grid"), default="full",
                   help="query regions searched, as in `scan` (grid: + 5 crops, finds small logos)")
    p.add_argument("--verify-top", type=int, default=0,
                   help="check the N best references of each query with local features (ORB + RANSAC), as "
                        "the verdict step does, and rank geometrically verified ones first (default 0: off; "
                        "fast depth only)")
    _add_depth_args(p)
    _add_bundle_arg(p)
    _add_registry_arg(p)
    _add_runtime_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("background", help="store background vectors that normalise scores (SSCD-style)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=(
                           "Embed images that show no registered mark (a corpus split's distractor queries with\n"
                           "--split, and/or folders with --images) and store them in the bundle. Scores become\n"
                           "cosine minus the mean of the query's k nearest background similarities (x beta),\n"
                           "which makes one threshold fit busy and plain images alike. Recalibrate afterwards."))
    p.add_argument("--bundle", type=Path, required=True, help="bundle to write the background into")
    p.add_argument("--split", type=Path, default=None, help="corpus split whose distractor queries are used")
    p.add_argument("--images", type=Path, action="append", help="folder of background images (repeatable)")
    p.add_argument("--k", type=positive_int, default=5, help="nearest background images averaged (default 5)")
    p.add_argument("--beta", type=float, default=0.25,
                   help="weight of the background term (default 0.25, chosen on the val split: µAP 0.126 -> 0.134)")
    p.add_argument("--max", type=positive_int, default=20000, help="at most this many images (default 20000)")
    _add_runtime_args(p)
    p.set_defaults(func=cmd_background)

    p = sub.add_parser("calibrate", help="set verdict thresholds for a target precision on labelled held-out data",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=(
                           "Judge every query of a corpus split (references/, queries/, ground_truth.csv,\n"
                           "queries.csv with a family per query) against an index of its references, choose the\n"
                           "flag and copy thresholds that reach --target precision, and write them to\n"
                           "BUNDLE/calibration.json (with BUNDLE/calibration_report.json: precision and recall\n"
                           "per family). Use a split of brands the model was not trained on."))
    p.add_argument("--bundle", type=Path, required=True, help="bundle whose model is calibrated (written into)")
    p.add_argument("--split", type=Path, required=True, help="labelled corpus split, e.g. data_cache/corpus_std/val")
    p.add_argument("--target", type=float, default=0.95, help="precision to reach (default 0.95)")
    p.add_argument("--stage", choices=("global", "deep", "both"), default="both",
                   help="global: cosine thresholds; deep: the fusion of global and local evidence (thorough/auto "
                        "depth) and its thresholds; both (default; deep only when the bundle has local features)")
    p.add_argument("--report-split", type=Path, default=None,
                   help="then judge this labelled split (e.g. the test split) with the new thresholds and write "
                        "BUNDLE/verdicts_<split>.json: copy/knockoff/clear confusion matrix, precision, recall")
    p.add_argument("--regions", choices=("full", "grid"), default="full")
    _add_runtime_args(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("demo", help="build a demo catalogue from real logos, index, scan, report")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_demo)

    # Importing brandguard.serve.__main__ is cheap (argparse only); FastAPI loads in `run`.
    from brandguard.serve import __main__ as serve_cli

    p = sub.add_parser("serve", help="run the HTTP service (check, leads, complaints, review page)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=(
                           "Serve one indexed bundle over HTTP with micro-batched inference (needs the serve\n"
                           "extra). Options fall back to BRANDGUARD_* environment variables. The default host\n"
                           "is 127.0.0.1. `brandguard serve create-key ROLE` makes an API key (admin, scanner\n"
                           "or brand:<name>) and prints its token once."))
    serve_cli.add_arguments(p)
    p.set_defaults(func=cmd_serve)

    try:
        from brandguard.datasets import corpus
    except ImportError:
        corpus = None
    if corpus is not None and hasattr(corpus, "add_arguments"):
        p = sub.add_parser("corpus", help="build the brand-imagery corpus and DISC21-style benchmarks",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           description=(corpus.__doc__ or "").strip())
        corpus.add_arguments(p)
        p.set_defaults(func=cmd_corpus)

    # Importing these is cheap and torch-free (torch loads inside the training functions).
    from brandguard import registry
    from brandguard.training import retrain

    p = sub.add_parser("train", help="retrain: `train brand BRAND` fine-tunes, gates and registers a model "
                       "for one brand; `train base` runs the base recipe into a registry",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=retrain.__doc__)
    retrain.add_arguments(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("registry", help="model registry: list versions, promote, roll back",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=registry.__doc__)
    registry.add_arguments(p)
    p.set_defaults(func=cmd_registry)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Thread counts must be in the environment before numpy/OpenCV load their pools, and
    # building the parser imports subcommand modules: read --threads first.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", type=positive_int, default=1)
    known, _ = pre.parse_known_args(argv)
    set_threads(max(1, known.threads))
    parser = build_parser()
    args = parser.parse_args(argv)
    from brandguard.errors import BrandguardError, BundleError, InputError, ReferenceIndexError
    from brandguard.registry import RegistryError

    try:
        return int(args.func(args) or 0)
    except (BundleError, ReferenceIndexError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ARTIFACT
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrandguardError as exc:  # training, gate and other typed failures: still no traceback
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ARTIFACT
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
