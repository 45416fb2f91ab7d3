"""Region crops searched besides the whole image.

A logo often covers a tenth of a listing photo; one global vector of the photo barely moves
when the logo is there. Searching a few overlapping crops gives the mark a bigger share of
some crop. Each crop costs one more embedding, so the set is small and fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brandguard.errors import InputError

REGION_MODES = ("full", "grid")


@dataclass(frozen=True)
class Box:
    x0: int
    y0: int
    x1: int
    y1: int
    name: str

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]


def region_boxes(width: int, height: int, mode: str = "full") -> list[Box]:
    """Boxes to embed for an image of ``width`` x ``height``; the first is always the whole image.

    ``grid``: the whole image, four overlapping quadrants at 60% of each side, and the centre
    at 50% (6 crops), so a mark anywhere covering >= ~10% of the side fills >= ~1/6 of a crop.
    """
    if mode not in REGION_MODES:
        raise InputError(f"region mode must be one of {REGION_MODES}, got {mode!r}")
    boxes = [Box(0, 0, width, height, "full")]
    if mode == "full" or min(width, height) < 64:
        return boxes
    cw, ch = int(round(width * 0.6)), int(round(height * 0.6))
    for name, (x, y) in {"top_left": (0, 0), "top_right": (width - cw, 0),
                         "bottom_left": (0, height - ch), "bottom_right": (width - cw, height - ch)}.items():
        boxes.append(Box(x, y, x + cw, y + ch, name))
    hw, hh = width // 4, height // 4
    boxes.append(Box(hw, hh, width - hw, height - hh, "centre"))
    return boxes


def crop(rgb: np.ndarray, box: Box) -> np.ndarray:
    return np.ascontiguousarray(rgb[box.y0:box.y1, box.x0:box.x1])
