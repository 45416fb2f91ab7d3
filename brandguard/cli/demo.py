"""``brandguard demo``: the whole product on a generated catalogue, from registry packages only.

Builds a small catalogue from real logos (simple-icons), registers the brands' references
with the shipped model, scans the listings and prints what was flagged and why, then checks
the verdicts against what the catalogue builder meant each listing to be.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from brandguard.cli.common import EXIT_OK, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build a demo catalogue from real logos, index, scan, report",
                       description="The whole product on a generated catalogue, from registry packages only: "
                                   "real logos as references, 44 listings that copy, alter or hide them, a scan, "
                                   "the report, and a table of each listing's expected vs found verdict.")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_demo(Path(args.out), threads=args.threads, workers=args.workers)


def run_demo(out: Path, threads: int = 1, workers: int = 1, seed: int = 0) -> int:
    from brandguard.cli.index import index_references
    from brandguard.cli.scan import scan_and_report
    from brandguard.datasets.demo_catalogue import build_demo_catalogue
    from brandguard.engine.pipeline import Pipeline
    from brandguard.scan.scanner import ScanOptions

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cat_dir = out / "catalogue"
    print(f"[1/3] building the demo catalogue from simple-icons logos into {cat_dir} ...")
    build_demo_catalogue(cat_dir, seed=seed)
    print("[2/3] registering the brands' reference images with the shipped model ...")
    index_references(cat_dir / "references.jsonl", out / "bundle", threads=threads)
    print("[3/3] scanning the catalogue ...")
    scan_dir = out / "scan"
    if scan_dir.is_dir():  # the demo's own scan of an earlier run: its catalogue and bundle were just rebuilt
        shutil.rmtree(scan_dir)
    # what `brandguard scan` runs with its defaults (auto depth), as the same function
    pipe = Pipeline.from_bundle(out / "bundle", threads=threads, require_index=True)
    scan_and_report(pipe, cat_dir / "catalogue.jsonl", scan_dir,
                    ScanOptions(workers=workers, threads=threads, progress=False, leads_db=out / "leads.sqlite"))
    agreement = compare_with_expected(scan_dir, cat_dir / "expected.csv")
    print(agreement["table"])
    (out / "demo_summary.json").write_text(json.dumps({k: v for k, v in agreement.items() if k != "table"},
                                                      indent=2, sort_keys=True) + "\n")
    print(f"\ndemo finished in {time.perf_counter() - t0:.1f}s; open {scan_dir / 'report.html'} to see the leads")
    return EXIT_OK


def compare_with_expected(scan_dir: Path, expected_csv: Path) -> dict:
    """Confusion of expected (copy/knockoff/clear) vs found verdicts, and brand accuracy of flags."""
    from brandguard.scan.scanner import read_results

    results = {r["listing_id"]: r for r in read_results(scan_dir)}
    with open(expected_csv, newline="", encoding="utf-8") as f:
        expected = list(csv.DictReader(f))
    confusion: Counter = Counter()
    brand_ok = brand_total = 0
    for e in expected:
        got = results.get(e["listing_id"])
        found = got["verdict"] if got else "missing"
        confusion[(e["expected"], found)] += 1
        if e["expected"] in ("copy", "knockoff") and found in ("copy", "knockoff"):
            brand_total += 1
            brand_ok += int((got or {}).get("brand") == e.get("brand"))
    found_cols = ["copy", "knockoff", "clear", "inconclusive"]
    lines = listing_table(expected, results)
    lines += ["", "expected \\ found   " + "  ".join(f"{c:>12}" for c in found_cols)]
    for exp in ("copy", "knockoff", "clear"):
        lines.append(f"{exp:<18} " + "  ".join(f"{confusion[(exp, c)]:>12}" for c in found_cols))
    flagged_expected = sum(v for (e, f), v in confusion.items() if e in ("copy", "knockoff"))
    flagged_found = sum(v for (e, f), v in confusion.items() if e in ("copy", "knockoff") and f in ("copy", "knockoff"))
    clear_total = sum(v for (e, _), v in confusion.items() if e == "clear")
    false_flags = sum(v for (e, f), v in confusion.items() if e == "clear" and f in ("copy", "knockoff"))
    lines.append(f"\nbrand imagery found: {flagged_found}/{flagged_expected}; right brand: {brand_ok}/{brand_total}; "
                 f"false flags on clean listings: {false_flags}/{clear_total}")
    return {"confusion": {f"{e}->{f}": v for (e, f), v in sorted(confusion.items())},
            "found": flagged_found, "expected_flagged": flagged_expected, "brand_correct": brand_ok,
            "false_flags": false_flags, "clean_listings": clear_total, "table": "\n".join(lines)}


def listing_table(expected: list[dict], results: dict[str, dict]) -> list[str]:
    """One line per listing: what the catalogue builder meant it to be, what the scan found, and
    whether they agree (a flag for the wrong brand counts as a miss)."""
    head = f"{'listing':<28} {'family':<16} {'expected':<9} {'brand':<16} {'found':<13} {'brand found':<16} {'score':>6}  ok"
    lines = [head, "-" * len(head)]
    for e in sorted(expected, key=lambda r: (r["family"], r["listing_id"])):
        got = results.get(e["listing_id"]) or {}
        found = got.get("verdict", "missing")
        flagged = found in ("copy", "knockoff")
        ok = (flagged and e["expected"] != "clear" and got.get("brand") == e.get("brand")) or \
             (not flagged and e["expected"] == "clear")
        score = got.get("score")
        lines.append(f"{e['listing_id'][:28]:<28} {e['family'][:16]:<16} {e['expected']:<9} {(e.get('brand') or '-')[:16]:<16} "
                     f"{found:<13} {(got.get('brand') or '-')[:16]:<16} "
                     f"{'' if score is None else f'{score:.2f}':>6}  {'yes' if ok else 'NO'}")
    return lines


if __name__ == "__main__":
    sys.exit(run_demo(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_out")))
