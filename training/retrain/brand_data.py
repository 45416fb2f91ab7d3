"""What a brand's fine-tune learns from: its references (read, held out by a stable hash, or
generated for demos), the labels its team gave listings in the leads store (``FeedbackLabels``),
the other brands' imagery that must not move (``anchor_images``), and the two views of each
training instance (``ViewSource``, from the ``datasets.augment`` families).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from brandguard.artifacts import sha256_file
from brandguard.errors import InputError
from brandguard.inputs import IMAGE_EXTENSIONS, ReferenceRow
from brandguard.training.retrain.benchmark import other_brand_sources
from brandguard.vision.bundle import Bundle, ModelCard


# --------------------------------------------------------------------------- references


def make_brand_references(slug: str, n: int, out: str | Path, seed: int = 0, size: int = 320) -> Path:
    """~``n`` genuine-looking reference images of a simple-icons brand (for onboarding demos and
    tests): the mark in its colour and a few others, on plain canvases and product mock-ups.
    Writes ``out/<slug>/ref_NNN.png``; returns ``out``."""
    from brandguard.datasets.augment.views import reference_views
    from brandguard.datasets.logos import get_logo_source, render_logo

    src = get_logo_source(slug)
    rng = np.random.default_rng([seed, 5150])
    folder = Path(out) / slug
    folder.mkdir(parents=True, exist_ok=True)
    palette = [None, "#000000", "#FFFFFF", "#C0C0C0"]
    seen: set[str] = set()
    k = 0
    attempt = 0
    while k < n and attempt < 4 * n:
        color = palette[attempt % len(palette)] if attempt % 5 else None
        if attempt % 7 == 6:
            color = "#%02X%02X%02X" % tuple(int(c) for c in rng.integers(0, 256, 3))
        mark = np.asarray(render_logo(src, int(rng.integers(96, 256)), color=color))
        views = reference_views(rng, mark, size=size)
        name = "logo_clean" if attempt % 4 == 0 else "logo_product"
        img = views[name]
        attempt += 1
        digest = hashlib.sha256(img.tobytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        if ok:
            (folder / f"ref_{k:03d}.png").write_bytes(buf.tobytes())
            k += 1
    return Path(out)


def read_brand_references(source: str | Path, brand: str) -> list[ReferenceRow]:
    """The brand's references from ``DIR/<brand>/*``, ``DIR/*`` (all one brand), or a
    JSONL/CSV/Parquet/folder that ``read_references`` understands (rows of other brands dropped)."""
    from brandguard.inputs import read_references

    p = Path(source)
    if p.is_dir():
        folder = p / brand if (p / brand).is_dir() else p
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        rows = [ReferenceRow(f"{brand}/{f.stem}", brand, str(f.resolve()), kind="brand_reference") for f in files]
        if not rows:
            rows = [r for r in read_references(p) if r.brand == brand]
    else:
        rows = [r for r in read_references(p) if r.brand == brand]
    if len(rows) < 2:
        raise InputError(f"brand {brand!r}: need at least 2 reference images in {source}, found {len(rows)}")
    return rows


def split_holdout(rows: Sequence[ReferenceRow], fraction: float, seed: int) -> tuple[list[ReferenceRow], list[ReferenceRow]]:
    """(train, held-out) by a stable hash of the reference id: the same references stay held
    out across retrains, so benchmarks of successive versions are comparable."""
    def h(r: ReferenceRow) -> float:
        return int(hashlib.sha256(f"{seed}:{r.reference_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    ranked = sorted(rows, key=h)
    n_hold = min(len(rows) - 1, max(1, round(fraction * len(rows))))
    return sorted(ranked[n_hold:], key=lambda r: r.reference_id), sorted(ranked[:n_hold], key=lambda r: r.reference_id)


def files_digest(paths: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(sha256_file(Path(p)).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- feedback labels


@dataclass(frozen=True)
class FeedbackLabels:
    """Labelled listings of the brand from the leads store."""

    positives: list[tuple[str, str | None]]  # (image path, matched reference id) confirmed counterfeit
    negatives: list[tuple[str, str]]  # (image path, status) genuine / dismissed
    lead_ids: list[int]


def read_feedback(leads_db: str | Path | None, brand: str) -> FeedbackLabels:
    """Confirmed counterfeits (positives) and genuine/dismissed leads (threshold negatives)."""
    if leads_db is None:
        return FeedbackLabels([], [], [])
    from brandguard.cases.leads import LeadStore

    if not Path(leads_db).is_file():
        raise InputError(f"leads database {leads_db} does not exist")
    store = LeadStore(leads_db)
    pos: list[tuple[str, str | None]] = []
    neg: list[tuple[str, str]] = []
    ids: list[int] = []
    try:
        for status in ("confirmed_counterfeit", "genuine", "dismissed"):
            offset = 0
            while True:
                page = store.list_leads(brand=brand, status=status, limit=1000, offset=offset)
                for lead in page:
                    path = next((p for p in (lead.original_path, lead.image_path) if p and Path(p).is_file()), None)
                    if path is None:
                        continue
                    ids.append(lead.id)
                    if status == "confirmed_counterfeit":
                        pos.append((path, lead.reference_id))
                    else:
                        neg.append((path, status))
                if len(page) < 1000:
                    break
                offset += 1000
    finally:
        store.close()
    return FeedbackLabels(pos, neg, sorted(ids))



# --------------------------------------------------------------------------- views


class ViewSource:
    """Makes the two views of each instance, from numpy/OpenCV augmentations (no torch)."""

    def __init__(self, brand_images: list[np.ndarray], brand_marks: list[np.ndarray | None],
                 counterfeit_pairs: list[tuple[np.ndarray, np.ndarray]], anchors: list[np.ndarray],
                 donors: list[np.ndarray], card: ModelCard, side: int, seed: int,
                 photo_fraction: float = 0.0) -> None:
        from brandguard.datasets.photos import PhotoPool

        self.photo_fraction = photo_fraction
        self.brand_images, self.brand_marks = brand_images, brand_marks
        self.counterfeits, self.anchors, self.donors = counterfeit_pairs, anchors, donors
        self.card, self.side, self.seed = card, side, seed
        self.pool = PhotoPool.from_sources([], split="train", seed=seed, max_side=side)

    def _size(self, img: np.ndarray) -> np.ndarray:
        from brandguard.datasets.augment.ops import ensure_rgb
        from brandguard.vision.preprocess import resize_for_model

        return resize_for_model(ensure_rgb(img), self.card)

    def brand_pair(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        from brandguard.datasets.augment.families import copy_light, knockoff, logo_in_photo
        from brandguard.datasets.augment.views import training_view

        if self.counterfeits and rng.random() < 0.25:
            ref, listing = self.counterfeits[int(rng.integers(len(self.counterfeits)))]
            return self._size(copy_light(rng, ref, max_side=self.side)), self._size(copy_light(rng, listing, max_side=self.side))
        i = int(rng.integers(len(self.brand_images)))
        ref, mark = self.brand_images[i], self.brand_marks[i]
        v1 = ref if rng.random() < 0.3 else copy_light(rng, ref, max_side=self.side)
        r = rng.random()
        if mark is not None and r < 0.25:
            donor = self.donors[int(rng.integers(len(self.donors)))] if self.donors else None
            photo, _ = self.pool.sample(rng)
            v2 = knockoff(rng, mark, donor, photo, max_side=self.side)
        elif mark is not None and r < 0.45:
            photo, _ = self.pool.sample(rng)
            v2 = logo_in_photo(rng, mark, photo, max_side=self.side)
        else:
            v2 = training_view(rng, ref, self.pool, self.anchors[:4])
        return self._size(v1), self._size(v2)

    def anchor_pair(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        from brandguard.datasets.augment.views import training_view

        if rng.random() < self.photo_fraction:
            # Plain listing photos are what most distractors look like: they must stay away from
            # the brand's cluster, and where the parent model put them.
            img, _ = self.pool.sample(rng)
        else:
            img = self.anchors[int(rng.integers(len(self.anchors)))]
        return (self._size(training_view(rng, img, self.pool, ())),
                self._size(training_view(rng, img, self.pool, ())))

    def batch(self, step: int, n_brand: int, n_anchor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(2B x S x S x 3 uint8 views [first views, then second views], labels (B,), is_anchor (B,))."""
        rng = np.random.default_rng([self.seed, 777, step])
        pairs = [self.brand_pair(rng) for _ in range(n_brand)] + [self.anchor_pair(rng) for _ in range(n_anchor)]
        v = np.stack([p[0] for p in pairs] + [p[1] for p in pairs])
        labels = np.array([0] * n_brand + list(range(1, n_anchor + 1)))
        return v, labels, np.array([False] * n_brand + [True] * n_anchor)


