"""brandguard benchmarks: decode limits, embedding throughput and end-to-end scan rate.

All numbers come from one run on the same images on this machine, as medians over
repeats, and are reported as ratios (ours vs the decode-only limit, DCT-downscaled decode vs
full decode) because shared machines are noisy in absolute terms.

    python benchmarks/bench.py [--quick] [--out bench_out] [--repeats 3]

Writes OUT/results.json and docs/BENCHMARKS.md (unless --no-doc).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def make_listing_jpegs(dest: Path, n: int, photo_dir: Path | None, long_side: int = 800) -> list[Path]:
    """``n`` listing-like JPEGs with an 800 px long side, from real photos when given."""
    import cv2
    import numpy as np
    from PIL import Image

    dest.mkdir(parents=True, exist_ok=True)
    sources: list[Path] = []
    if photo_dir is not None and photo_dir.is_dir():
        sources = sorted(p for p in photo_dir.rglob("*.jpg"))[:n]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        if i < len(sources):
            img = np.asarray(Image.open(sources[i]).convert("RGB"))
        else:
            from brandguard.datasets.photos import procedural_background

            img = procedural_background(rng, 600, 450)
        h, w = img.shape[:2]
        s = long_side / max(h, w)
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_CUBIC)
        p = dest / f"listing_{i:05d}.jpg"
        Image.fromarray(img).save(p, "JPEG", quality=88)
        out.append(p)
    return out


def _decode_full(path: str) -> int:
    from brandguard.vision.decode import decode_image

    return decode_image(path).rgb.shape[0]


def _decode_draft(args: tuple[str, int]) -> int:
    from brandguard.vision.decode import decode_image

    return decode_image(args[0], target_side=args[1]).rgb.shape[0]


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def timed(fn, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        runs.append(n / (time.perf_counter() - t0))
    return {"median_per_s": round(statistics.median(runs), 2), "runs_per_s": [round(r, 2) for r in runs]}


def bench(args: argparse.Namespace) -> dict:
    import multiprocessing as mp

    import numpy as np

    from brandguard.cli import main as cli_main
    from brandguard.scanner import ScanOptions, scan
    from brandguard.vision.bundle import Bundle, default_bundle_path
    from brandguard.vision.embedder import Embedder
    from brandguard.vision.pipeline import Pipeline

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    n = 64 if args.quick else 600
    photos = Path(args.photos) if args.photos else None
    images = make_listing_jpegs(out / "images", n, photos)
    bundle = Bundle.load(args.bundle or default_bundle_path())
    side = bundle.card.input_size
    paths = [str(p) for p in images]
    results: dict = {"images": n, "image_long_side": 800, "model": bundle.card.name,
                     "model_sha256": bundle.card.sha256, "input_size": side, "cores": os.cpu_count(),
                     "workers": args.workers, "repeats": args.repeats}

    # 1. Decode only, one process: full decode vs the DCT-downscaled path the scanner uses.
    results["decode_full_1proc"] = timed(lambda: sum(1 for p in paths if _decode_full(p)), args.repeats)
    results["decode_draft_1proc"] = timed(lambda: sum(1 for p in paths if _decode_draft((p, side))), args.repeats)

    # 2. Decode-only limit with every core decoding (the ceiling for any scanner on this box).
    ctx = mp.get_context("spawn")
    procs = os.cpu_count() or 2
    with ctx.Pool(procs, initializer=_init_worker) as pool:
        pool.map(_decode_draft, [(paths[0], side)] * procs)  # warm the workers
        results["decode_limit_all_cores"] = timed(
            lambda: sum(1 for _ in pool.imap_unordered(_decode_draft, [(p, side) for p in paths], chunksize=8)),
            args.repeats)
    results["decode_limit_all_cores"]["processes"] = procs

    # 3. Embedding throughput, ONNX Runtime, batch 32, explicit threads.
    emb = Embedder(bundle, threads=args.ort_threads)
    batch = np.random.default_rng(0).standard_normal((32, 3, side, side)).astype(np.float32)
    emb.embed(batch)
    reps = 4 if args.quick else 20
    results["embed_batch32"] = timed(lambda: sum(emb.embed(batch).shape[0] for _ in range(reps)), args.repeats)
    results["embed_batch32"]["threads"] = args.ort_threads

    # 4. End to end: index a few references, scan the listings with the real scanner.
    refs = out / "refs"
    for i, p in enumerate(paths[:20]):
        (refs / f"brand{i % 5}").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, refs / f"brand{i % 5}" / f"ref{i}.jpg")
    cli_main(["index", str(refs), "--bundle", str(bundle.path), "--out", str(out / "bundle")])
    cat = out / "catalogue.jsonl"
    cat.write_text("".join(json.dumps({"listing_id": Path(p).stem, "image": p}) + "\n" for p in paths))
    pipe = Pipeline.from_bundle(out / "bundle", threads=args.ort_threads, require_index=True)
    runs = []
    for r in range(args.repeats):
        scan_dir = out / f"scan{r}"
        t0 = time.perf_counter()
        scan(cat, pipe, scan_dir, ScanOptions(workers=args.workers, threads=args.ort_threads, progress=False))
        runs.append(n / (time.perf_counter() - t0))
    results["scan_end_to_end"] = {"median_per_s": round(statistics.median(runs), 2),
                                  "runs_per_s": [round(x, 2) for x in runs], "workers": args.workers,
                                  "ort_threads": args.ort_threads, "note": "includes worker start-up"}
    lim = results["decode_limit_all_cores"]["median_per_s"]
    results["ratios"] = {
        "draft_vs_full_decode": round(results["decode_draft_1proc"]["median_per_s"]
                                      / results["decode_full_1proc"]["median_per_s"], 2),
        "scan_vs_decode_limit": round(results["scan_end_to_end"]["median_per_s"] / lim, 3),
    }
    return results


def write_markdown(results: dict, dest: Path) -> None:
    r = results
    env = r["environment"]
    lines = [
        "# brandguard benchmarks", "",
        f"Generated by `make bench` on {env['date']} · {env['machine']} · {env['cores']} cores · "
        f"Python {env['python']} · onnxruntime {env['onnxruntime']} · faiss {env['faiss']}", "",
        f"{r['images']} listing JPEGs (800 px long side), model `{r['model']}` ({r['input_size']} px input), "
        f"medians of {r['repeats']} runs.", "",
        "| measurement | images/s (median) | runs |", "|---|---:|---|",
    ]
    for key, label in [("decode_full_1proc", "decode only, full size, 1 process"),
                       ("decode_draft_1proc", "decode only, DCT-downscaled, 1 process"),
                       ("decode_limit_all_cores", "decode-only limit, all cores"),
                       ("embed_batch32", f"ONNX Runtime embedding, batch 32, {r['embed_batch32']['threads']} threads"),
                       ("scan_end_to_end", f"`brandguard scan` end to end ({r['scan_end_to_end']['workers']} decode workers)")]:
        lines.append(f"| {label} | {r[key]['median_per_s']:.1f} | {', '.join(f'{x:.0f}' for x in r[key]['runs_per_s'])} |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    for k, v in r["ratios"].items():
        lines.append(f"| {k.replace('_', ' ')} | {v} |")
    lines.append("")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="64 images, for a smoke run (CI-sized)")
    p.add_argument("--out", default="bench_out")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--ort-threads", type=int, default=1)
    p.add_argument("--bundle", default=None, help="bundle to benchmark (default: the shipped model)")
    p.add_argument("--photos", default=None, help="folder of real photos to make listings from")
    p.add_argument("--no-doc", action="store_true", help="do not rewrite docs/BENCHMARKS.md")
    args = p.parse_args(argv)
    _threads(1)
    results = bench(args)
    import faiss
    import onnxruntime

    results["environment"] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                              "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
                              "faiss": faiss.__version__}
    Path(args.out, "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    if not args.no_doc:
        write_markdown(results, REPO / "docs" / "BENCHMARKS.md")
    print(json.dumps(results["ratios"], indent=2))
    print(f"results: {Path(args.out, 'results.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
