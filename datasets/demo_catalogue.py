"""A small, self-contained demo catalogue for ``make demo``.

Why: a fresh machine with only registry packages must be able to show brandguard end to end in
seconds. This writes a handful of well-known brands' references and ~40 marketplace listings
whose expected verdict is known: copies (light and strong), knockoffs (altered marks and marks
on product photos) and clear listings (plain photos, unregistered brands). Nothing under
/work/shared is used; photos come from scikit-image's bundled files if installed, otherwise
procedural scenes.

Layout under ``out_dir``::

    references/<brand>/<name>.png     references.jsonl  {"reference_id","brand","sku","kind","path"}
    listings/<listing_id>.jpg         catalogue.jsonl   {"listing_id","seller_id","title","price","image"}
    expected.csv                      listing_id,expected,brand,family   (expected: copy|knockoff|clear)
    demo_manifest.json                sources and licences of every mark used
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from brandguard.datasets.augment.families import (
    copy_light,
    copy_strong,
    distractor_photo,
    distractor_unregistered,
    knockoff,
    logo_in_photo,
)
from brandguard.evaluation.families import COPY_FAMILIES, FAMILY_VERDICT
from brandguard.datasets.augment.views import reference_views
from brandguard.datasets.logos import PACKAGE, get_logo_source, package_version, render_logo
from brandguard.datasets.photos import PhotoPool
from brandguard.errors import InputError

#: Preferred registered brands, in order; the first ones present in the installed package are used.
DEMO_BRANDS = ("nike", "adidas", "puma", "apple", "starbucks", "spotify", "mcdonalds", "cocacola", "ferrari", "samsung")
#: Brands that appear in listings but are not registered (must show as clear).
UNREGISTERED_BRANDS = ("reebok", "underarmour", "newbalance", "fila", "burton", "hermes")
N_REGISTERED = 8
_PRODUCTS = ("tee", "hoodie", "cap", "sneakers", "tote bag", "phone case", "mug", "sticker")


@dataclass(frozen=True)
class DemoCatalogue:
    out_dir: Path
    references_path: Path
    catalogue_path: Path
    expected_path: Path
    brands: tuple[str, ...]
    n_references: int
    n_listings: int
    expected_counts: dict[str, int]


def _pick(slugs: tuple[str, ...], n: int, exclude: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    out = []
    for s in slugs:
        if s in exclude:
            continue
        try:
            get_logo_source(s)
        except InputError:
            continue  # not in this package release, or licence forbids modification
        out.append(s)
        if len(out) == n:
            break
    return out


def _save_jpeg(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:  # pragma: no cover
        raise InputError(f"JPEG encoding failed: {path}")
    path.write_bytes(buf.tobytes())


def _save_png(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover
        raise InputError(f"PNG encoding failed: {path}")
    path.write_bytes(buf.tobytes())


def build_demo_catalogue(out_dir: Path, seed: int = 0) -> DemoCatalogue:
    """Write the demo catalogue under ``out_dir`` (deterministic for a given seed)."""
    cv2.setNumThreads(1)
    out_dir = Path(out_dir)
    (out_dir / "references").mkdir(parents=True, exist_ok=True)
    (out_dir / "listings").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 424242])
    brands = _pick(DEMO_BRANDS, N_REGISTERED)
    unreg = _pick(UNREGISTERED_BRANDS, 4, exclude=set(brands))
    if len(brands) < 3 or not unreg:
        raise InputError("the installed simple-icons-pack lacks the demo brands")
    pool = PhotoPool.from_sources((), include_skimage=True, max_side=448)
    marks = {s: render_logo(get_logo_source(s), 192) for s in brands + unreg}

    ref_rows: list[dict[str, str]] = []
    refs: dict[str, dict[str, np.ndarray]] = {}
    for slug in brands:
        views = reference_views(rng, marks[slug], size=320)
        refs[slug] = views
        (out_dir / "references" / slug).mkdir(exist_ok=True)
        for name, img in views.items():
            rel = f"references/{slug}/{name}.png"
            _save_png(out_dir / rel, img)
            ref_rows.append({
                "reference_id": f"{slug}/{name}",
                "brand": slug,
                "sku": f"{slug}-{'LOGO' if name == 'logo_clean' else 'MERCH'}",
                "kind": "logo" if name == "logo_clean" else "product",
                "path": rel,
            })

    plan: list[tuple[str, str, str]] = []  # family, brand (registered, or "" ), mark slug
    for i, slug in enumerate(brands):
        plan += [("copy_light", slug, slug), ("copy_strong", slug, slug), ("knockoff", slug, slug)]
        plan.append(("logo_in_photo", slug, slug))
        if i % 2 == 0:
            plan.append(("copy_strong", slug, slug))
    n_clear = max(8, 40 - len(plan))
    for k in range(n_clear):
        if k % 2 == 0:
            plan.append(("distractor_photo", "", ""))
        else:
            plan.append(("distractor_unregistered", "", unreg[k // 2 % len(unreg)]))
    order = rng.permutation(len(plan))

    cat_rows: list[dict[str, object]] = []
    exp_rows: list[dict[str, str]] = []
    sellers = [f"seller_{i:03d}" for i in range(1, 11)]
    for n, idx in enumerate(order):
        family, brand, mark = plan[int(idx)]
        lid = f"L{n + 1:04d}"
        photo, _ = pool.sample(rng)
        if family in COPY_FAMILIES:
            ref = refs[brand][str(rng.choice(list(refs[brand])))]
            img = copy_light(rng, ref, max_side=448) if family == "copy_light" else copy_strong(rng, ref, [photo], max_side=448)
        elif family == "knockoff":
            img = knockoff(rng, marks[brand], marks[unreg[0]], photo, max_side=448)
        elif family == "logo_in_photo":
            img = logo_in_photo(rng, marks[brand], photo, max_side=448)
        elif family == "distractor_photo":
            img = distractor_photo(rng, photo, max_side=448)
        else:
            img = distractor_unregistered(rng, marks[mark], photo, max_side=448)
        rel = f"listings/{lid}.jpg"
        _save_jpeg(out_dir / rel, img)
        title_brand = get_logo_source(brand or mark).title if (brand or mark) else "Unbranded"
        product = str(rng.choice(_PRODUCTS))
        base = float(rng.uniform(25, 140))
        price = base * (rng.uniform(0.15, 0.45) if FAMILY_VERDICT[family] == "knockoff" else rng.uniform(0.8, 1.2))
        cat_rows.append({
            "listing_id": lid,
            "seller_id": sellers[int(rng.integers(len(sellers)))],
            "title": f"{title_brand} {product}" + (" - new with tags" if rng.random() < 0.4 else ""),
            "price": round(price, 2),
            "image": rel,
        })
        exp_rows.append({"listing_id": lid, "expected": FAMILY_VERDICT[family], "brand": brand, "family": family})

    refs_path = out_dir / "references.jsonl"
    refs_path.write_text("".join(json.dumps(r) + "\n" for r in ref_rows), encoding="utf-8")
    cat_path = out_dir / "catalogue.jsonl"
    cat_path.write_text("".join(json.dumps(r) + "\n" for r in cat_rows), encoding="utf-8")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["listing_id", "expected", "brand", "family"], lineterminator="\n")
    w.writeheader()
    w.writerows(exp_rows)
    exp_path = out_dir / "expected.csv"
    exp_path.write_text(buf.getvalue(), encoding="utf-8")
    manifest = {
        "seed": seed,
        "registered_brands": brands,
        "unregistered_brands": unreg,
        "marks": {s: {"title": get_logo_source(s).title, "source": get_logo_source(s).provenance,
                      "license": get_logo_source(s).license} for s in brands + unreg},
        "logo_package": f"{PACKAGE} {package_version()}",
        "photos": pool.sources_summary() or "procedural only",
        "notice": "The marks remain their owners' trademarks; demo and testing only.",
    }
    (out_dir / "demo_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    counts: dict[str, int] = {}
    for r in exp_rows:
        counts[r["expected"]] = counts.get(r["expected"], 0) + 1
    return DemoCatalogue(out_dir, refs_path, cat_path, exp_path, tuple(brands), len(ref_rows), len(cat_rows), counts)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m brandguard.datasets.demo_catalogue",
                                description="Write the demo catalogue (references, listings, expected verdicts).")
    p.add_argument("--out", type=Path, default=Path("demo_out/catalogue"))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    d = build_demo_catalogue(a.out, a.seed)
    print(f"{d.n_references} references of {len(d.brands)} brands, {d.n_listings} listings {d.expected_counts} -> {d.out_dir}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