def anchor_images(parent: Bundle, brand: str, n_brands: int, seed: int, cache_dir: str | None,
                  side: int) -> tuple[list[np.ndarray], list[str]]:
    """Other brands' imagery whose embeddings must not move: the parent index's references of
    other brands (what production matches against), topped up with train-split marks."""
    from brandguard.datasets.augment.ops import ensure_rgb, resize_max
    from brandguard.datasets.augment.views import reference_views
    from brandguard.index.manifest import MANIFEST_FILE
    from brandguard.index.store import ReferenceIndex

    imgs: list[np.ndarray] = []
    desc: list[str] = []
    if (parent.path / MANIFEST_FILE).is_file():
        idx = ReferenceIndex.load(parent.path, parent.card)
        try:
            recs = [r for r in idx.records() if r.brand != brand]
        finally:
            idx.close()
        rng = np.random.default_rng([seed, 99])
        for r in [recs[i] for i in rng.permutation(len(recs))[:200]]:
            p = Path(r.source) if Path(r.source).is_absolute() else parent.path / r.source
            im = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if im is not None:
                imgs.append(resize_max(cv2.cvtColor(im, cv2.COLOR_BGR2RGB), side))
        desc.append(f"{len(imgs)} references of other brands from the parent index")
    rng = np.random.default_rng([seed, 98])
    marks = other_brand_sources(n_brands, seed, cache_dir, skip=0, size=side // 2, exclude=brand)
    for _slug, mark in marks:
        views = reference_views(rng, mark, size=side)
        imgs.append(views["logo_clean"] if rng.random() < 0.5 else views["logo_product"])
    desc.append(f"{len(marks)} train-split simple-icons marks (reference views)")
    return [ensure_rgb(i) for i in imgs], desc
