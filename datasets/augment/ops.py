"""The building blocks of the augmentations: image basics, geometric and photometric edits,
overlays (captions, stickers, screenshot frames, borders, collages), and what every generator
shares (``Log``, ``note``, the contrast and mark colours, ``measure_cost``).

Every random op is ``fn(rng, img, ...)`` on HxWx3 uint8 RGB, pure numpy/OpenCV, and records
what it did in ``log`` when given a list. The query families built from these are in
:mod:`brandguard.datasets.augment.families`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import cv2
import numpy as np

from brandguard.datasets.photos import random_color
from brandguard.errors import InputError

Log = list[str] | None
Box = tuple[int, int, int, int]  # x, y, w, h

_WORDS = [
    "SALE", "100% ORIGINAL", "NEW", "free shipping", "$19.99", "BEST PRICE", "limited",
    "authentic", "-70%", "HOT", "2 for 1", "fast delivery", "top seller", "NWT", "genuine",
]
_FONTS = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_COMPLEX]


def note(log: Log, text: str) -> None:
    """Record one applied transform in ``log`` (no-op when ``log`` is None)."""
    if log is not None:
        log.append(text)


# --------------------------------------------------------------------------- basics


def ensure_rgb(image: np.ndarray, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Any uint8 grey/RGB/RGBA array -> contiguous HxWx3 uint8 RGB (alpha flattened on ``background``)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise InputError("image must be a uint8 numpy array")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 2:
        raise InputError(f"image must be HxW, HxWx3 or HxWx4 with sides >= 2, got {image.shape}")
    if image.shape[2] == 3:
        return np.ascontiguousarray(image)
    return flatten(image, background)


def ensure_rgba(image: np.ndarray) -> np.ndarray:
    """RGB images become fully opaque RGBA (a reference pasted as a rectangle)."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 4:
        return image
    rgb = ensure_rgb(image)
    return np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])


