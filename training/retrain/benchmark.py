"""The benchmarks the gate scores bundles on: a brand's benchmark generated from its references
(``build_brand_benchmark``, DISC21 format, queries made with the corpus's augmentation families)
and the fixed cross-brand regression split (``regression_split``).

Also the helpers the brand fine-tune shares with it: reading a trusted training image
(``imread_rgb``), cutting the mark out of a reference (``mark_from_reference``), and other
(train-split) brands' marks (``other_brand_sources``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from brandguard.datasets.corpus import write_csv
from brandguard.errors import InputError
from brandguard.training.retrain.gate import GateError

BENCH_FORMAT = "brandguard-brand-benchmark/1"


def mark_from_reference(image: np.ndarray) -> np.ndarray | None:
    """Cut the mark out of a reference: its own alpha when it has one, else everything that
    differs from the (median) border colour. None when that does not look like a mark on a
    plain background (a photo): knockoffs need a mark to alter."""
    from brandguard.datasets.augment.ops import ensure_rgb

    if image.ndim == 3 and image.shape[2] == 4:
        alpha = image[..., 3]
        rgb = image[..., :3]
    else:
        rgb = ensure_rgb(image)
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.int16)
        bg = np.median(border, axis=0)
        if np.abs(border - bg).sum(axis=1).mean() > 30:  # busy border: not a plain canvas
            return None
        dist = np.abs(rgb.astype(np.int16) - bg).sum(axis=2)
        alpha = np.where(dist > 60, 255, 0).astype(np.uint8)
    share = float((alpha > 128).mean())
    if not 0.01 <= share <= 0.8:
        return None
    ys, xs = np.nonzero(alpha > 128)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return np.ascontiguousarray(np.dstack([rgb, alpha])[y0:y1, x0:x1])


def imread_rgb(path: str | Path, keep_alpha: bool = False) -> np.ndarray:
    """RGB (or RGBA with ``keep_alpha``) uint8 of a trusted training image; raises InputError."""
    flag = cv2.IMREAD_UNCHANGED if keep_alpha else cv2.IMREAD_COLOR
    img = cv2.imread(str(path), flag)
    if img is None:
        raise InputError(f"cannot read image {path}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _write_image(path: Path, rgb: np.ndarray, jpeg: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg" if jpeg else ".png", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95] if jpeg else [])
    if not ok:
        raise InputError(f"encoding failed for {path}")
    path.write_bytes(buf.tobytes())


@dataclass(frozen=True)
class BenchSource:
    """A reference image for a generated benchmark: ``reference_id`` = ``<brand>/<name>``."""

    reference_id: str
    path: str


def other_brand_sources(n_brands: int, seed: int, cache_dir: str | None, skip: int = 0,
                        size: int = 256, exclude: str | None = None) -> list[tuple[str, np.ndarray]]:
    """(slug, RGBA mark) of train-split simple-icons brands (never a val/test brand: those are
    the regression benchmark and the onboarding targets), never ``exclude`` (the brand being
    onboarded may itself be a train-split mark: it must not be its own "other brand"). Cached renders."""
    from brandguard.datasets.logos import render_logo, sources_for_split

    srcs = [s for s in sources_for_split("train", seed) if s.slug != exclude][skip:skip + n_brands]
    out = []
    for s in srcs:
        try:
            out.append((s.slug, np.asarray(render_logo(s, size))))
        except Exception:  # noqa: BLE001 - one broken SVG skips one brand
            continue
    return out


def build_brand_benchmark(out: Path, brand: str, references: Sequence[BenchSource],
                          query_references: Sequence[BenchSource], others: Sequence[BenchSource],
                          unregistered: Sequence[np.ndarray], seed: int, per_reference: int = 1,
                          distractors: int = 24, max_side: int = 384,
                          extra_queries: Sequence[tuple[str, str, str]] = ()) -> Path:
    """Write a DISC21-format split for one brand.

    ``references`` (all of the brand's) and ``others`` (other registered brands) form the
    references folder; queries are made from ``query_references`` (the brand's held-out ones):
    per reference ``per_reference`` copy_light, copy_strong, logo_in_photo and knockoff queries
    (the last two from the mark cut out of the reference, when one can be), each pointing at
    the reference it came from; plus ``distractors`` photos and unregistered marks with no row.
    ``extra_queries`` = (path, family, reference_id or "") appends real labelled listings
    (feedback): a reference id makes it a positive, "" a hard negative.
    """
    from brandguard.datasets.augment.families import (
        copy_light,
        copy_strong,
        distractor_photo,
        distractor_unregistered,
        knockoff,
        logo_in_photo,
    )
    from brandguard.datasets.augment.ops import ensure_rgb
    from brandguard.datasets.photos import PhotoPool

    if not references or not query_references:
        raise InputError(f"brand {brand!r}: no references to build a benchmark from")
    if out.exists():
        shutil.rmtree(out)
    (out / "queries").mkdir(parents=True)
    for src in list(references) + list(others):
        dest = out / "references" / f"{src.reference_id}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        img = imread_rgb(src.path)
        _write_image(dest, img, jpeg=False)
    pool = PhotoPool.from_sources([], split="val", seed=seed, max_side=max_side)
    other_imgs = [imread_rgb(s.path) for s in list(others)[:8]]
    rows: list[dict[str, str]] = []

    def add(img: np.ndarray, family: str, ref_id: str, brand_: str, log: list[str]) -> None:
        qid = f"q{len(rows):05d}"
        _write_image(out / "queries" / f"{qid}.jpg", ensure_rgb(img), jpeg=True)
        rows.append({"query_id": qid, "family": family, "brand": brand_, "transform": "+".join(log),
                     "reference_id": ref_id})

    for i, src in enumerate(query_references):
        rng = np.random.default_rng([seed, 31, i])
        ref = imread_rgb(src.path, keep_alpha=True)
        rgb = ensure_rgb(ref)
        mark = mark_from_reference(ref)
        for _ in range(per_reference):
            log: list[str] = []
            add(copy_light(rng, rgb, log, max_side=max_side), "copy_light", src.reference_id, brand, log)
            log = []
            add(copy_strong(rng, rgb, other_imgs, log, max_side=max_side), "copy_strong", src.reference_id, brand, log)
            log = []
            photo, _ = pool.sample(rng)
            add(logo_in_photo(rng, mark if mark is not None else rgb, photo, log, max_side=max_side),
                "logo_in_photo", src.reference_id, brand, log)
            if mark is not None:
                log = []
                donor = unregistered[int(rng.integers(len(unregistered)))] if len(unregistered) else None
                photo, _ = pool.sample(rng)
                add(knockoff(rng, mark, donor, photo, log, max_side=max_side), "knockoff", src.reference_id, brand, log)
    rng = np.random.default_rng([seed, 37])
    for j in range(distractors):
        log = []
        photo, _ = pool.sample(rng)
        if j % 2 == 0 or not len(unregistered):
            add(distractor_photo(rng, photo, log, max_side=max_side), "distractor_photo", "", "", log)
        else:
            mark = unregistered[j % len(unregistered)]
            add(distractor_unregistered(rng, mark, photo, log, max_side=max_side), "distractor_unregistered",
                "", "", log)
    for path, family, ref_id in extra_queries:
        try:
            img = imread_rgb(path)
        except InputError:
            continue
        add(img, family, ref_id, brand if ref_id else "", [f"feedback:{Path(path).name}"])
    write_csv(out / "queries.csv", ["query_id", "family", "brand", "transform"], rows)
    write_csv(out / "ground_truth.csv", ["query_id", "reference_id"], [r for r in rows if r["reference_id"]])
    (out / "benchmark.json").write_text(json.dumps({
        "format": BENCH_FORMAT, "brand": brand, "seed": seed, "references": len(references),
        "other_references": len(others), "query_references": len(query_references), "queries": len(rows),
        "families": {f: sum(r["family"] == f for r in rows) for f in sorted({r["family"] for r in rows})},
    }, indent=2, sort_keys=True) + "\n")
    return out


def cached_regression_split(cache_root: str | os.PathLike[str] = "data_cache", seed: int = 0,
                            size: str = "standard") -> Path | None:
    """The regression split ``regression_split`` would use without building anything, or None."""
    if size not in ("tiny", "standard"):
        raise InputError(f"regression corpus size must be tiny or standard, got {size!r}")
    for split in ([Path(cache_root) / "corpus_std" / "val"] if size == "standard" else []) + \
            [Path(cache_root) / f"corpus_gate_{size}_s{seed}" / "val"]:
        if (split / "ground_truth.csv").is_file():
            return split
    return None


def regression_split(path: str | os.PathLike[str] | None = None, cache_root: str | os.PathLike[str] = "data_cache",
                     seed: int = 0, size: str = "standard", log_to: Any = sys.stderr) -> Path:
    """The fixed cross-brand benchmark the gate's regression rule is scored on.

    ``path`` if given (it must be a split); else ``<cache_root>/corpus_std/val`` when ``make
    calibrate`` or ``brandguard corpus`` built it; else the val split of a ``size`` corpus
    (``datasets/corpus.py``, every val brand for ``standard``) built once, deterministically, into
    ``<cache_root>/corpus_gate_<size>_s<seed>/`` (15-50 s on 2 cores), then reused. Why
    ``standard`` and not ``tiny`` (4 brands, ~20 queries): the rule allows a 0.01 µAP drop, and on
    20 queries one swapped rank moves µAP by more than that, so the gate would judge noise."""
    if path is not None:
        p = Path(path)
        if not (p / "ground_truth.csv").is_file():
            raise GateError(f"{p} is not a benchmark split (no ground_truth.csv); build one with `brandguard corpus "
                            f"--size standard --splits val --out DIR` and pass DIR/val, or leave --regression out "
                            f"to have it built under {cache_root}")
        return p
    cached = cached_regression_split(cache_root, seed, size)
    if cached is not None:
        return cached
    from brandguard.datasets.corpus import build_corpus

    root = Path(cache_root) / f"corpus_gate_{size}_s{seed}"
    workers = 1 if size == "tiny" else min(2, os.cpu_count() or 1)
    show = log_to is not None
    if show:
        print(f"[regression] no regression benchmark yet: building the {size} corpus's val split into {root} "
              f"(once: 15-50 s on 2 cores for standard, then reused)", file=log_to, flush=True)
    # Built beside its final name and renamed into place: a run killed half-way, or two runs
    # building at once, never leave a partial split that looks complete.
    tmp = Path(cache_root) / f".{root.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        m = build_corpus(tmp, size, seed, [], workers=workers, splits=["val"], progress=show)  # type: ignore[arg-type]
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / "val" / "ground_truth.csv").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if show:
        c = m.splits["val"]
        print(f"[regression] built {root / 'val'}: {c.brands} brands, {c.references} references, {c.queries} "
              f"queries in {m.seconds:.0f}s", file=log_to, flush=True)
    return root / "val"
