"""``brandguard scan``: judge every listing of a catalogue; results, leads and a report."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from brandguard.cli.common import (EXIT_OK, add_bundle_arg, add_depth_args, add_registry_arg, add_runtime_args,
                                   depth_options, positive_int, resolve_bundle)

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


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scan", help="check every listing image of a catalogue; write results and a report",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=(
                           "Scan a catalogue: JSONL/CSV/Parquet with listing_id, image [, seller_id, title, price,\n"
                           "brand_hint], or a folder of images. Writes OUT/results.parquet (one row per listing:\n"
                           "verdict copy|knockoff|clear|inconclusive, brand, confidence, top references,\n"
                           "evidence), OUT/summary.json and OUT/report.html. Bad rows become inconclusive\n"
                           "rows with a reason; the scan never stops for them. Re-running the same command\n"
                           "after an interruption resumes where it stopped."), epilog=SCAN_EPILOG)
    p.add_argument("catalogue", type=Path)
    add_bundle_arg(p, "; must hold an index (see `brandguard index`)")
    add_registry_arg(p)
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
                   help="SQLite leads store: flagged listings become leads (status new) for their brand, with "
                        "their thumbnail and original image (see --media-dir), as the service's checks make them")
    p.add_argument("--media-dir", type=Path, default=None,
                   help="where leads' listing images are stored (default: media/ beside --leads-db, where "
                        "`brandguard serve` looks; give the service's --media-dir if it has one)")
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
    add_depth_args(p)
    add_runtime_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from brandguard.engine.pipeline import Pipeline
    from brandguard.scan.scanner import ScanOptions

    pipe = Pipeline.from_bundle(resolve_bundle(args), threads=args.threads, device=args.device,
                                region_mode=args.regions, require_index=True, depth=depth_options(args))
    opts = ScanOptions(engine=args.engine, workers=args.workers, threads=args.threads, batch_size=args.batch_size,
                       part_size=args.part_size,
                       region_mode=args.regions, write_jsonl=args.jsonl, progress=not args.no_progress,
                       leads_db=args.leads_db, brand_info=args.brand_info, media_dir=args.media_dir,
                       image_root=args.image_root,
                       allow_absolute_paths=args.allow_absolute_paths)
    scan_and_report(pipe, args.catalogue, args.out, opts, report=not args.no_report, table=not args.quiet)
    return EXIT_OK


def scan_and_report(pipe, catalogue: Path, out: Path, opts, report: bool = True,  # noqa: ANN001
                    table: bool = True):  # noqa: ANN201 - the ScanSummary
    """Scan, write the HTML report, print the results table and a one-line summary."""
    from brandguard.scan.report import terminal_table, write_html_report
    from brandguard.scan.results import read_results
    from brandguard.scan.scanner import scan, scan_root

    summary = scan(catalogue, pipe, out, opts)
    rows = read_results(out)
    if report:
        refs = {r.reference_id: pipe.source_path(r.source) for r in pipe.index.records()}
        page = write_html_report(rows, refs, Path(out) / "report.html",
                                 title=f"brandguard scan of {Path(catalogue).name}",
                                 summary=json.loads(summary.to_json()), image_root=scan_root(catalogue, opts))
        print(f"report: {page}")
    if table:
        print(terminal_table(rows))
    print(f"scanned {summary.scanned} of {summary.total} listings ({summary.changed} with a changed image), "
          f"skipped {summary.unchanged} already scanned and unchanged, "
          f"in {summary.seconds:.1f}s ({summary.images_per_second:.1f} img/s): "
          + ", ".join(f"{k} {v}" for k, v in sorted(summary.verdicts.items()))
          + f"; leads {summary.leads} ({summary.new_leads} new in the store), authorised sellers {summary.authorized}")
    return summary
