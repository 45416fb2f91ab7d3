"""``brandguard calibrate`` (verdict thresholds on labelled held-out data) and ``brandguard background``
(the score background the thresholds are set on)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from brandguard.cli.common import EXIT_OK, EXIT_USAGE, add_runtime_args, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    add_runtime_args(p)
    p.set_defaults(func=run_background)

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
    add_runtime_args(p)
    p.set_defaults(func=run_calibrate)


def run_background(args: argparse.Namespace) -> int:
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


def run_calibrate(args: argparse.Namespace) -> int:
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
              f"{deep['flag_precision']:.3f}"
              + (f"; outline fits alone from {deep['shape_flag_threshold']:.4f}, precision "
                 f"{deep['shape_flag_precision']:.3f} over their {deep['shape_flags_at_flag']} flags"
                 if deep.get("shape_flag_threshold") is not None else "")
              + f"); copy = >= {deep['copy_inliers']} inliers covering >= "
              f"{deep['copy_area']:.0%} of the photo (precision {deep['copy_precision']:.3f}); auto's global gate "
              f"{deep['auto_gate']:.4f} alone keeps {deep['auto_keeps_right_flags']} of right flags, its keypoint "
              f"glance sends more ({deep['seconds']:.0f}s)")
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
