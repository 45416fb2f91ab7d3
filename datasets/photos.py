"""Photos used as listing backgrounds and distractors, with a procedural fallback.

Why: knockoffs and copies in the wild sit on real photos (garments, boxes, tables), and a
detector must also stay quiet on photos that show no registered mark. Sources, in order:

1. any folders of images passed in (e.g. a CC0 clothing-photo set, for development and CI);
2. scikit-image's *bundled* sample photos (files shipped in its wheel; nothing is downloaded);
3. procedurally generated product-like scenes (gradients, fabric textures, boxes, garments), so
   every builder runs on a machine that has only registry packages.

Photos are split by a hash of their id, like brands, so test queries never reuse a photo seen
in training.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from brandguard.errors import InputError
from brandguard.inputs import IMAGE_EXTENSIONS


#: Bundled scikit-image files that are real photographs or textures, with their documented terms
#: (from the skimage.data docstrings). logo.png (a mark!), charts and micrographs are left out.
SKIMAGE_PHOTOS: dict[str, str] = {
    "astronaut.png": "public domain (NASA)",
    "brick.png": "CC0-1.0 (CC0Textures)",
    "camera.png": "CC0-1.0 (Lav Varshney)",
    "chelsea.png": "CC0-1.0 (Stefan van der Walt)",
    "clock_motion.png": "public domain (Stefan van der Walt)",
    "coffee.png": "CC0-1.0 (Rachel Michetti)",
    "coins.png": "no known copyright restrictions (Brooklyn Museum)",
    "grass.png": "CC0-1.0 (linolafett)",
    "gravel.png": "CC0-1.0 (CC0Textures)",
    "hubble_deep_field.jpg": "public domain (NASA)",
    "rocket.jpg": "public domain (SpaceX)",
}


@dataclass(frozen=True)
class PhotoSource:
    """One real photo file. ``photo_id`` is stable across machines (no absolute paths)."""

    photo_id: str
    path: Path
    source: str  # "dir:<folder name>" or "scikit-image <version>"
    license: str


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def photo_split(photo_id: str, seed: int = 0) -> str:
    """80/10/10 train/val/test split of photos, independent of the brand split."""
    u = _unit_hash(f"brandguard-photo-split:{seed}:{photo_id}")
    return "train" if u < 0.8 else ("val" if u < 0.9 else "test")


#: Share of each split's photos kept for brands' catalogue shots (the ``product_photo`` family).
CATALOGUE_SHARE = 1 / 3


def is_catalogue_photo(photo_id: str, seed: int = 0) -> bool:
    """Whether a photo is reserved for a catalogue shot. Reserved photos are never a background
    or a distractor: a query showing the same photo would be a true match the ground truth
    does not know of."""
    return _unit_hash(f"brandguard-catalogue:{seed}:{photo_id}") < CATALOGUE_SHARE


def find_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted so pools are reproducible."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"photo folder does not exist: {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _folder_license(folder: Path) -> str:
    lic = folder / "LICENSE"
    if lic.is_file():
        head = lic.read_text(errors="replace")[:400]
        if "CC0" in head:
            return "CC0-1.0"
        return f"see {lic.name} in {folder.name}"
    return "unknown (folder has no LICENSE file)"


def dir_photos(folder: Path) -> list[PhotoSource]:
    folder = Path(folder)
    lic = _folder_license(folder)
    return [
        PhotoSource(f"{folder.name}/{p.relative_to(folder).with_suffix('').as_posix()}", p, f"dir:{folder.name}", lic)
        for p in find_images(folder)
    ]


def skimage_photos() -> list[PhotoSource]:
    """scikit-image's bundled sample photos, if the package is installed (never downloads)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return []
    data_dir = Path(next(iter(spec.submodule_search_locations))) / "data"
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("scikit-image")
    except PackageNotFoundError:  # pragma: no cover
        ver = "unknown"
    out = []
    for name, lic in SKIMAGE_PHOTOS.items():
        path = data_dir / name
        if path.is_file():
            out.append(PhotoSource(f"skimage/{Path(name).stem}", path, f"scikit-image {ver}", lic))
    return out


