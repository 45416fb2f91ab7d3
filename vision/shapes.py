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

Everything is numpy and OpenCV; points and boxes come back in the listing's original pixels. The
outline geometry (signatures, alignments, the IoU of a placement) is in ``vision/outlines.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from brandguard.errors import InputError
from brandguard.vision.outlines import (GENERIC_IOU, N_HARMONICS, N_POINTS, AffineOutline, Part, affine_outline, align,
                                        align_affine, iou_at, is_generic, part_of, placed_box, refine_placement,
                                        signatures, whitened_fill_iou)

# Long side a listing photo is segmented at. Val/test offline (same code otherwise): 448 against
# 320 lifts marks in photos µAP 0.613 -> 0.637 / 0.654 -> 0.673, for about 10 ms more a listing.
SHAPE_SIDE = 448
REFERENCE_SHAPE_SIDE = 256  # long side a reference mark is cut out at
COLOURS = 6  # k-means colour classes of a listing photo
CHROMA_WEIGHT = 2.0  # a and b count this much more than lightness: a small coloured mark gets a class of its own
OUTLIER_DISTANCE = 70.0  # a pixel this far (weighted Lab) from every k-means centre is a colour no class explains
MIN_PART = 0.0015  # a candidate part covers at least this share of the photo ...
MAX_PART = 0.45  # ... and at most this
MAX_PARTS = 96  # parts compared per photo, largest first (val queries: median 20, 99th percentile 83)
MIN_SIDE = 16  # a photo smaller than this (after scaling) has no parts
MIN_REFERENCE_PARTS_SHARE = 0.02  # a mark's parts smaller than this share of its largest are noise
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
# places the reference by a least-squares affine map (stretched at most ``outlines.MAX_STRETCH``).
# Shortlist and signature cap as the similarity pass, tuned on val.
# A mark that a stretch makes nearly an ellipse or a rectangle (whitened, its IoU with them at
# least AFFINE_MAX_FILL: a badge, a blob, an apple) is left out of this pass: every blob in a photo
# fits it (val: 89 of 385 marks; the apple fits clean scikit-image photos at IoU 0.83 otherwise).
AFFINE_SHORTLIST = 3
MAX_AFFINE_DISTANCE = 0.002
AFFINE_MAX_FILL = 0.75
# Its two extra degrees of freedom buy an affine placement a little IoU on any mark: it replaces a
# similarity placement of the same mark only when better by this much (else a symmetric mark,
# the arches, comes back "mirrored" at a stretch of 1.01).
AFFINE_MARGIN = 0.02
REFINE_FROM = 0.5  # a reference's best placement from this IoU on is nudged to its best IoU (outlines.refine_placement)


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
    if is_generic(mask) or _textured(small, mask):
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
    total = sh * sw
    d = _sq_distances(flat, centres)
    extra = _outlier_centres(flat, d.min(axis=1), MIN_PART * total)
    if len(extra):
        d = np.hstack([d, _sq_distances(flat, extra)])
    labels = d.argmin(axis=1).astype(np.uint8).reshape(sh, sw)
    parts: list[Part] = []
    classes: list[int] = []
    for k in range(d.shape[1]):
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


def _sq_distances(flat: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return (flat ** 2).sum(axis=1)[:, None] - 2.0 * flat @ centres.T + (centres ** 2).sum(axis=1)[None]


def _outlier_centres(flat: np.ndarray, nearest: np.ndarray, min_pixels: float) -> np.ndarray:
    """One or two extra colour classes for the colours no k-means class explains (none: 0 x 3).

    k-means runs on a sample of about 4,096 pixels, so a small mark in a colour of its own (a
    purple swoosh on a grey photo: 0.2% of the pixels, about 8 in the sample) rarely gets a
    centre, is labelled with the nearest class and loses its outline there. Pixels farther than
    ``OUTLIER_DISTANCE`` from every centre (``nearest``: squared distances) are split in two
    colours, one when their centres are closer than that; a colour is kept when it has at least
    ``min_pixels`` (a part's worth). Val/test: marks in photos µAP 0.642/0.685 -> 0.645/0.692."""
    far = flat[nearest > OUTLIER_DISTANCE ** 2]
    if len(far) < max(min_pixels, 2):
        return np.zeros((0, 3), np.float32)
    step = max(1, len(far) // 2048)
    _c, lab, extra = cv2.kmeans(np.ascontiguousarray(far[::step]), 2, None,
                                (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 12, 1.0), 1,
                                cv2.KMEANS_PP_CENTERS)
    counts = (np.bincount(lab.ravel(), minlength=2) * step).astype(np.float32)
    if float(np.sqrt(((extra[0] - extra[1]) ** 2).sum())) < OUTLIER_DISTANCE:  # one colour
        extra, counts = (counts[:, None] * extra).sum(axis=0, keepdims=True) / counts.sum(), counts.sum(keepdims=True)
    return extra[counts >= min_pixels].astype(np.float32)


# ------------------------------------------------------------------ matching
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
                    # (unrefined, as SHARED_IOU was measured)
                    if others[0] and any(m.iou >= SHARED_IOU for m in
                                         _match(as_listing, self, others, min_part_iou=0.5, shifts=2, refine=False).values()):
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
    its best placement of the two passes, nudged to its best IoU from ``REFINE_FROM`` on."""
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
           affine: "tuple[list[AffineOutline | None], list[list[int]]] | None" = None,
           refine: bool = True) -> dict[int, ShapeMatch]:
    """Placements of the given reference rows per listing part (``shortlists[i]`` for part i;
    ``affine``: the parts' whitened outlines and the rows the affine pass places on each)."""
    best: dict[int, tuple] = {}  # row -> its best placement, the class mask and the part's mask it was fitted on
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
                best[r], score[r] = (b, target, part_target), key
    out: dict[int, ShapeMatch] = {}
    for r, (b, target, part_target) in best.items():
        mask, part_mask, area, part_area, n_parts, _box_area = refs[r]
        if refine and b[0] >= REFINE_FROM:
            iou, m = refine_placement(mask, b[2], target, area, b[0])
            if iou > b[0]:
                piou, _ = iou_at(part_mask, m, part_target, part_area)
                b = (iou, piou, m, b[3], placed_box(mask.shape, m, target.shape), b[5])
        out[r] = _to_original(b, table.shapes[r], listing, area, n_parts)
    return out


def _best_placement(placements: "list[tuple[np.ndarray, bool, float]]", mask: np.ndarray, part_mask: np.ndarray,
                    area: float, part_area: float, target: np.ndarray, part_target: np.ndarray,
                    min_part_iou: float):  # noqa: ANN202 - private tuple
    best = None
    for m, mirrored, stretch in placements:
        piou, _ = iou_at(part_mask, m, part_target, part_area)
        if piou < min_part_iou or (best is not None and piou <= best[1]):
            continue
        iou, box = iou_at(mask, m, target, area)
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