def flatten(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    out = rgba[..., :3].astype(np.float32) * a + np.array(background, np.float32) * (1 - a)
    return np.ascontiguousarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def resize_max(image: np.ndarray, max_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    s = max_side / max(h, w)
    if abs(s - 1) < 1e-3:
        return image
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (max(2, round(w * s)), max(2, round(h * s))), interpolation=interp)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through JPEG at ``quality`` (what every marketplace upload does)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
        raise InputError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def compose(rgba: np.ndarray, background: np.ndarray, box: Box, opacity: float = 1.0) -> np.ndarray:
    """Alpha-blend ``rgba`` resized to ``box`` (x, y, w, h) onto a copy of ``background``.

    The box may extend past the background's edges; the overflow is clipped.
    """
    bg = ensure_rgb(background).copy()
    rgba = ensure_rgba(rgba)
    x, y, w, h = (int(round(v)) for v in box)
    if w < 1 or h < 1:
        raise InputError(f"compose box must have positive size, got {box}")
    interp = cv2.INTER_AREA if w < rgba.shape[1] else cv2.INTER_LINEAR
    mark = cv2.resize(rgba, (w, h), interpolation=interp)
    H, W = bg.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x0 >= x1 or y0 >= y1:
        return bg
    m = mark[y0 - y : y1 - y, x0 - x : x1 - x]
    a = m[..., 3:4].astype(np.float32) * (float(opacity) / 255.0)
    region = bg[y0:y1, x0:x1].astype(np.float32)
    bg[y0:y1, x0:x1] = np.clip(m[..., :3].astype(np.float32) * a + region * (1 - a) + 0.5, 0, 255).astype(np.uint8)
    return bg


def contrast_color(rgb: tuple[int, int, int], rng: np.random.Generator | None = None) -> tuple[int, int, int]:
    """A colour that stands out against ``rgb``: white/near-black, or a random light/dark one with ``rng``."""
    lum = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    if rng is None:
        return (255, 255, 255) if lum < 140 else (24, 24, 28)
    if lum < 140:
        return random_color(rng, sat=(0.0, 0.15), val=(0.88, 1.0))
    return random_color(rng, sat=(0.0, 0.5), val=(0.05, 0.3))


def mark_color(rgba: np.ndarray) -> tuple[int, int, int]:
    """Mean RGB of the mark's opaque pixels (black when it has none)."""
    a = rgba[..., 3] > 128
    if not a.any():
        return (0, 0, 0)
    c = rgba[..., :3][a].mean(axis=0)
    return int(c[0]), int(c[1]), int(c[2])


def on_canvas(rgba: np.ndarray, bg: tuple[int, int, int], pad: float, min_side: int = 0) -> np.ndarray:
    """The mark centred on a plain ``bg`` canvas with ``pad`` x its longest side around it."""
    h, w = rgba.shape[:2]
    p = int(round(pad * max(h, w)))
    H, W = max(h + 2 * p, min_side), max(w + 2 * p, min_side)
    canvas = np.empty((H, W, 3), np.uint8)
    canvas[:] = bg
    return compose(rgba, canvas, ((W - w) // 2, (H - h) // 2, w, h))


def fit_box(rgba: np.ndarray, area: Box) -> Box:
    """The largest box of the mark's aspect ratio centred in ``area`` (x, y, w, h)."""
    x, y, w, h = area
    s = min(w / rgba.shape[1], h / rgba.shape[0])
    bw, bh = max(2, int(rgba.shape[1] * s)), max(2, int(rgba.shape[0] * s))
    return x + (w - bw) // 2, y + (h - bh) // 2, bw, bh


# --------------------------------------------------------------------------- geometry helpers


def warp_rgba(rng: np.random.Generator, rgba: np.ndarray, max_angle: float, max_persp: float) -> np.ndarray:
    """Rotate + perspective-warp an RGBA mark on a transparent canvas large enough to hold it."""
    h, w = rgba.shape[:2]
    pad = int(0.35 * max(h, w)) + 2
    src = cv2.copyMakeBorder(rgba, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0, 0))
    H, W = src.shape[:2]
    ang = rng.uniform(-max_angle, max_angle)
    rot = cv2.getRotationMatrix2D((W / 2, H / 2), ang, 1.0)
    corners = np.array([[pad, pad], [pad + w, pad], [pad + w, pad + h], [pad, pad + h]], np.float32)
    dst = cv2.transform(corners[None], rot)[0]
    dst = dst + rng.uniform(-max_persp, max_persp, dst.shape).astype(np.float32) * np.array([w, h], np.float32)
    M = cv2.getPerspectiveTransform(corners, dst.astype(np.float32))
    out = cv2.warpPerspective(src, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
    ys, xs = np.nonzero(out[..., 3] > 8)
    if len(xs) == 0:
        return rgba
    return out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def perspective(rng: np.random.Generator, img: np.ndarray, strength: float) -> np.ndarray:
    """Random perspective warp of the whole image (corners moved by up to ``strength`` x side)."""
    h, w = img.shape[:2]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    dst = src + rng.uniform(-strength, strength, src.shape).astype(np.float32) * np.array([w, h], np.float32)
    M = cv2.getPerspectiveTransform(src, dst)
    fill = tuple(int(v) for v in random_color(rng, val=(0.0, 1.0)))
    return cv2.warpPerspective(img, M, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def rotate(rng: np.random.Generator, img: np.ndarray, log: Log) -> np.ndarray:
    """A quarter turn, or 5-35 degrees on an enlarged canvas (reflected or filled border)."""
    if rng.random() < 0.2:
        k = int(rng.integers(1, 4))
        note(log, f"rot{90 * k}")
        return np.ascontiguousarray(np.rot90(img, k))
    ang = float(rng.uniform(5, 35) * rng.choice([-1, 1]))
    h, w = img.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2, h / 2), ang, 1.0)
    c, s = abs(M[0, 0]), abs(M[0, 1])
    nw, nh = int(h * s + w * c), int(h * c + w * s)
    M[0, 2] += nw / 2 - w / 2
    M[1, 2] += nh / 2 - h / 2
    if rng.random() < 0.5:
        out = cv2.warpAffine(img, M, (nw, nh), borderMode=cv2.BORDER_REFLECT_101)
    else:
        fill = tuple(int(v) for v in random_color(rng))
        out = cv2.warpAffine(img, M, (nw, nh), borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    note(log, f"rotate{ang:+.0f}")
    return out


# --------------------------------------------------------------------------- photometric helpers


def color_jitter(rng: np.random.Generator, img: np.ndarray, log: Log) -> np.ndarray:
    """One of brightness/contrast/saturation jitter, hue rotation, greyscale or inversion."""
    mode = rng.choice(["jitter", "hue", "gray", "invert"], p=[0.5, 0.3, 0.12, 0.08])
    if mode == "gray":
        note(log, "grayscale")
        return cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    if mode == "invert":
        note(log, "invert")
        return 255 - img
    if mode == "hue":
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        shift = int(rng.integers(20, 160))
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
        note(log, f"recolour_hue{shift * 2}")
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    b, c, s = rng.uniform(-40, 40), rng.uniform(0.6, 1.4), rng.uniform(0.4, 1.6)
    f = img.astype(np.float32)
    gray = f.mean(axis=2, keepdims=True)
    f = gray + (f - gray) * s
    f = (f - 128) * c + 128 + b
    note(log, f"jitter_b{b:+.0f}_c{c:.2f}_s{s:.2f}")
    return np.clip(f, 0, 255).astype(np.uint8)


def blur(rng: np.random.Generator, img: np.ndarray, log: Log) -> np.ndarray:
    """Gaussian blur, or motion blur along a random direction."""
    if rng.random() < 0.7:
        k = int(rng.choice([3, 5, 7]))
        note(log, f"blur{k}")
        return cv2.GaussianBlur(img, (k, k), 0)
    k = int(rng.choice([5, 7, 9]))
    kern = np.zeros((k, k), np.float32)
    kern[k // 2, :] = 1.0 / k
    M = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
    kern = cv2.warpAffine(kern, M, (k, k))
    kern /= max(1e-6, float(kern.sum()))
    note(log, f"motion_blur{k}")
    return cv2.filter2D(img, -1, kern)


def noise(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """Additive Gaussian luminance noise of standard deviation ``sigma``."""
    n = rng.normal(0, sigma, img.shape[:2] + (1,)).astype(np.float32)
    return np.clip(img.astype(np.float32) + n, 0, 255).astype(np.uint8)


def draw_text(rng: np.random.Generator, img: np.ndarray, log: Log = None) -> np.ndarray:
    """Overlay 1-2 short sales captions, sometimes on a banner, like listing photos do."""
    out = img.copy()
    h, w = out.shape[:2]
    for _ in range(int(rng.integers(1, 3))):
        text = str(rng.choice(_WORDS))
        font = int(rng.choice(_FONTS))
        scale = max(0.3, rng.uniform(0.035, 0.09) * h / 22)
        thick = max(1, int(round(scale * rng.uniform(1.2, 2.5))))
        (tw, th), base = cv2.getTextSize(text, font, scale, thick)
        x = int(rng.uniform(0, max(1, w - tw)))
        y = int(rng.uniform(th + 2, max(th + 3, h - base - 2)))
        color = random_color(rng, sat=(0.3, 1.0), val=(0.5, 1.0)) if rng.random() < 0.6 else (255, 255, 255)
        if rng.random() < 0.4:
            cv2.rectangle(out, (x - 4, y - th - 4), (x + tw + 4, y + base + 2), contrast_color(color), -1)
        cv2.putText(out, text, (x, y), font, scale, color, thick, cv2.LINE_AA)
    note(log, "text")
    return out


def draw_emoji(rng: np.random.Generator, img: np.ndarray, log: Log = None) -> np.ndarray:
    """Overlay 1-3 emoji-like stickers (smiley, heart, star, badge) drawn with OpenCV."""
    out = img.copy()
    h, w = out.shape[:2]
    for _ in range(int(rng.integers(1, 4))):
        r = int(max(4, rng.uniform(0.05, 0.13) * min(h, w)))
        cx, cy = int(rng.uniform(r, max(r + 1, w - r))), int(rng.uniform(r, max(r + 1, h - r)))
        kind = rng.choice(["smiley", "heart", "star", "badge"])
        if kind == "smiley":
            cv2.circle(out, (cx, cy), r, (255, 204, 0), -1, cv2.LINE_AA)
            cv2.circle(out, (cx - r // 3, cy - r // 4), max(1, r // 8), (60, 40, 0), -1, cv2.LINE_AA)
            cv2.circle(out, (cx + r // 3, cy - r // 4), max(1, r // 8), (60, 40, 0), -1, cv2.LINE_AA)
            cv2.ellipse(out, (cx, cy + r // 8), (r // 2, r // 3), 0, 10, 170, (60, 40, 0), max(1, r // 10), cv2.LINE_AA)
        elif kind == "heart":
            col = (230, 30, 60)
            cv2.circle(out, (cx - r // 2, cy - r // 4), r // 2, col, -1, cv2.LINE_AA)
            cv2.circle(out, (cx + r // 2, cy - r // 4), r // 2, col, -1, cv2.LINE_AA)
            tri = np.array([(cx - r, cy - r // 6), (cx + r, cy - r // 6), (cx, cy + r)], np.int32)
            cv2.fillPoly(out, [tri], col, lineType=cv2.LINE_AA)
        elif kind == "star":
            ang = np.linspace(-np.pi / 2, 1.5 * np.pi, 11)[:-1]
            rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
            cv2.fillPoly(out, [pts], (255, 215, 40), lineType=cv2.LINE_AA)
        else:
            col = random_color(rng, sat=(0.6, 1.0), val=(0.6, 1.0))
            cv2.circle(out, (cx, cy), r, col, -1, cv2.LINE_AA)
            cv2.putText(out, "%", (cx - r // 2, cy + r // 2), cv2.FONT_HERSHEY_SIMPLEX, r / 22, (255, 255, 255), max(1, r // 8), cv2.LINE_AA)
    note(log, "emoji")
    return out


def screenshot_frame(rng: np.random.Generator, img: np.ndarray, log: Log = None) -> np.ndarray:
    """Embed the image in a fake phone/browser screenshot (status bar, toolbar, buttons, price)."""
    h, w = img.shape[:2]
    dark = rng.random() < 0.4
    bg = (18, 18, 20) if dark else (246, 246, 248)
    fg = (230, 230, 230) if dark else (40, 40, 40)
    top, bottom = int(h * rng.uniform(0.10, 0.2)), int(h * rng.uniform(0.15, 0.3))
    side = int(w * rng.uniform(0.0, 0.08))
    H, W = h + top + bottom, w + 2 * side
    out = np.empty((H, W, 3), np.uint8)
    out[:] = bg
    out[top : top + h, side : side + w] = img
    bar = max(6, top // 3)
    cv2.rectangle(out, (0, 0), (W, bar), tuple(int(c * 0.9) for c in bg), -1)
    fs = max(0.25, bar / 30)
    cv2.putText(out, f"{int(rng.integers(0, 24)):02d}:{int(rng.integers(0, 60)):02d}", (4, bar - 2), cv2.FONT_HERSHEY_SIMPLEX, fs, fg, 1, cv2.LINE_AA)
    cv2.rectangle(out, (W - 4 - bar * 2, 2), (W - 4, bar - 2), fg, 1)
    cv2.rectangle(out, (6, bar + 4), (W - 6, top - 4), tuple(int(c * 0.85) for c in bg), -1)
    y = top + h + bottom // 3
    cv2.putText(out, str(rng.choice(_WORDS)), (8, y), cv2.FONT_HERSHEY_SIMPLEX, max(0.3, bottom / 60), fg, 1, cv2.LINE_AA)
    btn = random_color(rng, sat=(0.6, 1.0), val=(0.5, 0.9))
    cv2.rectangle(out, (8, y + 6), (W // 2, min(H - 2, y + 6 + bottom // 3)), btn, -1)
    note(log, "screenshot")
    return out


def pad_border(rng: np.random.Generator, img: np.ndarray, log: Log = None) -> np.ndarray:
    h, w = img.shape[:2]
    t, b, l, r = (int(rng.uniform(0, 0.3) * s) for s in (h, h, w, w))
    fill = tuple(int(v) for v in random_color(rng))
    note(log, "pad")
    return cv2.copyMakeBorder(img, t, b, l, r, cv2.BORDER_CONSTANT, value=fill)


def collage(rng: np.random.Generator, img: np.ndarray, other: np.ndarray, log: Log = None) -> np.ndarray:
    """Place the image next to (or inset into) another image; the original keeps >= 40% of the area side."""
    other = ensure_rgb(other)
    h, w = img.shape[:2]
    if rng.random() < 0.5:
        oh = h
        ow = max(2, int(other.shape[1] * h / other.shape[0]))
        ow = min(ow, int(1.2 * w))
        o = cv2.resize(other, (ow, oh), interpolation=cv2.INTER_AREA)
        parts = [img, o] if rng.random() < 0.5 else [o, img]
        axis = 1
        if rng.random() < 0.4:  # vertical stack instead
            o = cv2.resize(other, (w, max(2, min(int(1.2 * h), int(other.shape[0] * w / other.shape[1])))), interpolation=cv2.INTER_AREA)
            parts = [img, o] if rng.random() < 0.5 else [o, img]
            axis = 0
        note(log, "collage")
        return np.ascontiguousarray(np.concatenate(parts, axis=axis))
    # inset: the image as a picture-in-picture on the other one
    base = resize_max(other, int(max(h, w) * rng.uniform(1.3, 1.8)))
    s = rng.uniform(0.45, 0.7) * min(base.shape[0] / h, base.shape[1] / w)
    iw, ih = max(2, int(w * s)), max(2, int(h * s))
    x = int(rng.uniform(0, max(1, base.shape[1] - iw)))
    y = int(rng.uniform(0, max(1, base.shape[0] - ih)))
    out = base.copy()
    out[y : y + ih, x : x + iw] = cv2.resize(img, (iw, ih), interpolation=cv2.INTER_AREA)
    note(log, "inset")
    return out


def measure_cost(fn: Callable[[np.random.Generator], np.ndarray], n: int = 100, seed: int = 0) -> float:
    """Mean milliseconds per call of ``fn(rng)`` (used by tests and the report)."""
    rng = np.random.default_rng(seed)
    fn(rng)  # warm-up
    t = time.perf_counter()
    for _ in range(n):
        fn(rng)
    return (time.perf_counter() - t) * 1000 / n
