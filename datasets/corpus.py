"""Brand-imagery corpus builder in the DISC21-style benchmark format (see DESIGN.md).

Why: training, calibration and every benchmark need references and labelled queries of real
marks, built reproducibly from registry packages alone. Layout per split (train/val/test)::

    <split>/references/<brand-slug>/<ref-name>.png   reference id = "<brand-slug>/<ref-name>"
    <split>/queries/<qid>.jpg
    <split>/ground_truth.csv    query_id,reference_id   (distractors have no row)
    <split>/queries.csv         query_id,family,brand,transform   (brand empty for distractors)
    <split>/references.csv      reference_id,brand,sku,kind,source,license
    <split>/contact_<family>.png, contact_references.png   thumbnails to eyeball
    manifest.json               sources, licences, seed, counts, build time

Each query has exactly one ground-truth row: copies point to the reference image they were
made from; ``logo_in_photo`` and ``knockoff`` point to the brand's ``logo_clean`` reference
(they show the mark, not a reference image); ``product_photo`` points to the brand's
``product_shot``, a catalogue photo (the brand's mark printed on a reserved real photo) that a
third of the brands have. Brands are split by hash (``split_of``), so no brand
is in two splits; the unregistered brands used as hard negatives come from the same split.

Same seed -> byte-identical files (every random draw comes from a generator seeded by
(seed, split, job), and CSVs are sorted); only manifest.json's ``build`` section differs.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import multiprocessing
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from brandguard.datasets.augment.families import (
    catalogue_shot,
    copy_light,
    copy_strong,
    distractor_photo,
    distractor_unregistered,
    knockoff,
    logo_in_photo,
    product_photo,
)
from brandguard.evaluation.families import COPY_FAMILIES, FAMILIES, MARK_FAMILIES
from brandguard.datasets.augment.ops import ensure_rgb, resize_max
from brandguard.datasets.augment.views import reference_views
from brandguard.datasets.logos import (
    DEFAULT_LICENSE,
    PACKAGE,
    SPLITS,
    LogoSource,
    excluded_sources,
    get_logo_source,
    load_logo_sources,
    package_version,
    render_logo,
    split_of,
)
from brandguard.datasets.photos import PhotoPool, product_scene
from brandguard.errors import InputError

Size = Literal["tiny", "standard", "train"]
FORMAT = "brandguard-corpus/1"
REFERENCE_NAMES = ("logo_clean", "logo_product")  # every brand's; the copy families re-use these
PRODUCT_SHOT = "product_shot"  # a catalogue photo, for a share of the brands (the product_photo family)
PRODUCT_SHOT_SHARE = 1 / 3
JPEG_QUALITY = 95  # fixed so files are byte-identical across builds
MARK_HEIGHT = 256  # render height for marks used in queries (they are resized down anyway)


@dataclass(frozen=True)
class SizeConfig:
    """How much to build per split. ``None`` brands = every brand of that split."""

    brands: dict[str, int | None]
    unregistered: int  # brands per split held out as "not registered" hard negatives
    per_brand: dict[str, int]  # queries per registered brand, per mark family (product_photo: brands with a shot)
    distractor_photo_ratio: float  # distractor photos per registered brand
    distractor_unregistered_ratio: float
    min_distractors: int
    ref_size: int
    query_side: int


SIZES: dict[str, SizeConfig] = {
    "tiny": SizeConfig(
        brands={"train": 5, "val": 4, "test": 5},
        unregistered=2,
        per_brand={"copy_light": 1, "copy_strong": 1, "logo_in_photo": 1, "knockoff": 1, "product_photo": 1},
        distractor_photo_ratio=0.6,
        distractor_unregistered_ratio=0.4,
        min_distractors=2,
        ref_size=192,
        query_side=256,
    ),
    "standard": SizeConfig(
        brands={"train": 600, "val": None, "test": None},
        unregistered=40,
        per_brand={"copy_light": 1, "copy_strong": 2, "logo_in_photo": 2, "knockoff": 1, "product_photo": 1},
        distractor_photo_ratio=1.0,
        distractor_unregistered_ratio=0.6,
        min_distractors=10,
        ref_size=320,
        query_side=512,
    ),
    "train": SizeConfig(
        brands={"train": None, "val": None, "test": None},
        unregistered=40,
        per_brand={"copy_light": 1, "copy_strong": 2, "logo_in_photo": 2, "knockoff": 1, "product_photo": 1},
        distractor_photo_ratio=1.0,
        distractor_unregistered_ratio=0.6,
        min_distractors=10,
        ref_size=320,
        query_side=512,
    ),
}


@dataclass(frozen=True)
class SplitCounts:
    brands: int
    unregistered_brands: int
    references: int
    queries: int
    families: dict[str, int]


@dataclass(frozen=True)
class Manifest:
    """What was built; ``manifest.json`` is this plus sources and licences."""

    out_dir: Path
    size: str
    seed: int
    splits: dict[str, SplitCounts]
    seconds: float
    path: Path

    def split_dir(self, split: str) -> Path:
        return self.out_dir / split


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class _RefJob:
    split: str
    index: int
    slug: str
    shot: str = ""  # photo id for the brand's catalogue shot, "procedural", or "" for none


@dataclass(frozen=True)
class _QueryJob:
    split: str
    index: int
    qid: str
    family: str
    brand: str  # registered brand ("" for distractors)
    mark: str  # slug whose mark is drawn (unregistered brand for distractor_unregistered)
    other: str  # second mark (knockoff halves), may be ""


@dataclass
class _WorkerState:
    out_dir: Path
    seed: int
    cfg: SizeConfig
    photo_dirs: list[Path]
    pools: dict[tuple[str, str], PhotoPool] = field(default_factory=dict)

    def pool(self, split: str, role: Literal["background", "catalogue"] = "background") -> PhotoPool:
        if (split, role) not in self.pools:
            self.pools[split, role] = PhotoPool.from_sources(self.photo_dirs, split=split, seed=self.seed, role=role,
                                                             max_side=self.cfg.query_side)
        return self.pools[split, role]


_STATE: _WorkerState | None = None


def _init_worker(out_dir: str, seed: int, size: str, photo_dirs: list[str]) -> None:
    global _STATE
    cv2.setNumThreads(1)
    _STATE = _WorkerState(Path(out_dir), seed, SIZES[size], [Path(p) for p in photo_dirs])


def _rng(seed: int, split: str, stage: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), stage, index])  # type: ignore[arg-type]


def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover
        raise InputError(f"PNG encoding failed for {path}")
    path.write_bytes(buf.tobytes())


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover
        raise InputError(f"JPEG encoding failed for {path}")
    path.write_bytes(buf.tobytes())


def _mark(slug: str) -> np.ndarray:
    return render_logo(get_logo_source(slug), MARK_HEIGHT)


def _do_ref(job: _RefJob) -> list[dict[str, str]]:
    st = _STATE
    assert st is not None, "worker not initialised"
    rng = _rng(st.seed, job.split, 0, job.index)
    src = get_logo_source(job.slug)
    views = reference_views(rng, _mark(job.slug), size=st.cfg.ref_size)
    rows = []
    for name in REFERENCE_NAMES:
        _write_png(st.out_dir / job.split / "references" / job.slug / f"{name}.png", views[name])
        rows.append(
            {
                "reference_id": f"{job.slug}/{name}",
                "brand": job.slug,
                "sku": f"{job.slug}-{'LOGO' if name == 'logo_clean' else 'MERCH'}",
                "kind": "logo" if name == "logo_clean" else "product",
                "source": src.provenance + ("" if name == "logo_clean" else " on a procedural product mock-up"),
                "license": src.license,
            }
        )
    if job.shot:
        shot_rng = _rng(st.seed, job.split, 2, job.index)  # its own stream: the views above do not move
        if job.shot == "procedural":
            photo, _ = product_scene(shot_rng, st.cfg.query_side, st.cfg.query_side)
            where, lic = "a procedural product scene", src.license
        else:
            cat = st.pool(job.split, "catalogue")
            i = cat.index_of(job.shot)
            photo, ps = cat.get(i), cat.photos[i]
            where, lic = f"photo {ps.photo_id} ({ps.source})", f"{src.license}; photo {ps.license}"
        shot = catalogue_shot(shot_rng, _mark(job.slug), photo, size=st.cfg.query_side)
        _write_png(st.out_dir / job.split / "references" / job.slug / f"{PRODUCT_SHOT}.png", shot)
        rows.append({"reference_id": f"{job.slug}/{PRODUCT_SHOT}", "brand": job.slug, "sku": f"{job.slug}-PHOTO",
                     "kind": "product", "source": f"{src.provenance} printed on {where}", "license": lic})
    return rows


def _do_query(job: _QueryJob) -> dict[str, str]:
    st = _STATE
    assert st is not None, "worker not initialised"
    rng = _rng(st.seed, job.split, 1, job.index)
    side = st.cfg.query_side
    log: list[str] = []
    pool = st.pool(job.split)
    gt = ""
    if job.family in COPY_FAMILIES:
        ref_name = str(rng.choice(REFERENCE_NAMES))
        gt = f"{job.brand}/{ref_name}"
        ref_path = st.out_dir / job.split / "references" / f"{gt}.png"
        ref = cv2.cvtColor(cv2.imread(str(ref_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        log.append(ref_name)
        if job.family == "copy_light":
            img = copy_light(rng, ref, log, max_side=side)
        else:
            photo, _ = pool.sample(rng)
            img = copy_strong(rng, ref, [photo], log, max_side=side)
    elif job.family == "logo_in_photo":
        gt = f"{job.brand}/logo_clean"
        photo, pid = pool.sample(rng)
        img = logo_in_photo(rng, _mark(job.mark), photo, log, max_side=side)
        log.insert(0, f"photo={pid}")
    elif job.family == "knockoff":
        gt = f"{job.brand}/logo_clean"
        photo, pid = pool.sample(rng)
        other = _mark(job.other) if job.other else None
        img = knockoff(rng, _mark(job.mark), other, photo, log, max_side=side)
        if job.other and "halves" in log:
            log.insert(log.index("halves") + 1, f"with={job.other}")
    elif job.family == "product_photo":
        gt = f"{job.brand}/{PRODUCT_SHOT}"
        ref = cv2.cvtColor(cv2.imread(str(st.out_dir / job.split / "references" / f"{gt}.png"), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
        surface, pid = pool.sample(rng)
        img = product_photo(rng, ref, surface, log, max_side=side)
        log.insert(0, f"surface={pid}")
    elif job.family == "distractor_photo":
        photo, pid = pool.sample(rng)
        img = distractor_photo(rng, photo, log, max_side=side)
        log.insert(0, f"photo={pid}")
    elif job.family == "distractor_unregistered":
        photo, _ = pool.sample(rng)
        img = distractor_unregistered(rng, _mark(job.mark), photo, log, max_side=side)
        log.insert(0, f"unregistered={job.mark}")
    else:  # pragma: no cover - jobs are built from FAMILIES
        raise InputError(f"unknown family {job.family!r}")
    _write_jpeg(st.out_dir / job.split / "queries" / f"{job.qid}.jpg", img)
    return {"query_id": job.qid, "family": job.family, "brand": job.brand, "transform": "+".join(log), "reference_id": gt}


# --------------------------------------------------------------------------- planning


def _choose_brands(split: str, cfg: SizeConfig, seed: int) -> tuple[list[LogoSource], list[LogoSource]]:
    """(registered, unregistered) brands of ``split``, chosen deterministically from the seed."""
    pool = [s for s in load_logo_sources() if split_of(s.slug, seed) == split]
    rng = np.random.default_rng([seed, SPLITS.index(split), 7])  # type: ignore[arg-type]
    order = [pool[i] for i in rng.permutation(len(pool))]
    n_unreg = min(cfg.unregistered, len(order) // 3)
    unreg, rest = order[:n_unreg], order[n_unreg:]
    cap = cfg.brands.get(split)
    reg = rest if cap is None else rest[:cap]
    return sorted(reg, key=lambda s: s.slug), sorted(unreg, key=lambda s: s.slug)


def _plan_shots(split: str, reg: list[LogoSource], seed: int, photo_dirs: Sequence[Path]) -> dict[str, str]:
    """Which brands get a catalogue shot, on which photo: a third of the brands, each on its own
    reserved real photo while they last, then on a procedural product scene."""
    rng = np.random.default_rng([seed, SPLITS.index(split), 13])  # type: ignore[arg-type]
    n = min(len(reg), int(np.ceil(len(reg) * PRODUCT_SHOT_SHARE)))
    chosen = sorted(reg[int(i)].slug for i in rng.permutation(len(reg))[:n])
    photos = [p.photo_id for p in PhotoPool.from_sources(photo_dirs, split=split, seed=seed, role="catalogue").photos]
    photos = [photos[int(i)] for i in rng.permutation(len(photos))]
    return {slug: (photos[k] if k < len(photos) else "procedural") for k, slug in enumerate(chosen)}


def _plan_queries(split: str, reg: list[LogoSource], unreg: list[LogoSource], cfg: SizeConfig, seed: int,
                  shots: dict[str, str]) -> list[_QueryJob]:
    rng = np.random.default_rng([seed, SPLITS.index(split), 11])  # type: ignore[arg-type]
    specs: list[tuple[str, str, str, str]] = []  # family, brand, mark, other
    for src in reg:
        for fam in MARK_FAMILIES:
            if fam == "product_photo" and src.slug not in shots:
                continue
            for _ in range(cfg.per_brand.get(fam, 0)):
                other = ""
                if fam == "knockoff":
                    donors = unreg or [r for r in reg if r.slug != src.slug]
                    other = donors[int(rng.integers(len(donors)))].slug if donors else ""
                specs.append((fam, src.slug, src.slug, other))
    n_photo = max(cfg.min_distractors, round(cfg.distractor_photo_ratio * len(reg)))
    specs += [("distractor_photo", "", "", "")] * n_photo
    if unreg:
        n_unreg = max(cfg.min_distractors, round(cfg.distractor_unregistered_ratio * len(reg)))
        specs += [("distractor_unregistered", "", unreg[i % len(unreg)].slug, "") for i in range(n_unreg)]
    order = rng.permutation(len(specs))  # query ids carry no hint of family or brand
    jobs = []
    for qnum, i in enumerate(order):
        fam, brand, mark, other = specs[int(i)]
        jobs.append(_QueryJob(split, int(i), f"q{qnum:06d}", fam, brand, mark, other))
    return jobs


# --------------------------------------------------------------------------- writing


def write_csv(path: Path, header: Sequence[str], rows: Sequence[dict[str, str]]) -> None:
    """Deterministic CSV (fixed column order, \\n line ends) of the benchmark format's tables."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(header), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def contact_sheet(images: Sequence[np.ndarray], captions: Sequence[str], thumb: int = 160, cols: int = 6) -> np.ndarray:
    """A grid of letterboxed thumbnails with a caption under each (for eyeballing a corpus)."""
    if not images:
        raise InputError("contact sheet needs at least one image")
    cap_h = 28
    rows = (len(images) + cols - 1) // cols
    sheet = np.full((rows * (thumb + cap_h), cols * thumb, 3), 255, np.uint8)
    for k, (img, cap) in enumerate(zip(images, captions, strict=True)):
        r, c = divmod(k, cols)
        t = resize_max(ensure_rgb(img), thumb - 4)
        y0 = r * (thumb + cap_h) + (thumb - t.shape[0]) // 2
        x0 = c * thumb + (thumb - t.shape[1]) // 2
        sheet[r * (thumb + cap_h) : r * (thumb + cap_h) + thumb, c * thumb : (c + 1) * thumb] = 230
        sheet[y0 : y0 + t.shape[0], x0 : x0 + t.shape[1]] = t
        for line, text in enumerate([cap[:30], cap[30:60]]):
            cv2.putText(sheet, text, (c * thumb + 3, r * (thumb + cap_h) + thumb + 11 + 12 * line),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.32, (20, 20, 20), 1, cv2.LINE_AA)
    return sheet