def load_photo(path: Path, max_side: int = 512) -> np.ndarray:
    """Decode to HxWx3 uint8 RGB, downscaled so the longer side is at most ``max_side``."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"could not decode photo: {path}")
    if img.dtype != np.uint8:
        img = (img / (256 if img.dtype == np.uint16 else max(1, img.max() / 255))).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        bgr = img[..., :3].astype(np.float32)
        a = img[..., 3:4].astype(np.float32) / 255.0
        img = cv2.cvtColor((bgr * a + 255 * (1 - a)).astype(np.uint8), cv2.COLOR_BGR2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    s = max_side / max(h, w)
    if s < 1:
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)


class PhotoPool:
    """A reproducible pool of background photos; falls back to procedural scenes when empty.

    ``sample(rng)`` returns (RGB array, photo_id). Procedural scenes are mixed in at
    ``procedural_fraction`` even when real photos exist, which widens the variety of surfaces.
    """

    def __init__(
        self,
        photos: Sequence[PhotoSource],
        max_side: int = 512,
        procedural_fraction: float = 0.15,
        cache_size: int = 96,
    ) -> None:
        self.photos = list(photos)
        self.max_side = max_side
        self.procedural_fraction = procedural_fraction if self.photos else 1.0
        self._load = functools.lru_cache(maxsize=cache_size)(self._load_uncached)

    @classmethod
    def from_sources(
        cls,
        photo_dirs: Sequence[Path] = (),
        include_skimage: bool = True,
        split: str | None = None,
        seed: int = 0,
        role: Literal["any", "background", "catalogue"] = "any",
        **kwargs: float,
    ) -> PhotoPool:
        """The photos of ``split`` (all splits if None); ``role`` keeps only the photos reserved
        for catalogue shots, or only the others (see ``is_catalogue_photo``)."""
        photos: list[PhotoSource] = []
        for d in photo_dirs:
            photos.extend(dir_photos(Path(d)))
        if include_skimage:
            photos.extend(skimage_photos())
        if split is not None:
            photos = [p for p in photos if photo_split(p.photo_id, seed) == split]
        if role != "any":
            photos = [p for p in photos if is_catalogue_photo(p.photo_id, seed) == (role == "catalogue")]
        return cls(photos, **kwargs)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.photos)

    def _load_uncached(self, index: int) -> np.ndarray:
        img = load_photo(self.photos[index].path, self.max_side)
        img.setflags(write=False)
        return img

    def index_of(self, photo_id: str) -> int:
        """Position of ``photo_id`` in the pool (a catalogue shot's own photo, by id)."""
        for i, p in enumerate(self.photos):
            if p.photo_id == photo_id:
                return i
        raise InputError(f"photo {photo_id!r} is not in this pool")

    def get(self, index: int) -> np.ndarray:
        return self._load(index).copy()

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        if not self.photos or rng.random() < self.procedural_fraction:
            h = int(rng.integers(self.max_side * 3 // 4, self.max_side + 1))
            w = int(rng.integers(self.max_side * 3 // 4, self.max_side + 1))
            return procedural_background(rng, h, w), "procedural"
        i = int(rng.integers(len(self.photos)))
        return self.get(i), self.photos[i].photo_id

    def sources_summary(self) -> dict[str, dict[str, object]]:
        """Per source: photo count and the licences seen (recorded in corpus manifests)."""
        out: dict[str, dict[str, object]] = {}
        for p in self.photos:
            entry = out.setdefault(p.source, {"count": 0, "licenses": []})
            entry["count"] = int(entry["count"]) + 1  # type: ignore[call-overload]
            lics = entry["licenses"]
            if isinstance(lics, list) and p.license not in lics:
                lics.append(p.license)
        return out


# --------------------------------------------------------------------------- procedural scenes


def random_color(rng: np.random.Generator, sat: tuple[float, float] = (0.0, 0.8), val: tuple[float, float] = (0.2, 1.0)) -> tuple[int, int, int]:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], np.float32)
    rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    return int(rgb[0]), int(rgb[1]), int(rgb[2])


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c0 = np.array(random_color(rng, val=(0.5, 1.0)), np.float32)
    c1 = np.array(random_color(rng, val=(0.3, 1.0)), np.float32)
    ang = rng.uniform(0, np.pi)
    tx = np.cos(ang) * np.arange(w, dtype=np.float32) / max(w, 1)
    ty = np.sin(ang) * np.arange(h, dtype=np.float32) / max(h, 1)
    t = ty[:, None] + tx[None, :]  # broadcasting: no HxW coordinate grids
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    lut = (c0[None, :] * (1 - np.linspace(0, 1, 256, dtype=np.float32))[:, None]
           + c1[None, :] * np.linspace(0, 1, 256, dtype=np.float32)[:, None]).astype(np.uint8)
    return lut[(t * 255).astype(np.uint8)]


def fabric_texture(rng: np.random.Generator, h: int, w: int, color: tuple[int, int, int] | None = None) -> np.ndarray:
    """Woven-looking texture: a base colour modulated by a fine weave and soft folds."""
    base = np.array(color if color is not None else random_color(rng, val=(0.25, 0.95)), np.float32)
    period = rng.uniform(2.5, 6.0)
    sx = np.sin(np.arange(w, dtype=np.float32) * 2 * np.pi / period)
    sy = np.sin(np.arange(h, dtype=np.float32) * 2 * np.pi / period)
    weave = 0.5 * sy[:, None] * sx[None, :]
    small = rng.normal(0, 1, (max(2, h // 48), max(2, w // 48))).astype(np.float32)
    folds = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, 1, (h, w)).astype(np.float32)
    shade = 1 + 0.04 * weave + 0.08 * folds + 0.03 * grain
    return np.clip(base[None, None, :] * shade[..., None], 0, 255).astype(np.uint8)


def _tabletop(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = np.array(random_color(rng, sat=(0.2, 0.6), val=(0.35, 0.85)), np.float32)
    streaks = cv2.resize(rng.normal(0, 1, (max(2, h // 3), 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    shade = 1 + 0.12 * streaks + 0.02 * rng.normal(0, 1, (h, w)).astype(np.float32)
    return np.clip(base * shade[..., None], 0, 255).astype(np.uint8)


def draw_product(
    rng: np.random.Generator, canvas: np.ndarray, kind: str | None = None, color: tuple[int, int, int] | None = None
) -> tuple[int, int, int, int]:
    """Draw a garment/box/bag silhouette on ``canvas`` in place; return the (x, y, w, h) print area.

    The print area is where a logo would be on the real product (chest, box face, bag front).
    """
    h, w = canvas.shape[:2]
    kind = kind or str(rng.choice(["tee", "box", "bag", "cap"]))
    color = color if color is not None else random_color(rng, val=(0.15, 0.98))
    cx, cy = w / 2 + rng.uniform(-0.05, 0.05) * w, h / 2 + rng.uniform(-0.04, 0.04) * h
    s = min(h, w) * rng.uniform(0.78, 0.95)
    shade = tuple(int(c * 0.72) for c in color)
    if kind == "tee":
        pts = np.array(
            [(-0.18, -0.45), (-0.45, -0.32), (-0.5, -0.1), (-0.32, -0.05), (-0.3, 0.48), (0.3, 0.48),
             (0.32, -0.05), (0.5, -0.1), (0.45, -0.32), (0.18, -0.45), (0.0, -0.36)], np.float32)
        poly = (pts * s + (cx, cy)).astype(np.int32)
        cv2.fillPoly(canvas, [poly], color, lineType=cv2.LINE_AA)
        cv2.polylines(canvas, [poly], True, shade, max(1, int(s / 160)), cv2.LINE_AA)
        area = (cx - 0.2 * s, cy - 0.26 * s, 0.4 * s, 0.3 * s)
    elif kind == "box":
        bw, bh, d = s * 0.62, s * 0.62, s * 0.18
        x0, y0 = cx - bw / 2 - d / 2, cy - bh / 2 + d / 2
        front = np.array([(x0, y0), (x0 + bw, y0), (x0 + bw, y0 + bh), (x0, y0 + bh)], np.int32)
        top = np.array([(x0, y0), (x0 + d, y0 - d), (x0 + bw + d, y0 - d), (x0 + bw, y0)], np.int32)
        side = np.array([(x0 + bw, y0), (x0 + bw + d, y0 - d), (x0 + bw + d, y0 + bh - d), (x0 + bw, y0 + bh)], np.int32)
        cv2.fillPoly(canvas, [front], color, lineType=cv2.LINE_AA)
        cv2.fillPoly(canvas, [top], tuple(min(255, int(c * 1.15) + 10) for c in color), lineType=cv2.LINE_AA)
        cv2.fillPoly(canvas, [side], shade, lineType=cv2.LINE_AA)
        area = (x0 + 0.1 * bw, y0 + 0.2 * bh, 0.8 * bw, 0.6 * bh)
    elif kind == "bag":
        bw, bh = s * 0.6, s * 0.6
        x0, y0 = cx - bw / 2, cy - bh / 2 + 0.1 * s
        cv2.ellipse(canvas, (int(cx), int(y0)), (int(bw * 0.25), int(bh * 0.3)), 0, 180, 360, shade, max(2, int(s / 50)), cv2.LINE_AA)
        cv2.rectangle(canvas, (int(x0), int(y0)), (int(x0 + bw), int(y0 + bh)), color, -1, cv2.LINE_AA)
        area = (x0 + 0.12 * bw, y0 + 0.2 * bh, 0.76 * bw, 0.55 * bh)
    else:  # cap
        r = s * 0.36
        cv2.ellipse(canvas, (int(cx), int(cy + 0.1 * s)), (int(r), int(r * 0.95)), 0, 180, 360, color, -1, cv2.LINE_AA)
        cv2.ellipse(canvas, (int(cx + 0.2 * s), int(cy + 0.1 * s)), (int(r * 0.9), int(r * 0.18)), 0, 0, 180, shade, -1, cv2.LINE_AA)
        area = (cx - 0.22 * s, cy - 0.18 * s, 0.44 * s, 0.22 * s)
    x, y, aw, ah = (int(round(v)) for v in area)
    return max(0, x), max(0, y), max(4, aw), max(4, ah)


def procedural_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A listing-like scene without any mark: plain gradient, fabric, tabletop or a product."""
    if h < 8 or w < 8:
        raise InputError(f"background too small: {h}x{w}")
    kind = rng.choice(["gradient", "fabric", "tabletop", "product", "product"])
    if kind == "gradient":
        img = _gradient(rng, h, w)
    elif kind == "fabric":
        img = fabric_texture(rng, h, w)
    elif kind == "tabletop":
        img = _tabletop(rng, h, w)
    else:
        img = _gradient(rng, h, w) if rng.random() < 0.6 else _tabletop(rng, h, w)
        draw_product(rng, img)
    return np.ascontiguousarray(img)


def product_scene(
    rng: np.random.Generator, h: int, w: int, kind: str | None = None, color: tuple[int, int, int] | None = None
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A product on a plain or textured backdrop, plus the product's print area (x, y, w, h)."""
    img = _gradient(rng, h, w) if rng.random() < 0.7 else _tabletop(rng, h, w)
    area = draw_product(rng, img, kind, color)
    return img, area
