"""``brandguard eval``: DISC21-style predictions and metrics, through exactly the pipeline ``scan`` runs."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from brandguard.cli.common import (EXIT_OK, EXIT_USAGE, add_bundle_arg, add_depth_args, add_registry_arg,
                                   add_runtime_args, depth_options, positive_int, resolve_bundle)


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    add_depth_args(p)
    add_bundle_arg(p)
    add_registry_arg(p)
    add_runtime_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from brandguard.evaluation.metrics import evaluate, read_ground_truth, read_query_families, write_predictions
    from brandguard.evaluation.predictions import predict
    from brandguard.engine.pipeline import Pipeline

    pipe = Pipeline.from_bundle(resolve_bundle(args), threads=args.threads, device=args.device,
                                region_mode=args.regions, depth=depth_options(args))
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
