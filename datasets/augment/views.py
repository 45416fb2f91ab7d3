"""Whole images made from a mark or a reference: the brand's genuine imagery
(``reference_views``) and on-the-fly training views mixing the copy families (``training_view``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import cv2
import numpy as np

from brandguard.datasets.augment.families import copy_light, copy_strong, logo_in_photo
from brandguard.datasets.augment.ops import (
    compose,
    contrast_color,
    ensure_rgb,
    ensure_rgba,
    fit_box,
    mark_color,
    on_canvas,
    resize_max,
)
from brandguard.datasets.photos import procedural_background, product_scene


class PhotoSampler(Protocol):
    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, str]: ...


def reference_views(rng: np.random.Generator, rgba: np.ndarray, size: int = 320) -> dict[str, np.ndarray]:
    """The brand's genuine imagery: ``logo_clean`` (the mark on a plain contrasting canvas)
    and ``logo_product`` (the mark printed on a product mock-up). Keys become reference names."""
    rgba = ensure_rgba(rgba)
    color = mark_color(rgba)
    clean = on_canvas(resize_max(rgba, int(size * 0.8)), contrast_color(color), 0.12)
    scene, area = product_scene(rng, size, size, color=contrast_color(color, rng))
    product = compose(rgba, scene, fit_box(rgba, area))
    return {"logo_clean": clean, "logo_product": product}


# --------------------------------------------------------------------------- training


def training_view(
    rng: np.random.Generator,
    image: np.ndarray,
    photos: PhotoSampler | Sequence[np.ndarray] | None,
    other_images: Sequence[np.ndarray] = (),
    out_size: int | None = None,
) -> np.ndarray:
    """One on-the-fly positive view of ``image`` mixing all copy families (SSCD-style).

    ``image`` is a reference (RGB, or RGBA for a bare mark); ``photos`` is a PhotoPool (or a
    list of RGB arrays, or None for procedural backgrounds); ``other_images`` feed collages.
    With ``out_size`` the view is resized to out_size x out_size.
    """
    if image.ndim == 3 and image.shape[2] == 4:
        rgba = image
        rgb = ensure_rgb(image, contrast_color(mark_color(image)))
    else:
        rgb = ensure_rgb(image)
        rgba = ensure_rgba(rgb)
    side = max(rgb.shape[:2])
    r = rng.random()
    if r < 0.25:
        out = copy_light(rng, rgb, max_side=side)
    elif r < 0.75:
        out = copy_strong(rng, rgb, other_images, max_side=side)
    else:
        if photos is None or (isinstance(photos, Sequence) and len(photos) == 0):
            photo = procedural_background(rng, side, side)
        elif isinstance(photos, Sequence):
            photo = photos[int(rng.integers(len(photos)))]
        else:
            photo, _ = photos.sample(rng)
        out = logo_in_photo(rng, rgba, resize_max(ensure_rgb(photo), side), max_side=side)
    if out_size is not None:
        out = cv2.resize(out, (out_size, out_size), interpolation=cv2.INTER_AREA if max(out.shape[:2]) > out_size else cv2.INTER_LINEAR)
    return out
