"""The query families: what sellers and counterfeiters do to a brand's imagery, one generator each.

Family names are part of the benchmark format (queries.csv ``family``) and must stay stable;
their one definition is :mod:`brandguard.evaluation.families`. Every generator is
``fn(rng, ...) -> HxWx3 uint8 RGB``; pass ``log=[]`` to get the applied transforms.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from brandguard.datasets.augment.ops import (
    Log,
    blur,
    collage,
    color_jitter,
    compose,
    contrast_color,
    draw_emoji,
    draw_text,
    ensure_rgb,
    ensure_rgba,
    fit_box,
    jpeg,
    mark_color,
    noise,
    note,
    on_canvas,
    pad_border,
    perspective,
    resize_max,
    rotate,
    screenshot_frame,
    warp_rgba,
)
from brandguard.datasets.photos import fabric_texture, product_scene, random_color

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
    note(log, f"crop{fx:.2f}x{fy:.2f}")
    note(log, f"resize{img.shape[1]}x{img.shape[0]}")
    note(log, f"jpeg{q}")
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
        note(log, "crop")
    if "mirror" in chosen:
        img = np.ascontiguousarray(img[:, ::-1])
        note(log, "mirror")
    if "rotate" in chosen:
        img = rotate(rng, img, log)
    if "perspective" in chosen:
        img = perspective(rng, img, 0.12)
        note(log, "perspective")
    if "color" in chosen:
        img = color_jitter(rng, img, log)
    if "blur" in chosen:
        img = blur(rng, img, log)
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
    note(log, f"jpeg{q}")
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
    mark = warp_rgba(rng, rgba, max_angle=20, max_persp=0.08) if rng.random() < 0.7 else rgba
    frac = rng.uniform(*side_fraction)
    mh, mw = mark.shape[:2]
    s = frac * min(H, W) / max(mh, mw)
    s = min(s, 0.9 * W / mw, 0.9 * H / mh)
    bw, bh = max(3, int(mw * s)), max(3, int(mh * s))
    x = int(rng.uniform(0.02 * W, max(0.02 * W + 1, W - bw - 0.02 * W)))
    y = int(rng.uniform(0.02 * H, max(0.02 * H + 1, H - bh - 0.02 * H)))
    note(log, f"mark{frac:.2f}")
    color = mark_color(rgba)
    region = bg[y : y + bh, x : x + bw]
    low_contrast = region.size == 0 or float(np.abs(region.reshape(-1, 3).mean(0) - np.array(color)).sum()) < 90
    if low_contrast or rng.random() < patch_probability:
        # a printed/woven patch: garment panel or box face in a contrasting colour
        m = rng.uniform(0.15, 0.45)
        px, py = int(x - m * bw), int(y - m * bh)
        pw, ph = int(bw * (1 + 2 * m)), int(bh * (1 + 2 * m))
        x0, y0, x1, y1 = max(0, px), max(0, py), min(W, px + pw), min(H, py + ph)
        if x1 - x0 > 2 and y1 - y0 > 2:
            tex = fabric_texture(rng, y1 - y0, x1 - x0, contrast_color(color, rng))
            if rng.random() < 0.5:  # rounded label
                mask = np.zeros(tex.shape[:2], np.uint8)
                cv2.ellipse(mask, ((x1 - x0) // 2, (y1 - y0) // 2), ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, 255, -1, cv2.LINE_AA)
                a = mask[..., None].astype(np.float32) / 255
                bg[y0:y1, x0:x1] = (tex * a + bg[y0:y1, x0:x1] * (1 - a)).astype(np.uint8)
            else:
                bg[y0:y1, x0:x1] = tex
            note(log, "patch")
    out = compose(mark, bg, (x, y, bw, bh), opacity=float(rng.uniform(0.8, 1.0)))
    if rng.random() < 0.6:  # lighting: a smooth gain field across the photo
        gx, gy = rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3)
        gain = (1 + gy * (np.arange(H, dtype=np.float32) / H - 0.5))[:, None] + gx * (np.arange(W, dtype=np.float32) / W - 0.5)[None, :]
        out = np.clip(out.astype(np.float32) * gain[..., None], 0, 255).astype(np.uint8)
        note(log, "lighting")
    if rng.random() < 0.5:
        out = noise(rng, out, rng.uniform(2, 6))
    return out


def logo_in_photo(
    rng: np.random.Generator, rgba: np.ndarray, photo: np.ndarray, log: Log = None, max_side: int = 512
) -> np.ndarray:
    """The genuine mark, small (10-50% of the image side), on a listing-like photo."""
    photo = resize_max(ensure_rgb(photo), max_side)
    out = place_mark(rng, rgba, photo, log)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (3, 3), 0)
        note(log, "blur3")
    q = int(rng.integers(50, 92))
    note(log, f"jpeg{q}")
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
        o[..., :3] = mark_color(rgba)  # dressed in the imitated brand's colour
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
    note(log, kind)
    if rng.random() < 0.5:
        new = random_color(rng, sat=(0.5, 1.0), val=(0.3, 1.0))
        rgba[..., :3] = new
        note(log, "recolour")
    if not (rgba[..., 3] > 128).any():  # erased everything: fall back to a squash
        rgba = cv2.resize(ensure_rgba(rgba), (max(2, w // 2), h))
    return rgba


def present_mark(rng: np.random.Generator, rgba: np.ndarray, photo: np.ndarray | None, log: Log = None, max_side: int = 512) -> np.ndarray:
    """Show a mark the way a listing would: plain background, product mock-up or a photo."""
    rgba = ensure_rgba(rgba)
    r = rng.random()
    if photo is not None and r < 0.45:
        note(log, "in_photo")
        out = place_mark(rng, rgba, resize_max(ensure_rgb(photo), max_side), log)
    elif r < 0.75:
        side = int(rng.uniform(0.6, 1.0) * max_side)
        scene, area = product_scene(rng, side, side, color=contrast_color(mark_color(rgba), rng))
        out = compose(rgba, scene, fit_box(rgba, area))
        note(log, "on_product")
    else:
        out = on_canvas(resize_max(rgba, int(0.6 * max_side)), contrast_color(mark_color(rgba), rng), rng.uniform(0.05, 0.4))
        note(log, "plain")
    q = int(rng.integers(50, 92))
    note(log, f"jpeg{q}")
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
    note(log, f"jpeg{q}")
    return jpeg(img, q)


def distractor_unregistered(
    rng: np.random.Generator, rgba: np.ndarray, photo: np.ndarray | None = None, log: Log = None, max_side: int = 512
) -> np.ndarray:
    """A mark of a brand that is not registered, shown like a listing (a hard negative)."""
    return present_mark(rng, rgba, photo, log, max_side)


def catalogue_shot(rng: np.random.Generator, rgba: np.ndarray, photo: np.ndarray, log: Log = None, size: int = 512) -> np.ndarray:
    """A brand's official product photo: the photographed product (a real garment photo where one
    is given) cut out onto a studio backdrop, its mark printed on it, levelled like a catalogue
    image. ``product_photo`` is the same shot photographed again.

    The cut-out matters: sellers' photos share floors and beds, and a shot that kept one would be
    found by the floor's keypoints in every listing photographed on it."""
    img = studio_cutout(rng, resize_max(ensure_rgb(photo), size), log)
    ys, xs = np.nonzero(img.min(axis=2) < 215)  # the product's box on the light backdrop
    x0, y0, x1, y1 = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) > 64 else (0, 0, img.shape[1], img.shape[0])
    if x1 - x0 < 32 or y1 - y0 < 32:
        x0, y0, x1, y1 = 0, 0, img.shape[1], img.shape[0]
    img[y0:y1, x0:x1] = place_mark(rng, rgba, img[y0:y1, x0:x1], log, side_fraction=(0.25, 0.5), patch_probability=0.3)
    lo, hi = np.percentile(img.reshape(-1, 3), [1, 99], axis=0).astype(np.float32)  # catalogue levels, per channel
    img = np.clip((img.astype(np.float32) - lo) * (255.0 / np.maximum(hi - lo, 32.0)), 0, 255).astype(np.uint8)
    return img


