"""Flat marks by their outline: the shape stage.

A flat one-colour mark (a swoosh, arches, three stripes) gives SIFT a handful of keypoints, most
of them on the mark's border where the background shows through, so the local stage rarely finds
it inside a photo. Its outline, though, is distinctive and survives scale, rotation, recolouring
and mirroring. Here:

- a reference that is a mark on a plain background (its border one colour) is cut out by its
  distance from that colour: the *mark mask* (all its parts) and its largest part;
- a listing photo is split into a few colour classes (k-means in Lab on a small copy); every
  connected part of a class of plausible size is a candidate;
- candidate and reference parts are compared by a signature that ignores position, scale,
  rotation, mirroring and the contour's start (magnitudes of the Fourier series of the outline's
  distance from its centroid); the closest references are aligned (the shift of the two radial
  profiles gives the point correspondences, a least-squares similarity the placement, mirrored
  or not) and the whole reference mark is laid over the photo: the *IoU* of that placement with
  the candidate's colour class is the evidence;
- a second, affine pass finds marks stretched or sheared (knockoffs squeezed to look different):
  parts are compared in their whitened frames, where an affine map is a rotation, and placed by a
  least-squares affine map; the placement's stretch is evidence too.

Everything is numpy and OpenCV; points and boxes come back in the listing's original pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from brandguard.errors import InputError

# Long side a listing photo is segmented at. Val/test offline (same code otherwise): 448 against
# 320 lifts marks in photos µAP 0.613 -> 0.637 / 0.654 -> 0.673, for about 10 ms more a listing.
SHAPE_SIDE = 448
REFERENCE_SHAPE_SIDE = 256  # long side a reference mark is cut out at
N_POINTS = 128  # outline samples (by arc length)
N_HARMONICS = 24  # signature length
COLOURS = 6  # k-means colour classes of a listing photo
CHROMA_WEIGHT = 2.0  # a and b count this much more than lightness: a small coloured mark gets a class of its own
MIN_PART = 0.0015  # a candidate part covers at least this share of the photo ...
MAX_PART = 0.45  # ... and at most this
MAX_PARTS = 96  # parts compared per photo, largest first (val queries: median 20, 99th percentile 83)
MIN_SIDE = 16  # a photo smaller than this (after scaling) has no parts
MIN_REFERENCE_PARTS_SHARE = 0.02  # a mark's parts smaller than this share of its largest are noise
GENERIC_IOU = 0.9  # a mark this close to its own ellipse or rectangle says nothing by its shape
# Matching: each listing part is aligned with this many references of the closest signatures,
# within this squared distance (val: 3 and 0.002 keep the right marks that 8 and no cap find, at
# a fifth of the time: about 10 ms per listing against 400 marks).
SHORTLIST = 3
MAX_SIGNATURE_DISTANCE = 0.002
# A reference whose cut-out is textured inside (a photographed product on a studio background) is
# not a flat mark: its outline is a silhouette that many photo regions resemble. Share of the
# mark's inner pixels with a grey gradient above TEXTURE_GRADIENT (val: median 0.03 for logos,
# 0.74 for catalogue shots; 7 of 300 logos and 76 of 86 catalogue shots are above 0.3).
MAX_TEXTURED = 0.3
TEXTURE_GRADIENT = 20.0
# A mark that another brand's mark fits this well (IoU of one laid over the other) identifies
# neither: merchandise silhouettes (a tee, a tote, a box carrying the mark) are shared by every
# brand that registers one. Val: 74 of 79 such mockups, 20 of 295 logos (badges: a disc or a
# hexagon around a glyph). Those shapes stay in the table but are not shortlisted. Each mark is
# compared with the SHARED_SHORTLIST others of the closest signatures within SHARED_DISTANCE.
SHARED_IOU = 0.8
SHARED_SHORTLIST = 8
SHARED_DISTANCE = 0.004
# A placed mark whose bounding box covers less than this share of the photo (about 18 x 18 of
# the 320 analysed pixels) has too coarse an outline to tell marks apart; measured on the box,
# not the ink, so that a thin mark (a swoosh) is judged by its extent. Val, placements with
# IoU >= 0.75 by ink share: 2 of 143 right below 0.004, 25 of 141 from 0.004 to 0.01, 59 of
# 118 from 0.02 to 0.04; test with the box rule: 18 flags on 494 clean photos against 17
# without it, µAP unchanged (0.739).
MIN_MARK_BOX_SHARE = 0.006
# Stretched and sheared marks (a knockoff squeezed to look different, a mark printed on a slanted
# surface): a second pass compares parts in their whitened frames (second moments the identity),
# where an affine map between two parts is a rotation, so the outline's profile survives it, and
# places the reference by a least-squares affine map, at most MAX_STRETCH times longer along one
# axis than the other. Shortlist and signature cap as the similarity pass, tuned on val.
# A mark that a stretch makes nearly an ellipse or a rectangle (whitened, its IoU with them at
# least AFFINE_MAX_FILL: a badge, a blob, an apple) is left out of this pass: every blob in a photo
# fits it (val: 89 of 385 marks; the apple fits clean scikit-image photos at IoU 0.83 otherwise).
MAX_STRETCH = 2.5
AFFINE_SHORTLIST = 3
MAX_AFFINE_DISTANCE = 0.002
AFFINE_MAX_FILL = 0.75
# Its two extra degrees of freedom buy an affine placement a little IoU on any mark: it replaces a
# similarity placement of the same mark only when better by this much (else a symmetric mark,
# the arches, comes back "mirrored" at a stretch of 1.01).
AFFINE_MARGIN = 0.02


@dataclass(frozen=True)
class Part:
    """One connected part: outline samples and signature (in the analysed image's pixels)."""

    outline: np.ndarray  # N_POINTS x 2 float32, by arc length
    radial: np.ndarray  # N_POINTS float32: distance from the centroid over its mean
    signature: np.ndarray  # N_HARMONICS float32
    centroid: tuple[float, float]
    area: float
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class ReferenceShape:
    """A reference mark: its largest part (aligned on) and its whole mask (verified on), the
    mask kept bit-packed (a 256 px mark is about 3 KB) and unpacked when a listing needs it."""

    part: Part
    bits: np.ndarray  # np.packbits of the H x W mask: every part of the mark, holes kept
    size: tuple[int, int]  # (width, height) of the analysed reference image
    scale: float  # reference original pixels per analysed pixel

    @property
    def mask(self) -> np.ndarray:
        w, h = self.size
        return np.unpackbits(self.bits, count=w * h).reshape(h, w)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain 1-D arrays (what the descriptor index stores, see ``index/local_store.py``)."""
        p = self.part
        return {"outline": p.outline.reshape(-1).astype(np.float32), "radial": p.radial.astype(np.float32),
                "signature": p.signature.astype(np.float32),
                "numbers": np.array([*p.centroid, p.area, *p.box, self.scale], np.float64),
                "size": np.array(self.size, np.int64), "bits": self.bits.astype(np.uint8)}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> "ReferenceShape":
        """Back from :meth:`to_arrays`; raises ValueError when the arrays do not fit together."""
        try:
            outline = np.asarray(a["outline"], np.float32).reshape(N_POINTS, 2)
            radial = np.asarray(a["radial"], np.float32).reshape(N_POINTS)
            sig = np.asarray(a["signature"], np.float32).reshape(N_HARMONICS)
            num = np.asarray(a["numbers"], np.float64).reshape(8)
            w, h = (int(v) for v in np.asarray(a["size"]).reshape(2))
            bits = np.asarray(a["bits"], np.uint8).reshape(-1)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"not a stored mark shape: {exc}") from exc
        if w < 1 or h < 1 or len(bits) != (w * h + 7) // 8:
            raise ValueError(f"stored mark shape: {len(bits)} mask bytes for {w} x {h}")
        part = Part(outline, radial, sig, (float(num[0]), float(num[1])), float(num[2]),
                    tuple(int(v) for v in num[3:7]))
        return cls(part, bits, (w, h), float(num[7]))

    def part_mask(self, mask: np.ndarray | None = None) -> np.ndarray:
        """The largest part alone (its outline filled, the mark's holes kept)."""
        mask = self.mask if mask is None else mask
        out = np.zeros_like(mask)
        cv2.fillPoly(out, [np.round(self.part.outline).astype(np.int32)], 1)
        return out & mask


@dataclass(frozen=True)
class ListingShapes:
    """A listing photo's colour classes and candidate parts."""

    labels: np.ndarray  # H x W uint8 colour class per pixel
    parts: tuple[Part, ...]
    part_class: tuple[int, ...]  # colour class of each part
    size: tuple[int, int]  # analysed (width, height)
    to_original: tuple[float, float]  # original pixels per analysed pixel (x, y)

    def __len__(self) -> int:
        return len(self.parts)


@dataclass(frozen=True)
class ShapeMatch:
    """A reference mark laid over a listing photo where its outline fits."""

    iou: float  # the whole mark against the photo's colour class there
    part_iou: float  # the largest part alone against the candidate part
    mirrored: bool
    outline: tuple[tuple[float, float], ...]  # reference corners in the listing's original pixels
    box: tuple[int, int, int, int]
    area_share: float  # the mark's share of the photo
    rotation_deg: float
    # How much the reference's outline says: the spread of its largest part's radial profile
    # (0 for a disc) and how many parts the mark has (a fit of several parts at once is rarer).
    complexity: float = 0.0
    parts: int = 1
    stretch: float = 1.0  # the placement's longer axis over its shorter (1: a similarity)

    def to_dict(self) -> dict:
        return {"iou": round(self.iou, 3), "part_iou": round(self.part_iou, 3), "mirrored": self.mirrored,
                "outline": [[round(x, 1), round(y, 1)] for x, y in self.outline], "box": list(self.box),
                "area_share": round(self.area_share, 4), "rotation_deg": round(self.rotation_deg, 1),
                "complexity": round(self.complexity, 3), "parts": self.parts, "stretch": round(self.stretch, 3)}


# ------------------------------------------------------------------ parts
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


def _generic(mask: np.ndarray) -> bool:
    """True when the mask is nearly its own ellipse or rectangle (a disc, a square patch)."""
    return _fill_iou(mask) >= GENERIC_IOU


def _fill_iou(mask: np.ndarray) -> float:
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


def affine_outline(outline: np.ndarray) -> AffineOutline | None:
    """The whitened view of a part's outline (None for a degenerate one)."""
    pts = np.asarray(outline, np.float64).reshape(-1, 2)
    m = cv2.moments(pts.astype(np.float32))
    a = m["m00"]
    if abs(a) <= 1e-6:
        return None
    mu = np.array([m["m10"] / a, m["m01"] / a])
    cov = np.array([[m["mu20"], m["mu11"]], [m["mu11"], m["mu02"]]]) / a
    vals, vecs = np.linalg.eigh(cov)
    if vals.min() <= 1e-9:
        return None
    white = vecs @ np.diag(vals ** -0.5) @ vecs.T
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
    return AffineOutline(points, radial, sig, _fill_iou(canvas))


def whitened_fill_iou(mask: np.ndarray) -> float:
    """:func:`_fill_iou` of the whole mask seen in its whitened frame: near 1 for a mark that a
    stretch makes an ellipse or a rectangle of (a disc, a bar, a blob), which every blob fits."""
    m = cv2.moments(mask, binaryImage=True)
    if m["m00"] <= 0:
        return 1.0
    cov = np.array([[m["mu20"], m["mu11"]], [m["mu11"], m["mu02"]]]) / m["m00"]
    vals, vecs = np.linalg.eigh(cov)
    if vals.min() <= 1e-9:
        return 1.0
    white = 16.0 * (vecs @ np.diag(vals ** -0.5) @ vecs.T)  # whitened, the mark spans about +-2: 96 px
    mu = np.array([m["m10"], m["m01"]]) / m["m00"]
    warp = np.hstack([white, (48.0 - white @ mu)[:, None]])
    return _fill_iou(cv2.warpAffine(mask, warp, (96, 96), flags=cv2.INTER_NEAREST))


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


def _textured(rgb: np.ndarray, mask: np.ndarray) -> bool:
    """True when the inside of the mask (its border eroded away) is mostly gradient: a photo
    cut out, not a flat mark. A mark too thin to have an inside counts as flat."""
    inner = cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0
    if np.count_nonzero(inner) < 50:
        return False
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mag = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    return float((mag[inner] > TEXTURE_GRADIENT).mean()) > MAX_TEXTURED


def reference_shape(rgb: np.ndarray) -> ReferenceShape | None:
    """The mark of a reference image drawn on a plain background; None when the image is not
    that (a photo, a photo cut out, a mark filling the frame) or its shape is generic (a disc,
    a square)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"expected HxWx3 uint8 RGB, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    f = min(1.0, REFERENCE_SHAPE_SIDE / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA) if f < 1 else rgb
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    border = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    bg = np.median(border, axis=0)
    if float(np.sqrt(((border - bg) ** 2).sum(axis=1)).mean()) > 12.0:
        return None  # not a plain background
    dist = np.sqrt(((lab - bg) ** 2).sum(axis=2))
    mask = (dist > max(30.0, 0.5 * float(np.percentile(dist, 99)))).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    share = float(mask.mean())
    if not 0.01 <= share <= 0.8:
        return None
    n, lab_img, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n < 2:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    largest = int(np.argmax(areas)) + 1
    keep = np.zeros(n, bool)
    keep[1:] = areas >= MIN_REFERENCE_PARTS_SHARE * areas.max()
    mask = keep[lab_img].astype(np.uint8)
    if _generic(mask) or _textured(small, mask):
        return None
    part = part_of((lab_img == largest).astype(np.uint8))
    if part is None:
        return None
    return ReferenceShape(part, np.packbits(mask.reshape(-1)), (mask.shape[1], mask.shape[0]), 1.0 / f)


def listing_shapes(rgb: np.ndarray, original_size: tuple[int, int], seed: int = 0) -> ListingShapes:
    """A listing photo split into colour classes, and the parts of plausible mark size."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"expected HxWx3 uint8 RGB, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    f = min(1.0, SHAPE_SIDE / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA) if f < 1 else rgb
    sh, sw = small.shape[:2]
    ox, oy = original_size
    if min(sh, sw) < MIN_SIDE:  # nothing of mark size fits (and k-means needs more pixels than classes)
        return ListingShapes(np.zeros((sh, sw), np.uint8), (), (), (sw, sh), (ox / sw, oy / sh))
    lab = cv2.cvtColor(cv2.GaussianBlur(small, (3, 3), 0), cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 1:] *= np.float32(CHROMA_WEIGHT)
    flat = lab.reshape(-1, 3)
    step = max(1, len(flat) // 4096)
    cv2.setRNGSeed(seed)
    _c, _l, centres = cv2.kmeans(np.ascontiguousarray(flat[::step]), COLOURS, None,
                                 (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 12, 1.0), 1,
                                 cv2.KMEANS_PP_CENTERS)
    d = (flat ** 2).sum(axis=1)[:, None] - 2.0 * flat @ centres.T + (centres ** 2).sum(axis=1)[None]
    labels = d.argmin(axis=1).astype(np.uint8).reshape(sh, sw)
    parts: list[Part] = []
    classes: list[int] = []
    total = sh * sw
    for k in range(COLOURS):
        m = (labels == k).astype(np.uint8)
        n, comp, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        for j in range(1, n):
            x, y, bw, bh, area = stats[j]
            if not MIN_PART * total <= area <= MAX_PART * total or min(bw, bh) < 4:
                continue
            sub = (comp[y:y + bh, x:x + bw] == j).astype(np.uint8)
            p = part_of(np.pad(sub, 1), (x - 1, y - 1))
            if p is not None:
                parts.append(p)
                classes.append(k)
    if len(parts) > MAX_PARTS:  # a busy texture: the largest parts are the ones a mark can be
        keep = sorted(np.argsort([-p.area for p in parts], kind="stable")[:MAX_PARTS])
        parts, classes = [parts[i] for i in keep], [classes[i] for i in keep]
    return ListingShapes(labels, tuple(parts), tuple(classes), (sw, sh), (ox / sw, oy / sh))


# ------------------------------------------------------------------ matching
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


def _iou_at(mask: np.ndarray, m: np.ndarray, target: np.ndarray, area: float) -> tuple[float, tuple[int, int, int, int]]:
    """IoU of ``mask`` (``area`` pixels set) warped by ``m`` with ``target`` (same frame), within
    the warped box; the part of the mark that falls outside the photo counts against it."""
    h, w = mask.shape
    th, tw = target.shape
    corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], np.float64) @ m.T
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(tw, x1), min(th, y1)
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


class ShapeTable:
    """Every indexed reference's mark shape, by reference row (the descriptor index keeps it).

    ``brands`` (row -> brand code, -1 for none; ``ReferenceIndex.brand_codes``) lets the table
    leave out of its shortlists the shapes that another brand's shape fits (``SHARED_IOU``).
    ``rigid_rows`` are never stretched by the affine pass: the product photos (kind ``product``).
    A product's silhouette stretched fits other products (bench: flat garments of catalogue shots
    placed on 3 of 400 clean clothing photos at a stretch of 1.4-1.8)."""

    def __init__(self, shapes: "dict[int, ReferenceShape] | None" = None, brands: np.ndarray | None = None,
                 rigid_rows: np.ndarray | None = None) -> None:
        self.shapes: dict[int, ReferenceShape] = dict(shapes or {})
        self.brands = brands
        self.rigid_rows = frozenset() if rigid_rows is None else frozenset(int(r) for r in rigid_rows)
        self._rows: np.ndarray | None = None
        self._sigs: np.ndarray | None = None
        self._shared: frozenset[int] | None = None
        self._shared_rows = np.zeros(0, np.int64)
        self._affine: tuple[np.ndarray, np.ndarray, dict[int, AffineOutline]] | None = None
        self._sizes: dict[int, tuple[float, float, int, float]] = {}  # row -> see :meth:`sizes`

    def __len__(self) -> int:
        return len(self.shapes)

    @classmethod
    def from_marks(cls, marks: "dict[int, dict[str, np.ndarray]]", brands: np.ndarray | None = None,
                   rigid_rows: np.ndarray | None = None) -> "ShapeTable":
        """From the descriptor index's stored arrays (reference row -> arrays)."""
        return cls({int(r): ReferenceShape.from_arrays(a) for r, a in marks.items()}, brands, rigid_rows)

    def add(self, row: int, shape: ReferenceShape) -> None:
        self.shapes[int(row)] = shape
        self._rows = self._shared = self._affine = None
        self._sizes = {}

    def remove(self, rows) -> None:  # noqa: ANN001 - any iterable of ints
        for r in rows:
            self.shapes.pop(int(r), None)
        self._rows = self._shared = self._affine = None
        self._sizes = {}

    def _brand(self, row: int) -> int:
        b = self.brands
        return int(b[row]) if b is not None and 0 <= row < len(b) else -1

    def shared(self) -> frozenset[int]:
        """Rows whose mark another brand's mark fits at IoU >= ``SHARED_IOU`` (each mark laid
        over the other's mask as over a listing; computed once per table)."""
        if self._shared is None:
            out = set()
            if self.brands is not None and len(self.shapes) > 1:
                for r, ref in self.shapes.items():
                    own = self._brand(r)
                    if own < 0:
                        continue
                    mask = ref.mask
                    as_listing = ListingShapes(mask, (ref.part,), (1,), ref.size, (1.0, 1.0))
                    others = [[o for o in rows if o != r and self._brand(o) not in (own, -1)]
                              for rows in self._candidates((ref.part,), SHARED_SHORTLIST + 1, None, SHARED_DISTANCE)]
                    if others[0] and any(m.iou >= SHARED_IOU for m in
                                         _match(as_listing, self, others, min_part_iou=0.5, shifts=2).values()):
                        out.add(r)
            self._shared = frozenset(out)
            self._shared_rows = np.fromiter(out, np.int64, len(out))
        return self._shared

    def _candidates(self, parts: "tuple[Part, ...]", k: int, only_rows: np.ndarray | None,
                    max_distance: float, skip_shared: bool = False) -> list[list[int]]:
        if self._rows is None:
            self._rows = np.fromiter(self.shapes, np.int64, len(self.shapes))
            self._sigs = signatures([self.shapes[int(r)].part for r in self._rows])
        rows, sigs = self._rows, self._sigs
        keep = np.ones(len(rows), bool)
        if only_rows is not None:
            keep &= np.isin(rows, only_rows)
        if skip_shared and self.shared():
            keep &= ~np.isin(rows, self._shared_rows)
        rows, sigs = rows[keep], sigs[keep]
        if not len(rows) or not parts:
            return [[] for _ in parts]
        q = signatures(parts)
        d = (q ** 2).sum(axis=1)[:, None] - 2.0 * q @ sigs.T + (sigs ** 2).sum(axis=1)[None]
        k = min(k, len(rows))
        best = np.argpartition(d, k - 1, axis=1)[:, :k]
        return [[int(rows[j]) for j in b if d[i, j] <= max_distance] for i, b in enumerate(best)]

    def sizes(self, row: int, mask: np.ndarray, part_mask: np.ndarray) -> tuple[float, float, int, float]:
        """A mark's pixels, its largest part's pixels, its parts and its box's pixels (measured
        once: every listing needs them)."""
        if row not in self._sizes:
            _x, _y, bw, bh = cv2.boundingRect(mask)
            self._sizes[row] = (float(np.count_nonzero(mask)), float(np.count_nonzero(part_mask)),
                                max(1, cv2.connectedComponents(mask, connectivity=8)[0] - 1), float(bw * bh))
        return self._sizes[row]

    def affine(self) -> tuple[np.ndarray, np.ndarray, dict[int, AffineOutline]]:
        """Rows, whitened signatures and outlines of the marks the affine pass compares: those not
        rigid that a stretch does not make an ellipse or a rectangle of (``AFFINE_MAX_FILL``)."""
        if self._affine is None:
            rows, outs = [], {}
            for r, ref in self.shapes.items():
                if int(r) in self.rigid_rows:
                    continue
                a = affine_outline(ref.part.outline)
                if a is None or whitened_fill_iou(ref.mask) >= AFFINE_MAX_FILL:
                    continue
                rows.append(int(r))
                outs[int(r)] = a
            rows_arr = np.array(rows, np.int64)
            sigs = np.stack([outs[r].signature for r in rows]) if rows else np.zeros((0, N_HARMONICS), np.float32)
            self._affine = (rows_arr, sigs, outs)
        return self._affine

    def affine_shortlist(self, outlines: "list[AffineOutline | None]", k: int, only_rows: np.ndarray | None = None,
                         max_distance: float = np.inf) -> list[list[int]]:
        """Per listing part (its whitened outline), the ``k`` rows of the closest whitened
        signatures within ``max_distance``, shared shapes left out."""
        rows, sigs, _ = self.affine()
        keep = np.ones(len(rows), bool)
        if only_rows is not None:
            keep &= np.isin(rows, only_rows)
        if self.shared():
            keep &= ~np.isin(rows, self._shared_rows)
        rows, sigs = rows[keep], sigs[keep]
        out: list[list[int]] = [[] for _ in outlines]
        have = [i for i, o in enumerate(outlines) if o is not None and o.fill_iou < GENERIC_IOU]
        if not len(rows) or not have:
            return out
        q = np.stack([outlines[i].signature for i in have])
        d = (q ** 2).sum(axis=1)[:, None] - 2.0 * q @ sigs.T + (sigs ** 2).sum(axis=1)[None]
        k = min(k, len(rows))
        best = np.argpartition(d, k - 1, axis=1)[:, :k]
        for n, i in enumerate(have):
            out[i] = [int(rows[j]) for j in best[n] if d[n, j] <= max_distance]
        return out

    def shortlist(self, parts: "tuple[Part, ...]", k: int, only_rows: np.ndarray | None = None,
                  max_distance: float = np.inf) -> list[list[int]]:
        """Per listing part, the ``k`` reference rows with the closest signatures (squared L2
        distance at most ``max_distance``), shared shapes left out."""
        return self._candidates(parts, k, only_rows, max_distance, skip_shared=True)


def match_shapes(listing: ListingShapes, table: ShapeTable, shortlist: int = SHORTLIST, min_part_iou: float = 0.5,
                 only_rows: np.ndarray | None = None, max_distance: float = MAX_SIGNATURE_DISTANCE,
                 shifts: int = 2, affine_shortlist: int = AFFINE_SHORTLIST,
                 max_affine_distance: float = MAX_AFFINE_DISTANCE) -> dict[int, ShapeMatch]:
    """Each shortlisted reference's best placement on the listing (reference row -> match).

    Every listing part is aligned with the ``shortlist`` references whose signatures are
    closest; a placement is measured as a whole mark only when the largest part fits its
    candidate part (IoU >= ``min_part_iou``), and kept when the mark's box covers at least
    ``MIN_MARK_BOX_SHARE`` of the photo. The affine pass (``affine_shortlist`` references per
    part by whitened signature; 0: off) places marks stretched or sheared, and a reference keeps
    its best placement of the two passes."""
    if not len(listing) or not len(table):
        return {}
    affine = None
    if affine_shortlist > 0:
        outlines = [affine_outline(p.outline) for p in listing.parts]
        affine = (outlines, table.affine_shortlist(outlines, affine_shortlist, only_rows, max_affine_distance))
    return _match(listing, table, table.shortlist(listing.parts, shortlist, only_rows, max_distance),
                  min_part_iou, shifts, affine=affine)


def _match(listing: ListingShapes, table: ShapeTable, shortlists: list[list[int]], min_part_iou: float,
           shifts: int, min_box_share: float = MIN_MARK_BOX_SHARE,
           affine: "tuple[list[AffineOutline | None], list[list[int]]] | None" = None) -> dict[int, ShapeMatch]:
    """Placements of the given reference rows per listing part (``shortlists[i]`` for part i;
    ``affine``: the parts' whitened outlines and the rows the affine pass places on each)."""
    out: dict[int, ShapeMatch] = {}
    score: dict[int, tuple[float, float]] = {}  # row -> its placement's (IoU, less AFFINE_MARGIN if affine; part IoU)
    targets: dict[int, np.ndarray] = {}
    refs: dict[int, tuple] = {}
    listing_area = float(listing.size[0] * listing.size[1])
    for i, rows in enumerate(shortlists):
        k = listing.part_class[i]
        if k not in targets:
            targets[k] = (listing.labels == k).astype(np.uint8)
        target = targets[k]
        lp = listing.parts[i]
        part_target = np.zeros_like(target)
        cv2.fillPoly(part_target, [np.round(lp.outline).astype(np.int32)], 1)
        part_target &= target
        passes = [(r, False) for r in rows] + ([(r, True) for r in affine[1][i]] if affine is not None else [])
        for r, stretched in passes:
            ref = table.shapes[r]
            if r not in refs:  # unpacked once per listing
                mask = ref.mask
                part_mask = ref.part_mask(mask)
                refs[r] = (mask, part_mask, *table.sizes(r, mask, part_mask))
            mask, part_mask, area, part_area, n_parts, box_area = refs[r]
            placements = (align_affine(affine[0][i], table.affine()[2][r], shifts) if stretched else
                          [(m, mirrored, 1.0) for m, mirrored in align(lp, ref.part, ref.size[0], shifts)])
            b = _best_placement(placements, mask, part_mask, area, part_area, target, part_target, min_part_iou)
            if b is None:
                continue
            key = (b[0] - (AFFINE_MARGIN if stretched else 0.0), b[1])
            if r in score and key <= score[r]:
                continue
            if box_area * abs(float(np.linalg.det(b[2][:, :2]))) >= min_box_share * listing_area:
                out[r], score[r] = _to_original(b, ref, listing, area, n_parts), key
    return out


def _best_placement(placements: "list[tuple[np.ndarray, bool, float]]", mask: np.ndarray, part_mask: np.ndarray,
                    area: float, part_area: float, target: np.ndarray, part_target: np.ndarray,
                    min_part_iou: float):  # noqa: ANN202 - private tuple
    best = None
    for m, mirrored, stretch in placements:
        piou, _ = _iou_at(part_mask, m, part_target, part_area)
        if piou < min_part_iou or (best is not None and piou <= best[1]):
            continue
        iou, box = _iou_at(mask, m, target, area)
        if best is None or (iou, piou) > (best[0], best[1]):
            best = (iou, piou, m, mirrored, box, stretch)
    return best


def _to_original(best, ref: ReferenceShape, listing: ListingShapes, area: float,  # noqa: ANN001
                 parts: int) -> ShapeMatch:
    iou, piou, m, mirrored, (x0, y0, x1, y1), stretch = best
    w, h = ref.size
    sx, sy = listing.to_original
    corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], np.float64) @ m.T
    outline = tuple((float(x * sx), float(y * sy)) for x, y in corners)
    box = (int(x0 * sx), int(y0 * sy), int(x1 * sx), int(y1 * sy))
    lw, lh = listing.size
    area_share = area * abs(float(np.linalg.det(m[:, :2]))) / float(lw * lh)
    rot = float(np.degrees(np.arctan2(m[1, 0], m[0, 0])))
    return ShapeMatch(float(iou), float(piou), bool(mirrored), outline, box, area_share, rot,
                      float(np.std(ref.part.radial)), int(parts), float(stretch))