def _contact_sheets(split_dir: Path, qrows: list[dict[str, str]], refs: list[dict[str, str]], per_sheet: int = 24) -> None:
    by_family: dict[str, list[dict[str, str]]] = {}
    for row in qrows:
        by_family.setdefault(row["family"], []).append(row)
    for fam, rows in by_family.items():
        rows = rows[:per_sheet]
        imgs = [cv2.cvtColor(cv2.imread(str(split_dir / "queries" / f"{r['query_id']}.jpg")), cv2.COLOR_BGR2RGB) for r in rows]
        caps = [f"{r['query_id']} {r['brand'] or '-'}: " + "+".join(t for t in r["transform"].split("+") if not t.startswith("photo=")) for r in rows]
        _write_png(split_dir / f"contact_{fam}.png", contact_sheet(imgs, caps))
    refs = refs[:per_sheet]
    if refs:
        imgs = [cv2.cvtColor(cv2.imread(str(split_dir / "references" / f"{r['reference_id']}.png")), cv2.COLOR_BGR2RGB) for r in refs]
        _write_png(split_dir / "contact_references.png", contact_sheet(imgs, [r["reference_id"] for r in refs]))


# --------------------------------------------------------------------------- build


def _run_jobs(fn, jobs: list, workers: int, init_args: tuple, desc: str, progress: bool) -> list:  # noqa: ANN001
    from tqdm import tqdm

    if workers <= 1:
        _init_worker(*init_args)
        return [fn(j) for j in tqdm(jobs, desc=desc, disable=not progress, unit="img")]
    ctx = multiprocessing.get_context("spawn")  # no forked OpenCV/thread state
    with ctx.Pool(workers, initializer=_init_worker, initargs=init_args) as pool:
        it = pool.imap_unordered(fn, jobs, chunksize=16)
        return list(tqdm(it, total=len(jobs), desc=desc, disable=not progress, unit="img"))