def studio_cutout(rng: np.random.Generator, photo: np.ndarray, log: Log = None) -> np.ndarray:
    """The photo's central object (GrabCut from a rectangle, at <= 256 px) on a light studio
    backdrop; the photo unchanged when the cut-out fails (under 8% or over 92% of the frame)."""
    h, w = photo.shape[:2]
    small = resize_max(photo, 256)
    sh, sw = small.shape[:2]
    mask = np.zeros((sh, sw), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    rect = (int(0.05 * sw), int(0.05 * sh), int(0.9 * sw), int(0.9 * sh))
    cv2.setRNGSeed(int(rng.integers(1 << 30)))
    cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), mask, rect, bgd, fgd, 4, cv2.GC_INIT_WITH_RECT)
    fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)
    if not 0.08 <= float(fg.mean()) <= 0.92:
        note(log, "no_cutout")
        return photo.copy()
    alpha = cv2.GaussianBlur(cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR), (0, 0), 1.5)[..., None]
    top, bottom = rng.uniform(236, 255), rng.uniform(215, 245)  # a sweep: lighter at the top
    backdrop = np.linspace(top, bottom, h, dtype=np.float32)[:, None, None] * np.ones((1, w, 3), np.float32)
    note(log, "studio")
    return np.clip(photo.astype(np.float32) * alpha + backdrop * (1 - alpha), 0, 255).astype(np.uint8)


