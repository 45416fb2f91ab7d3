"""Training data for self-supervised copy detection: marks, photos, and paired augmented views.

An *instance* is either a brand mark (a rendered train-split logo) or a real photo. Each
training step draws a batch of distinct instances and makes two independently augmented
views of each; the loss pulls the two views together and pushes other instances away.

Everything per-sample is numpy/OpenCV (cheap on CPU); marks are rendered once and cached
to an ``.npz`` so a run does not pay the SVG rendering again. Batches are generated from
``(seed, step)`` alone, so a resumed run sees exactly the batches the original would have.

Two augmentation stacks make the views:

- the shared one, :mod:`brandguard.datasets.augment` (``views.training_view``: the same query
  families the corpus and the benchmarks are built with), used when
  ``ViewConfig.use_shared_augment`` is True (the default, and the shipped recipe);
- a second, built-in one in this module (``pixel_edits``, ``geometric_edits``,
  ``alpha_blend_box``, ``colour_mark``, generated backgrounds): generic re-upload edits. It is
  kept as the baseline of the ablation (``benchmarks/ablation.py``, variant
  ``builtin_augment`` = ``--no-shared-augment``), which measures what the shared augmentation
  adds over it; with the shared stack on, it still makes the 30% of strong views that are not
  ``training_view`` and the light first views.

The brand split comes from :mod:`brandguard.datasets.logos`. ``MEAN``/``STD`` are the input
normalisation the model is trained with (written into its model card at export).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np

from brandguard.datasets import logos
from brandguard.datasets.augment.views import training_view
from brandguard.datasets.photos import photo_split, procedural_background
from brandguard.errors import InputError
from brandguard.inputs import IMAGE_EXTENSIONS
from brandguard.vision.bundle import ModelCard
from brandguard.vision.preprocess import resize_for_model

PHOTO_EXTS = tuple(sorted(IMAGE_EXTENSIONS - {".gif", ".tif", ".tiff"}))
SPLITS = ("train", "val", "test")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- marks


@dataclass(frozen=True)
class MarkSet:
    """Pre-rendered marks: ``rgba`` is N x M x M x 4 uint8 (mark fitted and centred in a
    transparent square), ``colors`` N x 3 uint8 brand colours (RGB)."""

    slugs: tuple[str, ...]
    rgba: np.ndarray
    colors: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.slugs)


def _hex_rgb(hex_str: str) -> tuple[int, int, int]:
    try:
        v = int(hex_str.strip().lstrip("#")[:6], 16)
    except ValueError:
        return (0, 0, 0)
    return ((v >> 16) & 255, (v >> 8) & 255, v & 255)


def _fit_square(rgba: np.ndarray, size: int) -> np.ndarray:
    """Fit an RGBA image inside a transparent ``size`` square, keeping aspect ratio."""
    h, w = rgba.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(rgba, (nw, nh), interpolation=interp)
    out = np.zeros((size, size, 4), np.uint8)
    y, x = (size - nh) // 2, (size - nw) // 2
    out[y : y + nh, x : x + nw] = small
    return out


def _render_marks(split: str, seed: int, size: int, limit: int | None) -> MarkSet:
    slugs, arrays, colors = [], [], []
    # The shared list also drops icons whose licence forbids modification.
    for icon in logos.sources_for_split(split, seed):
        try:
            rgba = np.asarray(logos.render_logo(icon, size, color="#000000"), dtype=np.uint8)
        except Exception:  # noqa: BLE001 - a broken SVG skips one brand, not the run
            continue
        if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba[..., 3].max() < 32:
            continue
        slugs.append(icon.slug)
        arrays.append(_fit_square(rgba, size))
        colors.append(_hex_rgb(icon.hex))
        if limit is not None and len(slugs) >= limit:
            break
    if not slugs:
        raise InputError(f"no marks rendered for split {split!r}")
    return MarkSet(tuple(slugs), np.stack(arrays), np.asarray(colors, np.uint8),
                   "simple-icons-pack (CC0), rendered by brandguard.datasets.logos")


def load_marks(
    split: str = "train",
    seed: int = 0,
    size: int = 128,
    limit: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> MarkSet:
    """Render (or load from cache) every mark of one brand split, as ``size`` squares."""
    if split not in SPLITS:
        raise InputError(f"split {split!r} not one of {SPLITS}")
    if not 16 <= size <= 512:
        raise InputError(f"mark size {size} not in [16, 512]")
    tag = "logos"  # cache files of marks rendered by datasets.logos
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"marks-{tag}-{split}-s{seed}-{size}px-{limit or 'all'}.npz"
        if cache.is_file():
            with np.load(cache, allow_pickle=False) as z:
                return MarkSet(
                    tuple(str(s) for s in z["slugs"]), z["rgba"], z["colors"], str(z["source"])
                )
    marks = _render_marks(split, seed, size, limit)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez_compressed(
            tmp, slugs=np.asarray(marks.slugs), rgba=marks.rgba, colors=marks.colors,
            source=np.asarray(marks.source),
        )
        os.replace(tmp, cache)
    return marks


# --------------------------------------------------------------------------- photos


def list_photos(
    root: str | os.PathLike[str] | None, split: str | None = "train", seed: int = 0, limit: int | None = None
) -> list[Path]:
    """Image files under ``root`` (recursively, sorted); empty when ``root`` is None.

    With ``split`` only photos of that split of the shared photo split
    (``datasets.photos.photo_split`` on ids ``<folder name>/<relative path>``) are kept, so
    photos used by benchmarks' test queries are not trained on.
    """
    if root is None:
        return []
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"photos folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in PHOTO_EXTS and p.is_file())
    if split is not None:
        files = [p for p in files
                 if photo_split(f"{root.name}/{p.relative_to(root).with_suffix('').as_posix()}", seed) == split]
    return files[:limit] if limit else files


def read_photo(path: Path, min_side: int | None = None) -> np.ndarray | None:
    """Decode a photo to RGB. With ``min_side``, JPEG DCT downscaling (half size, much cheaper
    to decode) is used when the half-size image still has at least ``min_side`` pixels."""
    bgr = None
    if min_side is not None:
        try:
            bgr = cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_2)
        except cv2.error:
            bgr = None
        if bgr is not None and min(bgr.shape[:2]) < min_side:
            bgr = None
    if bgr is None:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------- built-in augmentations
# The ablation's baseline stack (see the module docstring); not the shared datasets.augment.


def _generated_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Plain, gradient, or low-frequency noise background (no photos needed)."""
    kind = rng.integers(4)
    if kind == 0:
        return np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)
    if kind == 1:
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = np.linspace(0, 1, w if rng.random() < 0.5 else h, dtype=np.float32)
        ramp = a[None] * (1 - t[:, None]) + b[None] * t[:, None]
        img = np.broadcast_to(ramp[None] if len(t) == w else ramp[:, None], (h, w, 3))
        return np.ascontiguousarray(img).astype(np.uint8)
    if kind == 2:
        cells = rng.integers(2, 9)
        small = rng.integers(0, 256, (cells, cells, 3)).astype(np.uint8)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    base = np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)
    noise = rng.normal(0, rng.uniform(5, 40), (h, w, 1)).astype(np.float32)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _photo_crop(rng: np.random.Generator, photo: np.ndarray, h: int, w: int) -> np.ndarray:
    ph, pw = photo.shape[:2]
    s = rng.uniform(0.3, 1.0)
    ch, cw = max(8, int(ph * s)), max(8, int(pw * s))
    y, x = rng.integers(0, ph - ch + 1), rng.integers(0, pw - cw + 1)
    return cv2.resize(photo[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_AREA)


def colour_mark(rng: np.random.Generator, rgba: np.ndarray, brand: np.ndarray) -> np.ndarray:
    """Give a monochrome mark a colour: the brand's most often, else black/white/random."""
    r = rng.random()
    if r < 0.5:
        c = brand
    elif r < 0.65:
        c = np.zeros(3, np.uint8)
    elif r < 0.75:
        c = np.full(3, 255, np.uint8)
    else:
        c = rng.integers(0, 256, 3).astype(np.uint8)
    out = rgba.copy()
    out[..., :3] = c
    return out


def alpha_blend_box(rgba: np.ndarray, bg: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Alpha-blend ``rgba`` resized into ``box`` = (x, y, w, h) of the RGB background.

    The built-in stack's paste (truncating, no opacity); the shared stack's is
    ``datasets.augment.ops.compose``, which rounds and takes an opacity."""
    x, y, w, h = box
    mark = cv2.resize(rgba, (w, h), interpolation=cv2.INTER_AREA if w < rgba.shape[1] else cv2.INTER_LINEAR)
    H, W = bg.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 <= x0 or y1 <= y0:
        return bg
    out = bg.copy()
    m = mark[y0 - y : y1 - y, x0 - x : x1 - x]
    a = m[..., 3:4].astype(np.float32) * (1.0 / 255.0)
    region = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = (region * (1 - a) + m[..., :3].astype(np.float32) * a).astype(np.uint8)
    return out


def pixel_edits(rng: np.random.Generator, img: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """What re-uploads do to pixels: colour shifts, blur, noise, grey, overlays, JPEG."""
    out = img
    if rng.random() < 0.8 * strength:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + rng.integers(-12, 13)) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.6, 1.4), 0, 255)
        hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(0.7, 1.3) + rng.integers(-25, 26), 0, 255)
        out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    if rng.random() < 0.1 * strength:
        g = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
        out = np.repeat(g[..., None], 3, axis=2)
    if rng.random() < 0.25 * strength:
        k = int(rng.choice([3, 5]))
        out = cv2.GaussianBlur(out, (k, k), 0)
    if rng.random() < 0.2 * strength:
        noise = rng.normal(0, rng.uniform(3, 15), out.shape).astype(np.float32)
        out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.3 * strength:
        out = out.copy()
        h, w = out.shape[:2]
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            text = "".join(rng.choice(list("ABCDEFGHJKLMNPRSTUVWXYZ0123456789 $%"), rng.integers(3, 10)))
            cv2.putText(out, text, (int(rng.integers(0, w // 2)), int(rng.integers(h // 6, h))),
                        cv2.FONT_HERSHEY_SIMPLEX, rng.uniform(0.3, 1.0) * w / 160, color,
                        int(rng.integers(1, 3)), cv2.LINE_AA)
        else:  # a frame or a banner, as in screenshots and marketplace templates
            t = int(rng.integers(2, max(3, h // 8)))
            if rng.random() < 0.5:
                cv2.rectangle(out, (0, 0), (w - 1, h - 1), color, t)
            else:
                y = int(rng.integers(0, h - t))
                out[y : y + t] = color
    if rng.random() < 0.7 * strength:
        q = int(rng.integers(15, 95))
        ok, enc = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            out = cv2.imdecode(enc, cv2.IMREAD_UNCHANGED)
    return out


def geometric_edits(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Crop, aspect change, flip, small rotation/perspective: a copy is rarely pixel-aligned."""
    h, w = img.shape[:2]
    if rng.random() < 0.5:
        s = rng.uniform(0.6, 1.0)
        ch, cw = max(8, int(h * s * rng.uniform(0.85, 1.0))), max(8, int(w * s * rng.uniform(0.85, 1.0)))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        img = img[y : y + ch, x : x + cw]
    if rng.random() < 0.1:
        img = img[:, ::-1]
    if rng.random() < 0.25:
        h, w = img.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-15, 15), rng.uniform(0.9, 1.1))
        img = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), borderMode=cv2.BORDER_REFLECT_101)
    if rng.random() < 0.15:
        h, w = img.shape[:2]
        d = 0.08 * min(h, w)
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        dst = (src + rng.uniform(-d, d, src.shape)).astype(np.float32)
        img = cv2.warpPerspective(np.ascontiguousarray(img), cv2.getPerspectiveTransform(src, dst), (w, h),
                                  borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(img)


# --------------------------------------------------------------------------- views


@dataclass(frozen=True)
class ViewConfig:
    """How views are made; part of the training config."""

    input_size: int = 160
    batch_size: int = 64
    photo_fraction: float = 0.3
    reference_view_prob: float = 0.5
    min_mark_fraction: float = 0.25
    use_shared_augment: bool = True

    def validate(self) -> None:
        if self.batch_size < 2:
            raise InputError("batch_size must be >= 2 (contrastive loss needs negatives)")
        if not 0.0 <= self.photo_fraction <= 1.0:
            raise InputError(f"photo_fraction {self.photo_fraction} not in [0, 1]")
        if not 0.0 <= self.reference_view_prob <= 1.0:
            raise InputError(f"reference_view_prob {self.reference_view_prob} not in [0, 1]")
        if not 0.02 <= self.min_mark_fraction <= 1.0:
            raise InputError(f"min_mark_fraction {self.min_mark_fraction} not in [0.02, 1]")


def _alpha_bbox(alpha: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(alpha > 8)
    if len(xs) == 0:
        return 0, 0, alpha.shape[1], alpha.shape[0]
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


class ViewMaker:
    """Makes the two views of an instance. Pure function of (instance, rng).

    Mark instances: view A is a clean reference-like picture (``reference_view_prob``) or a
    strong view; view B is always strong. A strong view is, with ``use_shared_augment``,
    ``datasets.augment.views.training_view`` on the recoloured bare mark (copy_light /
    copy_strong / logo_in_photo) 70% of the time and the built-in scene+edits otherwise.
    Photo instances: a lightly edited view and a strong view of the same photo.
    """

    def __init__(self, marks: MarkSet, photos: Sequence[Path], cfg: ViewConfig) -> None:
        cfg.validate()
        self.marks, self.photos, self.cfg = marks, list(photos), cfg
        self.card = ModelCard(name="train", architecture="", input_size=cfg.input_size,
                              embedding_dim=8, sha256="0" * 64)
        # The shared augmentation (the same view families the corpus is built with), unless an
        # ablation switches it off to measure what it adds over the built-in scene + edits.
        self.shared: Callable[..., np.ndarray] | None = training_view if cfg.use_shared_augment else None
        self.procedural: Callable[..., np.ndarray] | None = (procedural_background if cfg.use_shared_augment
                                                            else None)
        self.augment_source = "brandguard.datasets.augment" if self.shared else "brandguard.training.data"
        self.bboxes = [_alpha_bbox(m[..., 3]) for m in marks.rgba]
        self.work_side = int(cfg.input_size * 1.4)

    @property
    def n_instances(self) -> int:
        return len(self.marks) + len(self.photos)

    def _random_photo(self, rng: np.random.Generator) -> np.ndarray | None:
        if not self.photos:
            return None
        return read_photo(self.photos[int(rng.integers(len(self.photos)))], self.work_side)

    def _canvas_shape(self, rng: np.random.Generator) -> tuple[int, int]:
        s = int(self.cfg.input_size * rng.uniform(1.0, 1.6))
        aspect = float(np.exp(rng.uniform(np.log(0.65), np.log(1.55))))
        return max(32, int(s / np.sqrt(aspect))), max(32, int(s * np.sqrt(aspect)))

    def _background(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        photo = self._random_photo(rng) if rng.random() < 0.5 else None
        if photo is not None:
            return _photo_crop(rng, photo, h, w)
        if self.procedural is not None and rng.random() < 0.5:
            return np.asarray(self.procedural(rng, h, w), dtype=np.uint8)
        return _generated_background(rng, h, w)

    def _shrink(self, img: np.ndarray) -> np.ndarray:
        """Keep working images near the model size: augmenting 500 px photos wastes CPU."""
        h, w = img.shape[:2]
        s = self.work_side / max(h, w)
        if s >= 1:
            return img
        return cv2.resize(img, (max(2, round(w * s)), max(2, round(h * s))), interpolation=cv2.INTER_AREA)

    def mark_reference(self, rng: np.random.Generator, i: int) -> np.ndarray:
        """A clean, reference-like picture of mark ``i``: brand colour, centred, plain ground."""
        rgba = self.marks.rgba[i].copy()
        rgba[..., :3] = self.marks.colors[i]
        s = self.cfg.input_size
        lum = float(self.marks.colors[i].astype(np.float32) @ np.float32([0.299, 0.587, 0.114]))
        ground = 255 if lum < 200 or rng.random() < 0.3 else 30
        bg = np.full((s, s, 3), ground, np.uint8)
        side = int(s * rng.uniform(0.75, 0.95))
        off = (s - side) // 2
        return alpha_blend_box(rgba, bg, (off, off, side, side))

    def bare_mark(self, rng: np.random.Generator, i: int) -> np.ndarray:
        """Mark ``i`` recoloured, cropped to its alpha box and scaled to the working size."""
        x0, y0, x1, y1 = self.bboxes[i]
        rgba = colour_mark(rng, self.marks.rgba[i][y0:y1, x0:x1], self.marks.colors[i])
        h, w = rgba.shape[:2]
        s = self.work_side / max(h, w)
        return cv2.resize(rgba, (max(2, round(w * s)), max(2, round(h * s))), interpolation=cv2.INTER_LINEAR)

    def mark_in_scene(self, rng: np.random.Generator, i: int) -> np.ndarray:
        """Mark ``i`` recoloured and placed on a photo or generated background."""
        h, w = self._canvas_shape(rng)
        bg = self._background(rng, h, w)
        rgba = colour_mark(rng, self.marks.rgba[i], self.marks.colors[i])
        frac = float(np.exp(rng.uniform(np.log(self.cfg.min_mark_fraction), np.log(0.95))))
        side = max(8, int(min(h, w) * frac))
        x = int(rng.integers(0, w - side + 1))
        y = int(rng.integers(0, h - side + 1))
        return alpha_blend_box(rgba, bg, (x, y, side, side))

    def _others(self, rng: np.random.Generator) -> list[np.ndarray]:
        return [self.mark_reference(rng, int(rng.integers(len(self.marks))))]

    def _shared_photos(self, rng: np.random.Generator) -> list[np.ndarray] | None:
        photo = self._random_photo(rng)
        return None if photo is None else [self._shrink(photo)]

    def strong_mark_view(self, rng: np.random.Generator, i: int) -> np.ndarray:
        if self.shared is not None and rng.random() < 0.7:
            return np.asarray(self.shared(rng, self.bare_mark(rng, i), self._shared_photos(rng),
                                          self._others(rng)), dtype=np.uint8)
        return pixel_edits(rng, geometric_edits(rng, self.mark_in_scene(rng, i)))

    def strong_photo_view(self, rng: np.random.Generator, photo: np.ndarray) -> np.ndarray:
        photo = self._shrink(photo)
        if self.shared is not None and rng.random() < 0.7:
            return np.asarray(self.shared(rng, photo, self._shared_photos(rng), self._others(rng)),
                              dtype=np.uint8)
        return pixel_edits(rng, geometric_edits(rng, photo))

    def views(self, rng: np.random.Generator, instance: int) -> tuple[np.ndarray, np.ndarray]:
        """Two SxSx3 uint8 views of one instance, already resized exactly as at inference."""
        n_marks = len(self.marks)
        if instance < n_marks:
            if rng.random() < self.cfg.reference_view_prob:
                a = pixel_edits(rng, self.mark_reference(rng, instance), strength=0.3)
            else:
                a = self.strong_mark_view(rng, instance)
            b = self.strong_mark_view(rng, instance)
        else:
            photo = read_photo(self.photos[instance - n_marks], self.work_side)
            if photo is None:
                photo = _generated_background(rng, self.cfg.input_size, self.cfg.input_size)
            a = pixel_edits(rng, geometric_edits(rng, self._shrink(photo)), strength=0.5)
            b = self.strong_photo_view(rng, photo)
        return resize_for_model(np.ascontiguousarray(a), self.card), resize_for_model(
            np.ascontiguousarray(b), self.card
        )

    def sample_instances(self, rng: np.random.Generator) -> np.ndarray:
        """Distinct instance ids for one batch, ``photo_fraction`` of them photos (if any)."""
        b = self.cfg.batch_size
        n_marks, n_photos = len(self.marks), len(self.photos)
        n_ph = min(n_photos, int(round(b * self.cfg.photo_fraction))) if n_photos else 0
        n_mk = min(n_marks, b - n_ph)
        ids = [rng.choice(n_marks, n_mk, replace=False)]
        if n_ph:
            ids.append(n_marks + rng.choice(n_photos, n_ph, replace=False))
        return np.concatenate(ids).astype(np.int64)

    def batch(self, seed: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch for ``step``: (2B x S x S x 3 uint8 [all first views, then all second], ids)."""
        rng = np.random.default_rng([seed, step])
        ids = self.sample_instances(rng)
        first, second = [], []
        for inst in ids:
            a, b = self.views(rng, int(inst))
            first.append(a)
            second.append(b)
        return np.stack(first + second), ids


def batch_stream(maker: ViewMaker, seed: int, start_step: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    step = start_step
    while True:
        yield maker.batch(seed, step)
        step += 1


def _ignore_sigint(_worker_id: int) -> None:
    """Ctrl-C reaches the whole process group; only the trainer should react (it saves a
    checkpoint and stops), so the data worker ignores it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(maker: ViewMaker, seed: int, start_step: int, workers: int) -> Iterator[Any]:
    """Endless iterator of (uint8 NHWC tensor, ids tensor) batches, in order of step.

    ``workers`` is 0 (in-process) or 1 (one background process, which on a 2-core box is
    all the data side may have while the other core trains).
    """
    import torch
    from torch.utils.data import DataLoader, IterableDataset

    if workers not in (0, 1):
        raise InputError(f"workers must be 0 or 1 on this project's machines, got {workers}")

    class _Stream(IterableDataset):  # type: ignore[type-arg]
        def __iter__(self) -> Iterator[tuple[Any, Any]]:
            cv2.setNumThreads(1)
            torch.set_num_threads(1)
            for x, ids in batch_stream(maker, seed, start_step):
                yield torch.from_numpy(x), torch.from_numpy(ids)

    kwargs: dict[str, Any] = {"batch_size": None, "num_workers": workers}
    if workers:
        kwargs.update(prefetch_factor=4, persistent_workers=False, worker_init_fn=_ignore_sigint)
    return iter(DataLoader(_Stream(), **kwargs))


def to_model_input(x_u8: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    """NHWC uint8 tensor -> NCHW float tensor normalised like ``preprocess.normalise_batch``,
    in channels_last memory (which is the NHWC layout we already have)."""
    import torch

    m = torch.tensor(mean, dtype=torch.float32)
    s = torch.tensor(std, dtype=torch.float32)
    x = x_u8.to(torch.float32) * torch.tensor(1.0 / 255.0, dtype=torch.float32)
    x = (x - m) / s
    return x.permute(0, 3, 1, 2)
