"""Augmentations that mimic what sellers and counterfeiters do to brand imagery.

Why here and not in training: the same functions generate benchmark queries (so ground truth
knows the transform family) and training views (so the model learns exactly those
invariances). Every generator is ``fn(rng, ...) -> HxWx3 uint8 RGB`` and pure numpy/OpenCV,
cheap enough to run on the fly (a few ms at 256 px, see ``measure_cost``).

Family names are part of the benchmark format (queries.csv ``family``) and must stay stable:
``copy_light``, ``copy_strong``, ``logo_in_photo``, ``knockoff``, ``distractor_photo``,
``distractor_unregistered``. Pass ``log=[]`` to any generator to get the applied transforms.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

import cv2
import numpy as np

from brandguard.datasets.photos import fabric_texture, procedural_background, product_scene, random_color
from brandguard.errors import InputError

FAMILIES: tuple[str, ...] = (
    "copy_light",
    "copy_strong",
    "logo_in_photo",
    "knockoff",
    "distractor_photo",
    "distractor_unregistered",
)
COPY_FAMILIES = ("copy_light", "copy_strong")
DISTRACTOR_FAMILIES = ("distractor_photo", "distractor_unregistered")

Log = list[str] | None
Box = tuple[int, int, int, int]  # x, y, w, h

_WORDS = [
    "SALE", "100% ORIGINAL", "NEW", "free shipping", "$19.99", "BEST PRICE", "limited",
    "authentic", "-70%", "HOT", "2 for 1", "fast delivery", "top seller", "NWT", "genuine",
]
_FONTS = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_COMPLEX]


class PhotoSampler(Protocol):
    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, str]: ...


def _note(log: Log, text: str) -> None:
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


def _contrast_color(rgb: tuple[int, int, int], rng: np.random.Generator | None = None) -> tuple[int, int, int]:
    lum = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    if rng is None:
        return (255, 255, 255) if lum < 140 else (24, 24, 28)
    if lum < 140:
        return random_color(rng, sat=(0.0, 0.15), val=(0.88, 1.0))
    return random_color(rng, sat=(0.0, 0.5), val=(0.05, 0.3))


def _mark_color(rgba: np.ndarray) -> tuple[int, int, int]:
    a = rgba[..., 3] > 128
    if not a.any():
        return (0, 0, 0)
    c = rgba[..., :3][a].mean(axis=0)
    return int(c[0]), int(c[1]), int(c[2])


def _on_canvas(rgba: np.ndarray, bg: tuple[int, int, int], pad: float, min_side: int = 0) -> np.ndarray:
    h, w = rgba.shape[:2]
    p = int(round(pad * max(h, w)))
    H, W = max(h + 2 * p, min_side), max(w + 2 * p, min_side)
    canvas = np.empty((H, W, 3), np.uint8)
    canvas[:] = bg
    return compose(rgba, canvas, ((W - w) // 2, (H - h) // 2, w, h))


# --------------------------------------------------------------------------- geometry helpers


def _warp_rgba(rng: np.random.Generator, rgba: np.ndarray, max_angle: float, max_persp: float) -> np.ndarray:
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


def _perspective(rng: np.random.Generator, img: np.ndarray, strength: float) -> np.ndarray:
    h, w = img.shape[:2]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    dst = src + rng.uniform(-strength, strength, src.shape).astype(np.float32) * np.array([w, h], np.float32)
    M = cv2.getPerspectiveTransform(src, dst)
    fill = tuple(int(v) for v in random_color(rng, val=(0.0, 1.0)))
    return cv2.warpPerspective(img, M, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def _rotate(rng: np.random.Generator, img: np.ndarray, log: Log) -> np.ndarray:
    if rng.random() < 0.2:
        k = int(rng.integers(1, 4))
        _note(log, f"rot{90 * k}")
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
    _note(log, f"rotate{ang:+.0f}")
    return out


# --------------------------------------------------------------------------- photometric helpers


def _color_jitter(rng: np.random.Generator, img: np.ndarray, log: Log) -> np.ndarray:
    mode = rng.choice(["jitter", "hue", "gray", "invert"], p=[0.5, 0.3, 0.12, 0.08])
    if mode == "gray":
        _note(log, "grayscale")
        return cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    if mode == "invert":
        _note(log, "invert")
        return 255 - img
    if mode == "hue":
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        shift = int(rng.integers(20, 160))
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
        _note(log, f"recolour_hue{shift * 2}")
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    b, c, s = rng.uniform(-40, 40), rng.uniform(0.6, 1.4), rng.uniform(0.4, 1.6)
    f = img.astype(np.float32)
    gray = f.mean(axis=2, keepdims=True)
    f = gray + (f - gray) * s
    f = (f - 128) * c + 128 + b
    _note(log, f"jitter_b{b:+.0f}_c{c:.2f}_s{s:.2f}")
    return np.clip(f, 0, 255).astype(np.uint8)


def _blur(rng: np.random.Generator, img: np.ndarray, log: Log) -> np.ndarray:
    if rng.random() < 0.7:
        k = int(rng.choice([3, 5, 7]))
        _note(log, f"blur{k}")
        return cv2.GaussianBlur(img, (k, k), 0)
    k = int(rng.choice([5, 7, 9]))
    kern = np.zeros((k, k), np.float32)
    kern[k // 2, :] = 1.0 / k
    M = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
    kern = cv2.warpAffine(kern, M, (k, k))
    kern /= max(1e-6, float(kern.sum()))
    _note(log, f"motion_blur{k}")
    return cv2.filter2D(img, -1, kern)


def _noise(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
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
            cv2.rectangle(out, (x - 4, y - th - 4), (x + tw + 4, y + base + 2), _contrast_color(color), -1)
        cv2.putText(out, text, (x, y), font, scale, color, thick, cv2.LINE_AA)
    _note(log, "text")
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
    _note(log, "emoji")
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
    _note(log, "screenshot")
    return out


def pad_border(rng: np.random.Generator, img: np.ndarray, log: Log = None) -> np.ndarray:
    h, w = img.shape[:2]
    t, b, l, r = (int(rng.uniform(0, 0.3) * s) for s in (h, h, w, w))
    fill = tuple(int(v) for v in random_color(rng))
    _note(log, "pad")
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
        _note(log, "collage")
        return np.ascontiguousarray(np.concatenate(parts, axis=axis))
    # inset: the image as a picture-in-picture on the other one
    base = resize_max(other, int(max(h, w) * rng.uniform(1.3, 1.8)))
    s = rng.uniform(0.45, 0.7) * min(base.shape[0] / h, base.shape[1] / w)
    iw, ih = max(2, int(w * s)), max(2, int(h * s))
    x = int(rng.uniform(0, max(1, base.shape[1] - iw)))
    y = int(rng.uniform(0, max(1, base.shape[0] - ih)))
    out = base.copy()
    out[y : y + ih, x : x + iw] = cv2.resize(img, (iw, ih), interpolation=cv2.INTER_AREA)
    _note(log, "inset")
    return out


# --------------------------------------------------------------------------- families


def copy_light(rng: np.random.Generator, image: np.ndarray, log: Log = None, max_side: int = 512) -> np.ndarray:
    """Crop, rescale and JPEG re-encode: the reference re-uploaded with little effort."""
    img = ensure_rgb(image)
    h, w = img.shape[:2]
    fx, fy = rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0)
    cw, ch = max(2, int(w * fx)), max(2, int(h * fy))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img[y : y + ch, x : x + cw]
    side = int(rng.uniform(0.45, 1.0) * max_side)
    img = resize_max(img, max(32, side))
    q = int(rng.integers(35, 92))
    _note(log, f"crop{fx:.2f}x{fy:.2f}")
    _note(log, f"resize{img.shape[1]}x{img.shape[0]}")
    _note(log, f"jpeg{q}")
    return jpeg(img, q)


def copy_strong(
    rng: np.random.Generator, image: np.ndarray, other_images: Sequence[np.ndarray] = (), log: Log = None, max_side: int = 512
) -> np.ndarray:
    """2-5 of: mirror, rotation, perspective, recolour/jitter, blur, collage, padding,
    screenshot frame, text and emoji overlays; then rescale and JPEG."""
    img = ensure_rgb(image)
    img = resize_max(img, max_side)
    ops = ["mirror", "rotate", "perspective", "color", "blur", "collage", "frame", "text", "emoji"]
    probs = np.array([0.3, 0.35, 0.3, 0.5, 0.3, 0.25, 0.35, 0.4, 0.3])
    if not other_images:
        probs[ops.index("collage")] = 0
    chosen: set[str] = set()
    n_target = int(rng.integers(2, 6))
    while len(chosen) < n_target:
        p = probs * np.array([o not in chosen for o in ops])
        if p.sum() == 0:
            break
        chosen.add(ops[int(rng.choice(len(ops), p=p / p.sum()))])
    if "crop" not in chosen and rng.random() < 0.5:  # mild crop before anything else
        h, w = img.shape[:2]
        cw, ch = max(2, int(w * rng.uniform(0.8, 1.0))), max(2, int(h * rng.uniform(0.8, 1.0)))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = img[y : y + ch, x : x + cw]
        _note(log, "crop")
    if "mirror" in chosen:
        img = np.ascontiguousarray(img[:, ::-1])
        _note(log, "mirror")
    if "rotate" in chosen:
        img = _rotate(rng, img, log)
    if "perspective" in chosen:
        img = _perspective(rng, img, 0.12)
        _note(log, "perspective")
    if "color" in chosen:
        img = _color_jitter(rng, img, log)
    if "blur" in chosen:
        img = _blur(rng, img, log)
    if "collage" in chosen:
        other = other_images[int(rng.integers(len(other_images)))]
        img = collage(rng, img, other, log)
    if "frame" in chosen:
        img = screenshot_frame(rng, img, log) if rng.random() < 0.6 else pad_border(rng, img, log)
    if "text" in chosen:
        img = draw_text(rng, img, log)
    if "emoji" in chosen:
        img = draw_emoji(rng, img, log)
    img = resize_max(img, max(48, int(rng.uniform(0.5, 1.0) * max_side)))
    q = int(rng.integers(30, 92))
    _note(log, f"jpeg{q}")
    return jpeg(img, q)


def place_mark(
    rng: np.random.Generator,
    rgba: np.ndarray,
    photo: np.ndarray,
    log: Log = None,
    side_fraction: tuple[float, float] = (0.10, 0.50),
    patch_probability: float = 0.6,
) -> np.ndarray:
    """Composite a mark onto a photo with warp, optional garment/box patch, lighting; no JPEG."""
    rgba = ensure_rgba(rgba)
    bg = ensure_rgb(photo).copy()
    H, W = bg.shape[:2]
    mark = _warp_rgba(rng, rgba, max_angle=20, max_persp=0.08) if rng.random() < 0.7 else rgba
    frac = rng.uniform(*side_fraction)
    mh, mw = mark.shape[:2]
    s = frac * min(H, W) / max(mh, mw)
    s = min(s, 0.9 * W / mw, 0.9 * H / mh)
    bw, bh = max(3, int(mw * s)), max(3, int(mh * s))
    x = int(rng.uniform(0.02 * W, max(0.02 * W + 1, W - bw - 0.02 * W)))
    y = int(rng.uniform(0.02 * H, max(0.02 * H + 1, H - bh - 0.02 * H)))
    _note(log, f"mark{frac:.2f}")
    color = _mark_color(rgba)
    region = bg[y : y + bh, x : x + bw]
    low_contrast = region.size == 0 or float(np.abs(region.reshape(-1, 3).mean(0) - np.array(color)).sum()) < 90
    if low_contrast or rng.random() < patch_probability:
        # a printed/woven patch: garment panel or box face in a contrasting colour
        m = rng.uniform(0.15, 0.45)
        px, py = int(x - m * bw), int(y - m * bh)
        pw, ph = int(bw * (1 + 2 * m)), int(bh * (1 + 2 * m))
        x0, y0, x1, y1 = max(0, px), max(0, py), min(W, px + pw), min(H, py + ph)
        if x1 - x0 > 2 and y1 - y0 > 2:
            tex = fabric_texture(rng, y1 - y0, x1 - x0, _contrast_color(color, rng))
            if rng.random() < 0.5:  # rounded label
                mask = np.zeros(tex.shape[:2], np.uint8)
                cv2.ellipse(mask, ((x1 - x0) // 2, (y1 - y0) // 2), ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, 255, -1, cv2.LINE_AA)
                a = mask[..., None].astype(np.float32) / 255
                bg[y0:y1, x0:x1] = (tex * a + bg[y0:y1, x0:x1] * (1 - a)).astype(np.uint8)
            else:
                bg[y0:y1, x0:x1] = tex
            _note(log, "patch")
    out = compose(mark, bg, (x, y, bw, bh), opacity=float(rng.uniform(0.8, 1.0)))
    if rng.random() < 0.6:  # lighting: a smooth gain field across the photo
        gx, gy = rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3)
        gain = (1 + gy * (np.arange(H, dtype=np.float32) / H - 0.5))[:, None] + gx * (np.arange(W, dtype=np.float32) / W - 0.5)[None, :]
        out = np.clip(out.astype(np.float32) * gain[..., None], 0, 255).astype(np.uint8)
        _note(log, "lighting")
    if rng.random() < 0.5:
        out = _noise(rng, out, rng.uniform(2, 6))
    return out


def logo_in_photo(
    rng: np.random.Generator, rgba: np.ndarray, photo: np.ndarray, log: Log = None, max_side: int = 512
) -> np.ndarray:
    """The genuine mark, small (10-50% of the image side), on a listing-like photo."""
    photo = resize_max(ensure_rgb(photo), max_side)
    out = place_mark(rng, rgba, photo, log)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (3, 3), 0)
        _note(log, "blur3")
    q = int(rng.integers(50, 92))
    _note(log, f"jpeg{q}")
    return jpeg(out, q)


def alter_mark(rng: np.random.Generator, rgba: np.ndarray, other_rgba: np.ndarray | None = None, log: Log = None) -> np.ndarray:
    """A lookalike of the mark: one structural change (mirror, erased or swapped element,
    halves of two marks mixed, stretched/squashed) plus, half the time, a new colour."""
    original = ensure_rgba(rgba)
    rgba = original.copy()
    h, w = rgba.shape[:2]
    alpha = rgba[..., 3] > 128
    options = ["erase", "swap", "stretch"]
    if other_rgba is not None:
        options.append("halves")
    mirrored = alpha[:, ::-1]
    iou = (alpha & mirrored).sum() / max(1, (alpha | mirrored).sum())
    if iou < 0.8:  # a symmetric mark mirrored is the same mark, not a knockoff
        options.append("mirror")
    kind = str(rng.choice(options))
    cols = np.nonzero(alpha.any(axis=0))[0]
    if kind == "mirror":
        rgba = np.ascontiguousarray(rgba[:, ::-1])
    elif kind == "erase":
        bw = max(2, int(w * rng.uniform(0.15, 0.3)))
        c = int(rng.choice(cols)) if len(cols) else w // 2
        x0 = int(np.clip(c - bw // 2, 0, max(0, w - bw)))
        if rng.random() < 0.5 or h < 8:
            rgba[:, x0 : x0 + bw, 3] = 0
        else:
            bh = max(2, int(h * rng.uniform(0.3, 0.6)))
            y0 = int(rng.integers(0, h - bh + 1))
            rgba[y0 : y0 + bh, x0 : x0 + bw, 3] = 0
    elif kind == "swap":
        bw = max(2, int(w * rng.uniform(0.15, 0.3)))
        if w >= 2 * bw + 2:
            a = int(rng.integers(0, w - 2 * bw + 1))
            b = int(rng.integers(a + bw, w - bw + 1))
            band = rgba[:, a : a + bw].copy()
            rgba[:, a : a + bw] = rgba[:, b : b + bw]
            rgba[:, b : b + bw] = band
        else:  # too narrow to swap columns: swap top and bottom halves
            rgba = np.ascontiguousarray(np.concatenate([rgba[h // 2 :], rgba[: h // 2]], axis=0))
    elif kind == "halves":
        assert other_rgba is not None
        o = ensure_rgba(other_rgba)
        o = cv2.resize(o, (max(2, int(o.shape[1] * h / o.shape[0])), h), interpolation=cv2.INTER_AREA)
        o[..., :3] = _mark_color(rgba)  # dressed in the imitated brand's colour
        t = rng.uniform(0.4, 0.6)
        left = rgba[:, : max(1, int(w * t))]
        right = o[:, int(o.shape[1] * t) :]
        if right.shape[1] < 1:
            right = o
        rgba = np.ascontiguousarray(np.concatenate([left, right], axis=1))
    else:  # stretch
        f = rng.uniform(0.5, 0.72) if rng.random() < 0.5 else rng.uniform(1.4, 1.9)
        rgba = cv2.resize(rgba, (max(2, int(w * f)), h), interpolation=cv2.INTER_LINEAR)
        kind = f"stretch{f:.2f}"
    if rgba.shape == original.shape and np.array_equal(rgba, original):  # e.g. swapped two empty bands
        f = rng.uniform(0.5, 0.72)
        rgba = cv2.resize(rgba, (max(2, int(w * f)), h), interpolation=cv2.INTER_LINEAR)
        kind = f"stretch{f:.2f}"
    _note(log, kind)
    if rng.random() < 0.5:
        new = random_color(rng, sat=(0.5, 1.0), val=(0.3, 1.0))
        rgba[..., :3] = new
        _note(log, "recolour")
    if not (rgba[..., 3] > 128).any():  # erased everything: fall back to a squash
        rgba = cv2.resize(ensure_rgba(rgba), (max(2, w // 2), h))
    return rgba


def present_mark(rng: np.random.Generator, rgba: np.ndarray, photo: np.ndarray | None, log: Log = None, max_side: int = 512) -> np.ndarray:
    """Show a mark the way a listing would: plain background, product mock-up or a photo."""
    rgba = ensure_rgba(rgba)
    r = rng.random()
    if photo is not None and r < 0.45:
        _note(log, "in_photo")
        out = place_mark(rng, rgba, resize_max(ensure_rgb(photo), max_side), log)
    elif r < 0.75:
        side = int(rng.uniform(0.6, 1.0) * max_side)
        scene, area = product_scene(rng, side, side, color=_contrast_color(_mark_color(rgba), rng))
        out = compose(rgba, scene, _fit_box(rgba, area))
        _note(log, "on_product")
    else:
        out = _on_canvas(resize_max(rgba, int(0.6 * max_side)), _contrast_color(_mark_color(rgba), rng), rng.uniform(0.05, 0.4))
        _note(log, "plain")
    q = int(rng.integers(50, 92))
    _note(log, f"jpeg{q}")
    return jpeg(out, q)


def knockoff(
    rng: np.random.Generator,
    rgba: np.ndarray,
    other_rgba: np.ndarray | None = None,
    photo: np.ndarray | None = None,
    log: Log = None,
    max_side: int = 512,
) -> np.ndarray:
    """An altered mark (see ``alter_mark``) shown as a listing would show it."""
    return present_mark(rng, alter_mark(rng, rgba, other_rgba, log), photo, log, max_side)


def distractor_photo(rng: np.random.Generator, photo: np.ndarray, log: Log = None, max_side: int = 512) -> np.ndarray:
    """A real photo with no registered mark, lightly re-encoded, sometimes with a caption."""
    img = resize_max(ensure_rgb(photo), int(rng.uniform(0.6, 1.0) * max_side))
    if rng.random() < 0.3:
        img = draw_text(rng, img, log)
    q = int(rng.integers(50, 92))
    _note(log, f"jpeg{q}")
    return jpeg(img, q)


def distractor_unregistered(
    rng: np.random.Generator, rgba: np.ndarray, photo: np.ndarray | None = None, log: Log = None, max_side: int = 512
) -> np.ndarray:
    """A mark of a brand that is not registered, shown like a listing (a hard negative)."""
    return present_mark(rng, rgba, photo, log, max_side)


# --------------------------------------------------------------------------- references


def _fit_box(rgba: np.ndarray, area: Box) -> Box:
    x, y, w, h = area
    s = min(w / rgba.shape[1], h / rgba.shape[0])
    bw, bh = max(2, int(rgba.shape[1] * s)), max(2, int(rgba.shape[0] * s))
    return x + (w - bw) // 2, y + (h - bh) // 2, bw, bh


def reference_views(rng: np.random.Generator, rgba: np.ndarray, size: int = 320) -> dict[str, np.ndarray]:
    """The brand's genuine imagery: ``logo_clean`` (the mark on a plain contrasting canvas)
    and ``logo_product`` (the mark printed on a product mock-up). Keys become reference names."""
    rgba = ensure_rgba(rgba)
    color = _mark_color(rgba)
    clean = _on_canvas(resize_max(rgba, int(size * 0.8)), _contrast_color(color), 0.12)
    scene, area = product_scene(rng, size, size, color=_contrast_color(color, rng))
    product = compose(rgba, scene, _fit_box(rgba, area))
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
        rgb = ensure_rgb(image, _contrast_color(_mark_color(image)))
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


def measure_cost(fn: Callable[[np.random.Generator], np.ndarray], n: int = 100, seed: int = 0) -> float:
    """Mean milliseconds per call of ``fn(rng)`` (used by tests and the report)."""
    rng = np.random.default_rng(seed)
    fn(rng)  # warm-up
    t = time.perf_counter()
    for _ in range(n):
        fn(rng)
    return (time.perf_counter() - t) * 1000 / n