def product_photo(
    rng: np.random.Generator, shot: np.ndarray, background: np.ndarray, log: Log = None, max_side: int = 512
) -> np.ndarray:
    """The product of a catalogue shot photographed again, as a seller's phone would: reframed,
    seen at an angle on another surface, under other light (white balance, exposure, shading,
    glare), with defocus or shake, sensor noise and a marketplace's JPEG.

    A proxy for a real re-photograph: the pixels come from the shot, so pose and folds do not
    change; what it tests is that photometric and viewpoint change leave the match standing."""
    img = ensure_rgb(shot)
    h, w = img.shape[:2]
    fx, fy = rng.uniform(0.6, 1.0, 2)
    cw, ch = max(8, int(w * fx)), max(8, int(h * fy))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img[y : y + ch, x : x + cw]
    note(log, f"reframe{fx:.2f}x{fy:.2f}")
    # at an angle on another surface: corners pulled in by 0-18% of the side, turned by up to 12 degrees
    bg = cv2.resize(ensure_rgb(background), (cw, ch), interpolation=cv2.INTER_AREA)
    src = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], np.float32)
    inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], np.float32)
    dst = src + inward * rng.uniform(0.0, 0.18, (4, 2)).astype(np.float32) * np.array([cw, ch], np.float32)
    ang = np.deg2rad(rng.uniform(-12, 12))
    c = dst.mean(0)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]], np.float32)
    dst = (dst - c) @ rot.T + c
    M = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    warped = cv2.warpPerspective(img, M, (cw, ch), flags=cv2.INTER_LINEAR)
    inside = cv2.warpPerspective(np.full((ch, cw), 255, np.uint8), M, (cw, ch), flags=cv2.INTER_LINEAR)
    a = inside[..., None].astype(np.float32) / 255.0
    img = (warped.astype(np.float32) * a + bg.astype(np.float32) * (1 - a)).astype(np.float32)
    note(log, f"angle{np.rad2deg(ang):+.0f}")
    # other light: white balance, exposure (gamma), a smooth shading field, sometimes a glare spot
    img *= rng.uniform(0.85, 1.15, 3).astype(np.float32)[None, None, :]
    gamma = rng.uniform(0.75, 1.35)
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** gamma
    gx, gy = rng.uniform(-0.35, 0.35, 2)
    gain = (1 + gy * (np.arange(ch, dtype=np.float32) / ch - 0.5))[:, None] + gx * (np.arange(cw, dtype=np.float32) / cw - 0.5)[None, :]
    img *= gain[..., None]
    note(log, f"light_wb_gamma{gamma:.2f}")
    if rng.random() < 0.4:
        cy, cx, r = rng.uniform(0, ch), rng.uniform(0, cw), rng.uniform(0.08, 0.25) * max(cw, ch)
        yy, xx = np.ogrid[:ch, :cw]
        img += (rng.uniform(40, 110) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))[..., None].astype(np.float32)
        note(log, "glare")
    out = np.clip(img, 0, 255).astype(np.uint8)
    # a phone's optics: defocus or shake, sensor noise, its size, the marketplace's JPEG
    out = blur(rng, out, log) if rng.random() < 0.35 else cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 1.0))
    out = noise(rng, out, rng.uniform(2, 7))
    out = resize_max(out, max(64, int(rng.uniform(0.5, 1.0) * max_side)))
    q = int(rng.integers(40, 88))
    note(log, f"jpeg{q}")
    return jpeg(out, q)
