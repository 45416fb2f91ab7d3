"""Brand names written on listing photos: fonts found offline and text rendered onto photos.

For the text-mark benchmark family (``benchmarks/bench_text.py``) and the tests: a word is
drawn in a given font, size, colour and rotation (with a contrasting outline or on a label,
as tags and overlays are) onto a photo, and the true box of the ink is returned in the
photo's pixels.

Fonts come only from what is installed: TrueType/OpenType fonts of the system (``fc-list``;
DejaVu on Debian), Pillow's own scalable default font, OpenCV's Hershey stroke fonts, and for
Chinese a CJK font: the system's (``fc-list :lang=zh``) or Noto Sans CJK from the registry
package ``cvttf-notosanscjk-regular`` (SIL OFL 1.1; in the ``bench`` extra). Nothing is
downloaded.
"""

from __future__ import annotations

import importlib.util
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

CJK_PACKAGE = "cvttf_NotoSansCJK_Regular"
HERSHEY = {"hershey-simplex": cv2.FONT_HERSHEY_SIMPLEX, "hershey-duplex": cv2.FONT_HERSHEY_DUPLEX,
           "hershey-triplex": cv2.FONT_HERSHEY_TRIPLEX, "hershey-complex": cv2.FONT_HERSHEY_COMPLEX}


@dataclass(frozen=True)
class Font:
    """A font to draw with: a file (TrueType/OpenType), Pillow's default, or a Hershey font."""

    name: str
    path: str | None = None  # None: Pillow's built-in scalable font, or Hershey (name says which)
    cjk: bool = False


def _fc_list(query: str = ":") -> list[str]:
    try:
        out = subprocess.run(["fc-list", query, "file"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted({line.split(":")[0].strip() for line in out.splitlines() if line.strip()})


@lru_cache(maxsize=1)
def latin_fonts() -> tuple[Font, ...]:
    """Installed Latin fonts: a few system families (regular/bold/serif/mono/condensed/oblique
    where present), Pillow's default, and two Hershey fonts."""
    files = [f for f in _fc_list() if f.lower().endswith((".ttf", ".otf"))]
    wanted = ("DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansCondensed.ttf",
              "DejaVuSerif-BoldItalic.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans.ttf")
    by_name = {Path(f).name: f for f in files}
    out = [Font(Path(by_name[w]).stem, by_name[w]) for w in wanted if w in by_name]
    if not out:  # another system: whatever it has, a handful
        out = [Font(Path(f).stem, f) for f in files[:6]]
    out.append(Font("pillow-default"))
    out += [Font(n) for n in ("hershey-duplex", "hershey-triplex")]
    return tuple(out)


@lru_cache(maxsize=1)
def cjk_font() -> Font | None:
    """A font with Chinese glyphs: the system's, else the registry package's Noto Sans CJK; None if neither."""
    for f in _fc_list(":lang=zh"):
        if f.lower().endswith((".ttf", ".otf", ".ttc")):
            return Font(Path(f).stem, f, cjk=True)
    try:
        spec = importlib.util.find_spec(CJK_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for p in sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.otf")):
            return Font(p.stem, str(p), cjk=True)
    return None


def _pil_font(font: Font, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if font.path is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(font.path, size=size)


def render_word(text: str, font: Font, size: int, colour: tuple[int, int, int],
                outline: tuple[int, int, int] | None = None, label: tuple[int, int, int] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(RGB tile, alpha) of ``text`` drawn at about ``size`` px cap height, with an optional
    outline in a contrasting colour, or on a plain ``label`` rectangle (a tag)."""
    pad = max(4, size // 3)
    if font.name in HERSHEY:
        face = HERSHEY[font.name]
        scale = size / 22.0
        thick = max(1, int(round(size / 12)))
        (tw, th), base = cv2.getTextSize(text, face, scale, thick + (2 if outline else 0))
        w, h = tw + 2 * pad, th + base + 2 * pad
        alpha = np.zeros((h, w), np.uint8)
        rgb = np.zeros((h, w, 3), np.uint8)
        org = (pad, pad + th)
        if outline is not None:
            cv2.putText(rgb, text, org, face, scale, outline, thick + 2 * max(1, thick // 2 + 1), cv2.LINE_AA)
            cv2.putText(alpha, text, org, face, scale, 255, thick + 2 * max(1, thick // 2 + 1), cv2.LINE_AA)
        cv2.putText(rgb, text, org, face, scale, colour, thick, cv2.LINE_AA)
        cv2.putText(alpha, text, org, face, scale, 255, thick, cv2.LINE_AA)
    else:
        f = _pil_font(font, int(size * 1.35))
        stroke = max(1, size // 14) if outline is not None else 0
        probe = ImageDraw.Draw(Image.new("L", (1, 1)))
        x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=f, stroke_width=stroke)
        w, h = x1 - x0 + 2 * pad, y1 - y0 + 2 * pad
        tile = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        d = ImageDraw.Draw(tile)
        d.text((pad - x0, pad - y0), text, font=f, fill=(*colour, 255), stroke_width=stroke,
               stroke_fill=(*(outline or colour), 255))
        arr = np.asarray(tile)
        rgb, alpha = np.ascontiguousarray(arr[..., :3]), np.ascontiguousarray(arr[..., 3])
    if label is not None:
        a = alpha.astype(np.float32)[..., None] / 255.0
        rgb = (rgb * a + np.array(label, np.float32) * (1 - a)).astype(np.uint8)
        alpha = np.full_like(alpha, 255)
    return rgb, alpha


def paste_word(photo: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, centre: tuple[float, float],
               angle: float, opacity: float = 1.0) -> tuple[np.ndarray, list[int]]:
    """``photo`` with the tile rotated by ``angle`` degrees (counter-clockwise) and pasted at
    ``centre``; returns the image and the ink's box [x0, y0, x1, y1] in the photo's pixels."""
    h, w = photo.shape[:2]
    th, tw = alpha.shape
    m = cv2.getRotationMatrix2D((tw / 2, th / 2), angle, 1.0)
    m[:, 2] += np.array(centre) - np.array([tw / 2, th / 2])
    warped = cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    a = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0).astype(np.float32) / 255.0
    a *= float(opacity)
    out = (photo.astype(np.float32) * (1 - a[..., None]) + warped.astype(np.float32) * a[..., None])
    ys, xs = np.nonzero(a > 0.25)
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else [0, 0, 0, 0]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), box


def contrasting(photo: np.ndarray, centre: tuple[float, float], rng: np.random.Generator
                ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(ink, outline) colours that read on the photo around ``centre``: dark on light, light on dark."""
    h, w = photo.shape[:2]
    x, y = int(np.clip(centre[0], 0, w - 1)), int(np.clip(centre[1], 0, h - 1))
    patch = photo[max(0, y - 20):y + 20, max(0, x - 40):x + 40]
    light = float(patch.mean()) > 127 if patch.size else True
    dark_inks = [(15, 15, 15), (120, 10, 20), (10, 30, 110), (20, 70, 30)]
    light_inks = [(250, 250, 250), (250, 220, 60), (240, 240, 200)]
    ink = dark_inks[rng.integers(len(dark_inks))] if light else light_inks[rng.integers(len(light_inks))]
    outline = (255, 255, 255) if light else (0, 0, 0)
    return tuple(int(c) for c in ink), outline
