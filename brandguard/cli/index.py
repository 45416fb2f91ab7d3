"""``brandguard index``: register brand reference images (embed, store, index)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from brandguard.cli.common import EXIT_OK, EXIT_USAGE, add_bundle_arg, add_runtime_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="register brand reference images: embed them and build the FAISS index",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=(
                           "Embed reference images and write a bundle with a FAISS index.\n\n"
                           "REFERENCES is a folder laid out <brand>/<name>.png, or a JSONL/CSV/Parquet file\n"
                           "with columns brand, path [, reference_id, sku, kind] (paths relative to the file).\n"
                           "The model (model.onnx + card) is copied into --out, which becomes a complete\n"
                           "bundle: pass it to `scan` as --bundle."))
    p.add_argument("references", type=Path)
    add_bundle_arg(p, " to take the model from")
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
    add_runtime_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = index_references(args.references, args.out, model_bundle=args.bundle, add=args.add,
                              factory=args.factory, brands=args.brands, threads=args.threads, device=args.device)
    return EXIT_USAGE if report.skipped and args.strict else EXIT_OK


def index_references(references: Path, out: Path, model_bundle: Path | None = None, add: bool = False,
                     factory: str | None = None, brands: Path | None = None, threads: int = 1,
                     device: str = "cpu"):  # noqa: ANN201 - an IndexReport (brandguard.references loads the engine)
    """Build (or with ``add``, grow) the index of the bundle ``out``, printing what happened."""
    from brandguard.engine.pipeline import Pipeline
    from brandguard.inputs import read_references
    from brandguard.references import add_references, build_index, bundle_lock, new_bundle_from
    from brandguard.vision.bundle import Bundle, default_bundle_path

    t0 = time.perf_counter()
    model = None if add else Bundle.load(model_bundle or default_bundle_path())  # fail fast on artifacts
    rows = read_references(references)
    vocabulary = None
    if brands is not None:
        from brandguard.engine.textmarks import read_vocabulary

        vocabulary = read_vocabulary(brands)
    # the bundle lock: a running service neither reloads half a change nor cleans its new images
    if model is None:
        pipe = Pipeline.from_bundle(out, threads=threads, device=device, require_index=True)
        with bundle_lock(out, exclusive=True):
            report = add_references(pipe, rows, vocabulary=vocabulary)
        verb = "added"
    else:
        bundle = new_bundle_from(model, Path(out))
        pipe = Pipeline.from_bundle(bundle, threads=threads, device=device)
        with bundle_lock(bundle, exclusive=True):
            _, report = build_index(pipe, rows, factory=factory, threads=threads, vocabulary=vocabulary)
        verb = "indexed"
    for ref_id, reason in report.skipped:
        print(f"warning: reference {ref_id} skipped: {reason}", file=sys.stderr)
    print(f"{verb} {report.indexed} references of {report.brands} brands into {out} "
          f"({report.factory}{', rebuilt by the size rule' if report.rebuilt else ''}, "
          f"generation {report.generation}, {time.perf_counter() - t0:.1f}s)"
          + (f"; {len(report.skipped)} unreadable, listed above" if report.skipped else ""))
    return report
