"""Turn decoded RGB images into the model's input tensor, exactly as the model card says.

Training (``brandguard.training``) calls the same functions, so train-time and serve-time
preprocessing cannot drift apart.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from brandguard.errors import InputError
from brandguard.vision.bundle import ModelCard

_INTERP = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}


def resize_for_model(rgb: np.ndarray, card: ModelCard) -> np.ndarray:
    """Resize an HxWx3 uint8 image to ``input_size`` square ("squash": no crop, so a mark
    near the border is never cut away; copy detection cares about all of the content)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"expected HxWx3 uint8 RGB, got shape {rgb.shape} dtype {rgb.dtype}")
    s = card.input_size
    h, w = rgb.shape[:2]
    if (h, w) == (s, s):
        return rgb
    # INTER_AREA only helps when shrinking; enlarging small images uses linear.
    interp = _INTERP[card.interpolation] if (h >= s and w >= s) else cv2.INTER_LINEAR
    return cv2.resize(rgb, (s, s), interpolation=interp)


def normalise_batch(images: np.ndarray, card: ModelCard) -> np.ndarray:
    """NxSxSx3 uint8 -> Nx3xSxS float32, scaled to [0,1] then mean/std normalised."""
    x = images.astype(np.float32) * np.float32(1.0 / 255.0)
    x -= np.asarray(card.mean, dtype=np.float32)
    x /= np.asarray(card.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess_batch(images: Sequence[np.ndarray], card: ModelCard) -> np.ndarray:
    """Resize and normalise a list of RGB images into one model-ready batch."""
    if len(images) == 0:
        s = card.input_size
        return np.zeros((0, 3, s, s), dtype=np.float32)
    resized = np.stack([resize_for_model(im, card) for im in images])
    return normalise_batch(resized, card)