def build_corpus(
    out_dir: Path,
    size: Size = "tiny",
    seed: int = 0,
    photo_dirs: Sequence[Path] = (),
    workers: int = 2,
    splits: Sequence[str] = SPLITS,
    progress: bool = True,
) -> Manifest:
    """Build the corpus under ``out_dir`` (created; existing split folders are replaced)."""
    t0 = time.perf_counter()
    if size not in SIZES:
        raise InputError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise InputError(f"splits must be a non-empty subset of {SPLITS}, got {list(splits)}")
    photo_dirs = [Path(p) for p in photo_dirs]
    for p in photo_dirs:
        if not p.is_dir():
            raise InputError(f"photo folder does not exist: {p}")
    cfg = SIZES[size]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    init_args = (str(out_dir), seed, size, [str(p) for p in photo_dirs])

    counts: dict[str, SplitCounts] = {}
    photo_summary: dict[str, object] = {}
    licences: Counter[str] = Counter()
    for split in [s for s in SPLITS if s in splits]:
        split_dir = out_dir / split
        if split_dir.exists():
            import shutil

            shutil.rmtree(split_dir)
        (split_dir / "queries").mkdir(parents=True)
        reg, unreg = _choose_brands(split, cfg, seed)
        if not reg:
            raise InputError(f"no brands available for split {split!r}")
        shots = _plan_shots(split, reg, seed, photo_dirs)
        ref_jobs = [_RefJob(split, i, s.slug, shots.get(s.slug, "")) for i, s in enumerate(reg)]
        ref_rows = [r for rows in _run_jobs(_do_ref, ref_jobs, workers, init_args, f"{split} references", progress) for r in rows]
        ref_rows.sort(key=lambda r: r["reference_id"])
        q_jobs = _plan_queries(split, reg, unreg, cfg, seed, shots)
        q_rows = sorted(_run_jobs(_do_query, q_jobs, workers, init_args, f"{split} queries", progress), key=lambda r: r["query_id"])
        write_csv(split_dir / "references.csv", ["reference_id", "brand", "sku", "kind", "source", "license"], ref_rows)
        write_csv(split_dir / "queries.csv", ["query_id", "family", "brand", "transform"], q_rows)
        write_csv(split_dir / "ground_truth.csv", ["query_id", "reference_id"], [r for r in q_rows if r["reference_id"]])
        _contact_sheets(split_dir, q_rows, ref_rows)
        fam_counts = Counter(r["family"] for r in q_rows)
        counts[split] = SplitCounts(
            brands=len(reg),
            unregistered_brands=len(unreg),
            references=len(ref_rows),
            queries=len(q_rows),
            families={f: fam_counts.get(f, 0) for f in FAMILIES},
        )
        licences.update(s.license for s in reg + unreg)
        photo_summary[split] = PhotoPool.from_sources(photo_dirs, split=split, seed=seed).sources_summary()

    seconds = time.perf_counter() - t0
    manifest = {
        "format": FORMAT,
        "size": size,
        "seed": seed,
        "families": list(FAMILIES),
        "reference_names": list(REFERENCE_NAMES) + [PRODUCT_SHOT],
        "ground_truth_rule": ("copies -> the reference they were made from; logo_in_photo and knockoff -> <brand>/logo_clean; "
                              f"product_photo -> <brand>/{PRODUCT_SHOT}; distractors -> no row"),
        "sources": {
            "logos": {
                "package": PACKAGE,
                "version": package_version(),
                "default_license": DEFAULT_LICENSE,
                "licenses_used": dict(sorted(licences.items())),
                "excluded_for_license": [{"slug": s.slug, "license": s.license} for s in excluded_sources()],
                "notice": "The marks remain their owners' trademarks; for testing and benchmarking only.",
            },
            "photos": {"by_split": photo_summary, "folders": [p.name for p in photo_dirs]},
            "procedural": "gradients, fabric and tabletop textures, product mock-ups generated with OpenCV",
        },
        "splits": {k: asdict(v) for k, v in counts.items()},
        "build": {"seconds": round(seconds, 2), "workers": workers, "created_unix": int(time.time())},
    }
    path = out_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return Manifest(out_dir, size, seed, counts, seconds, path)


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny",
                        help="tiny: a handful of brands per split, seconds (tests); standard: every val/test brand "
                             "(>=300 test brands, >=2,000 test queries) and 600 train brands, a few minutes; "
                             "train: every brand of every split")
    parser.add_argument("--seed", type=int, default=0, help="same seed -> byte-identical corpus (brand split included)")
    parser.add_argument("--photos", type=Path, action="append", default=[], metavar="DIR",
                        help="folder of background photos (repeatable; searched recursively). Without it, "
                             "scikit-image's bundled photos (if installed) and procedural scenes are used")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default data_cache/corpus_<size>)")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS), help="splits to build")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (1 = in-process)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    out = args.out or Path("data_cache") / f"corpus_{args.size}"
    try:
        m = build_corpus(out, args.size, args.seed, args.photos, args.workers, args.splits, progress=not args.no_progress)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for split, c in m.splits.items():
        fams = ", ".join(f"{k}={v}" for k, v in c.families.items())
        print(f"{split}: {c.brands} brands (+{c.unregistered_brands} unregistered), {c.references} references, {c.queries} queries ({fams})")
    print(f"wrote {m.path} in {m.seconds:.1f}s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="brandguard corpus",
        description=(
            "Build a brand-imagery benchmark in DISC21 format from real marks (simple-icons) and photos. "
            "Per split: references/<brand>/<name>.png, queries/<qid>.jpg, ground_truth.csv, queries.csv, "
            "references.csv and contact sheets; plus manifest.json. Query families: " + ", ".join(FAMILIES) + "."
        ),
        epilog="example: brandguard corpus --size standard --seed 0 --photos ../shared/data/clothing-photos --out data_cache/corpus_std",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
