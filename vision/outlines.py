"""Outline geometry for the shape stage (``vision/shapes.py``): a part's outline and its
signatures, plain (blind to position, scale, rotation, mirroring and the contour's start) and
whitened (blind to any affine map), and the placements that lay one outline on another.

Kept apart from the stage itself so that the geometry reads in one place; numpy and OpenCV only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

N_POINTS = 128  # outline samples (by arc length)
N_HARMONICS = 24  # signature length
GENERIC_IOU = 0.9  # a mark this close to its own ellipse or rectangle says nothing by its shape
MAX_STRETCH = 2.5  # an affine placement's longer axis over its shorter, at most


@dataclass(frozen=True)
class Part:
    """One connected part: outline samples and signature (in the analysed image's pixels)."""

    outline: np.ndarray  # N_POINTS x 2 float32, by arc length
    radial: np.ndarray  # N_POINTS float32: distance from the centroid over its mean
    signature: np.ndarray  # N_HARMONICS float32
    centroid: tuple[float, float]
    area: float
    box: tuple[int, int, int, int]


# A placement larger than this (analysed pixels) is refined on the photo scaled down to it.
REFINE_SIDE = 96


def _resample(contour: np.ndarray, n: int) -> np.ndarray:
    """``n`` points evenly spaced by arc length along a closed contour."""
    pts = contour.reshape(-1, 2).astype(np.float64)
    closed = np.vstack([pts, pts[:1]])
    seg = np.sqrt((np.diff(closed, axis=0) ** 2).sum(axis=1))
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    total = cum[-1]
    if total <= 0:
        return np.repeat(pts[:1], n, axis=0).astype(np.float32)
    t = np.arange(n) * total / n
    x = np.interp(t, cum, closed[:, 0])
    y = np.interp(t, cum, closed[:, 1])
    return np.stack([x, y], axis=1).astype(np.float32)


def part_of(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> Part | None:
    """The :class:`Part` of a binary mask holding one connected part (None when degenerate)."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    c = max(contours, key=cv2.contourArea)
    if len(c) < 8:
        return None
    m = cv2.moments(mask, binaryImage=True)
    if m["m00"] <= 0:
        return None
    cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
    outline = _resample(c, N_POINTS)
    r = np.sqrt(((outline - np.float32([cx, cy])) ** 2).sum(axis=1))
    mean = float(r.mean())
    if mean <= 1e-6:
        return None
    radial = (r / mean).astype(np.float32)
    sig = np.abs(np.fft.rfft(radial))[1:N_HARMONICS + 1] / N_POINTS
    x, y, w, h = cv2.boundingRect(c)
    ox, oy = offset
    return Part(outline + np.float32([ox, oy]), radial, sig.astype(np.float32), (cx + ox, cy + oy),
                float(m["m00"]), (x + ox, y + oy, x + ox + w, y + oy + h))


def is_generic(mask: np.ndarray) -> bool:
    """True when the mask is nearly its own ellipse or rectangle (a disc, a square patch)."""
    return fill_iou(mask) >= GENERIC_IOU


def fill_iou(mask: np.ndarray) -> float:
    """The mask's IoU with the closer of its own ellipse and its minimal rectangle (1: nothing else)."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return 1.0
    pts = np.vstack(contours)
    best = 0.0
    for fill in ("rect", "ellipse"):
        canvas = np.zeros_like(mask)
        if fill == "rect":
            box = cv2.boxPoints(cv2.minAreaRect(pts)).astype(np.int32)
            cv2.fillPoly(canvas, [box], 1)
        elif len(pts) >= 5:
            cv2.ellipse(canvas, cv2.fitEllipse(pts), 1, -1)
        inter = float(np.logical_and(canvas, mask).sum())
        union = float(np.logical_or(canvas, mask).sum())
        best = max(best, inter / union if union else 0.0)
    return best


@dataclass(frozen=True)
class AffineOutline:
    """A part's outline seen in its whitened frame, where an affine map between two parts is a
    rotation (or a reflection): ``radial`` and ``signature`` as for :class:`Part`, there."""

    points: np.ndarray  # N_POINTS x 2: the outline in the part's own pixels, spaced by arc length in the whitened frame
    radial: np.ndarray
    signature: np.ndarray
    fill_iou: float  # whitened, the part's IoU with its own ellipse or rectangle: near 1, any blob fits it


def _whitening(m: dict[str, float]) -> tuple[np.ndarray, np.ndarray] | None:
    """Centroid and whitening matrix (the inverse square root of the second moments) of a
    region from its ``cv2.moments``; None for a degenerate one (no area, or a line)."""
    a = m["m00"]
    if abs(a) <= 1e-6:
        return None
    cov = np.array([[m["mu20"], m["mu11"]], [m["mu11"], m["mu02"]]]) / a
    vals, vecs = np.linalg.eigh(cov)
    if vals.min() <= 1e-9:
        return None
    return np.array([m["m10"], m["m01"]]) / a, vecs @ np.diag(vals ** -0.5) @ vecs.T


def affine_outline(outline: np.ndarray) -> AffineOutline | None:
    """The whitened view of a part's outline (None for a degenerate one)."""
    pts = np.asarray(outline, np.float64).reshape(-1, 2)
    w = _whitening(cv2.moments(pts.astype(np.float32)))
    if w is None:
        return None
    mu, white = w
    q = _resample((pts - mu) @ white.T, N_POINTS).astype(np.float64)
    r = np.sqrt((q ** 2).sum(axis=1))
    mean = float(r.mean())
    if mean <= 1e-9:
        return None
    radial = (r / mean).astype(np.float32)
    sig = (np.abs(np.fft.rfft(radial))[1:N_HARMONICS + 1] / N_POINTS).astype(np.float32)
    canvas = np.zeros((96, 96), np.uint8)  # whitened, the part spans about +-2
    cv2.fillPoly(canvas, [np.round(q * 16.0 + 48.0).astype(np.int32)], 1)
    points = (q @ np.linalg.inv(white).T + mu).astype(np.float32)
    return AffineOutline(points, radial, sig, fill_iou(canvas))


def whitened_fill_iou(mask: np.ndarray) -> float:
    """:func:`fill_iou` of the whole mask seen in its whitened frame: near 1 for a mark that a
    stretch makes an ellipse or a rectangle of (a disc, a bar, a blob), which every blob fits."""
    w = _whitening(cv2.moments(mask, binaryImage=True))
    if w is None:
        return 1.0
    mu, white = w
    white = 16.0 * white  # whitened, the mark spans about +-2: 96 px
    warp = np.hstack([white, (48.0 - white @ mu)[:, None]])
    return fill_iou(cv2.warpAffine(mask, warp, (96, 96), flags=cv2.INTER_NEAREST))


def align_affine(listing: AffineOutline, ref: AffineOutline, shifts: int = 2
                 ) -> list[tuple[np.ndarray, bool, float]]:
    """Candidate affine placements (2x3, reference -> listing analysed pixels, mirrored or not,
    stretch) from the best shifts of the whitened profiles; a placement stretched more than
    ``MAX_STRETCH`` is not one."""
    out = []
    for mirrored in (False, True):
        rr = ref.radial[::-1] if mirrored else ref.radial
        rp = (ref.points[::-1] if mirrored else ref.points).astype(np.float64)
        src = np.hstack([rp, np.ones((len(rp), 1))])
        for s in _shifts(rr, listing.radial, shifts):
            dst = np.roll(listing.points, -s, axis=0).astype(np.float64)
            sol, *_ = np.linalg.lstsq(src, dst, rcond=None)
            m = sol.T
            sv = np.linalg.svd(m[:, :2], compute_uv=False)
            if sv[1] <= 1e-9 or sv[0] / sv[1] > MAX_STRETCH or (np.linalg.det(m[:, :2]) < 0) != mirrored:
                continue
            out.append((m, mirrored, float(sv[0] / sv[1])))
    return out


def signatures(parts: "list[Part] | tuple[Part, ...]") -> np.ndarray:
    return (np.stack([p.signature for p in parts]) if parts else np.zeros((0, N_HARMONICS), np.float32))


def _shifts(a: np.ndarray, b: np.ndarray, top: int = 2) -> list[int]:
    """Circular shifts s maximising sum_t a[t] * b[t + s] (best first)."""
    a0, b0 = a - a.mean(), b - b.mean()
    corr = np.fft.irfft(np.conj(np.fft.rfft(a0)) * np.fft.rfft(b0), n=len(a))
    return [int(s) for s in np.argsort(-corr)[:top]]


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """Least-squares similarity (2x3) taking ``src`` points to ``dst`` (Umeyama, no reflection)."""
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - ms, dst - md
    var = float((s0 ** 2).sum())
    if var <= 1e-9:
        return None
    a = float((s0[:, 0] * d0[:, 0] + s0[:, 1] * d0[:, 1]).sum())
    b = float((s0[:, 0] * d0[:, 1] - s0[:, 1] * d0[:, 0]).sum())
    ca, sa = a / var, b / var
    rot = np.array([[ca, -sa], [sa, ca]])
    t = md - rot @ ms
    return np.hstack([rot, t[:, None]])


def align(listing: Part, ref: Part, ref_width: int, shifts: int = 2) -> list[tuple[np.ndarray, bool]]:
    """Candidate placements (2x3, reference analysed pixels -> listing analysed pixels) of
    ``ref`` onto ``listing``, straight and mirrored, from the best shifts of their profiles."""
    out = []
    for mirrored in (False, True):
        rr = ref.radial[::-1] if mirrored else ref.radial
        ro = ref.outline[::-1] if mirrored else ref.outline
        if mirrored:
            ro = ro.copy()
            ro[:, 0] = (ref_width - 1) - ro[:, 0]
        for s in _shifts(rr, listing.radial, shifts):
            dst = np.roll(listing.outline, -s, axis=0)
            m = _similarity(ro.astype(np.float64), dst.astype(np.float64))
            if m is None:
                continue
            if mirrored:  # compose with the flip x -> W - 1 - x
                flip = np.array([[-1.0, 0.0, ref_width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
                m = m @ flip
            out.append((m, mirrored))
    return out


def placed_box(mask_shape: tuple[int, ...], m: np.ndarray, target_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The box (x0, y0, x1, y1) a mask of ``mask_shape`` covers once warped by ``m``, within the target."""
    h, w = mask_shape[:2]
    th, tw = target_shape[:2]
    corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], np.float64) @ m.T
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
    return max(0, int(x0)), max(0, int(y0)), min(tw, int(x1)), min(th, int(y1))


def iou_at(mask: np.ndarray, m: np.ndarray, target: np.ndarray, area: float) -> tuple[float, tuple[int, int, int, int]]:
    """IoU of ``mask`` (``area`` pixels set) warped by ``m`` with ``target`` (same frame), within
    the warped box; the part of the mark that falls outside the photo counts against it."""
    x0, y0, x1, y1 = placed_box(mask.shape, m, target.shape)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return 0.0, (x0, y0, x1, y1)
    shifted = m.copy()
    shifted[:, 2] -= (x0, y0)
    warped = cv2.warpAffine(mask, shifted, (x1 - x0, y1 - y0), flags=cv2.INTER_NEAREST, borderValue=0)
    t = target[y0:y1, x0:x1]
    inter = int(np.count_nonzero(warped & t))
    union = int(np.count_nonzero(warped | t))
    outside = max(0.0, area * abs(float(np.linalg.det(m[:, :2]))) - float(np.count_nonzero(warped)))
    return (inter / (union + outside) if union else 0.0), (x0, y0, x1, y1)


def refine_placement(mask: np.ndarray, m: np.ndarray, target: np.ndarray, area: float, iou: float,
                     rounds: int = 3, step: tuple[float, float, float] = (1.0, 0.04, 3.0),
                     side: int = REFINE_SIDE) -> tuple[float, np.ndarray]:
    """A placement nudged to the IoU its outline alignment misses: greedy steps in shift (pixels),
    scale and rotation (degrees) about the placed mark's centre, the steps halved each round.

    The alignment fits 128 outline points by least squares, so a thin mark (a swoosh's tail, the
    arches' legs) placed half a pixel off loses a fifth of its IoU at 20 analysed pixels across.
    A mark placed larger than ``side`` pixels is nudged on the photo scaled to that size (a
    pixel matters less there, and the search costs a fraction), then measured at full size.
    Returns (IoU, 2x3 map); ``iou`` is the IoU at ``m``, returned with ``m`` if nothing is better."""
    h, w = mask.shape
    corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], np.float64) @ m.T
    (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
    f = min(1.0, side / max(x1 - x0, y1 - y0, 1.0))
    pad = 0.15 * max(x1 - x0, y1 - y0) + 4.0
    th, tw = target.shape
    cx0, cy0 = max(0, int(x0 - pad)), max(0, int(y0 - pad))
    cx1, cy1 = min(tw, int(np.ceil(x1 + pad))), min(th, int(np.ceil(y1 + pad)))
    if cx1 - cx0 < 3 or cy1 - cy0 < 3:
        return iou, m
    crop = target[cy0:cy1, cx0:cx1]
    if f < 1.0:
        crop = cv2.resize(crop, (max(3, round(crop.shape[1] * f)), max(3, round(crop.shape[0] * f))),
                          interpolation=cv2.INTER_NEAREST)
    into = np.array([[f, 0.0, -f * cx0], [0.0, f, -f * cy0], [0.0, 0.0, 1.0]])  # photo -> crop
    cur = (into @ np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
    cur_iou, _ = iou_at(mask, cur, crop, area)
    start_iou = cur_iou
    cx, cy = cur @ np.array([w / 2.0, h / 2.0, 1.0])
    d_shift, d_scale, d_angle = step[0] * f, step[1], step[2]
    for _ in range(rounds):
        for _pass in range(3):
            moved = False
            for dx, dy, ds, da in ((d_shift, 0, 0, 0), (-d_shift, 0, 0, 0), (0, d_shift, 0, 0), (0, -d_shift, 0, 0),
                                   (0, 0, d_scale, 0), (0, 0, -d_scale, 0), (0, 0, 0, d_angle), (0, 0, 0, -d_angle)):
                c = np.cos(np.radians(da)) * (1.0 + ds)
                s = np.sin(np.radians(da)) * (1.0 + ds)
                nudge = np.array([[c, -s, cx - c * cx + s * cy + dx], [s, c, cy - s * cx - c * cy + dy], [0, 0, 1]])
                cand = (nudge @ np.vstack([cur, [0.0, 0.0, 1.0]]))[:2]
                v, _ = iou_at(mask, cand, crop, area)
                if v > cur_iou + 1e-9:
                    cur, cur_iou, moved = cand, v, True
                    cx, cy = cx + dx, cy + dy
            if not moved:
                break
        d_shift, d_scale, d_angle = d_shift / 2, d_scale / 2, d_angle / 2
    if cur_iou <= start_iou:
        return iou, m
    out = (np.linalg.inv(into) @ np.vstack([cur, [0.0, 0.0, 1.0]]))[:2]
    v, _ = iou_at(mask, out, target, area)
    return (v, out) if v > iou else (iou, m)
