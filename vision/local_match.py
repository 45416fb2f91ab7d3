"""From descriptor neighbours to geometric evidence: votes per reference, then RANSAC.

Input: a listing's keypoints and, for each of its descriptors (and of their mirror images), the
k nearest reference descriptors from the descriptor index. Steps:

1. **Ratio test across brands.** A neighbour counts when it is clearly closer than the nearest
   descriptor of *another* brand (Lowe's ratio). Comparing with the second neighbour outright
   would throw away every match of a mark that a brand registered twice (a logo and a product
   photo carrying it), which is the common case.
2. **Votes**: distinct listing keypoints per reference; the best ``top_n`` references go on.
3. **Geometry**: a similarity transform (scale, rotation, shift: what copying and pasting a mark
   does) fitted with RANSAC, straight and mirrored, the larger wins. Its inliers are taken out
   and the fit repeated, so several instances of a mark in one photo are counted.
4. **Perspective**: a reference the similarity fits well (``homography_from`` inliers) is fitted
   again with a homography, kept when it explains more points and its outline is a plausible
   quadrilateral: a product photographed at an angle.

Everything returned is in the listing's original pixels: the reference outline projected into
the photo (a quadrilateral), its bounding box, the scale and rotation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class MatchOptions:
    ratio: float = 0.85  # Lowe's ratio against the nearest descriptor of another brand
    max_distance: float = 0.75  # absolute L2 cap for unit descriptors (RootSIFT)
    top_n: int = 10  # references verified geometrically per listing
    min_votes: int = 4
    min_inliers: int = 5  # smallest instance worth reporting
    ransac_share: float = 0.012  # reprojection threshold, share of the listing's long side
    max_instances: int = 3
    mirror_margin: float = 1.5  # mirrored fit needs this many times the straight fit's inliers
    # Search each listing descriptor's contrast-inverted twin too (where the extractor knows it):
    # a light mark on a dark photo matches a dark-on-light reference. The negative is a geometric
    # hypothesis of its own, as the mirror image is, and needs more inliers: letters and stripes
    # share corners, and with both polarities to choose from a handful of points fit too easily
    # (white "NIKE" on black fitted a small adidas mark with 5).
    inverted: bool = True
    min_inliers_inverted: int = 8
    # A reference that fits a similarity with this many inliers is fitted again with a
    # homography on all its tentative matches (that hypothesis's): a product photographed at
    # an angle is not a similarity of its catalogue shot, and on a repeating print (stripes,
    # dots) the similarity's best consensus can be a shifted copy of the pattern. The
    # homography replaces the similarity's outline and inliers when it explains more points
    # and its outline is a plausible quadrilateral. 0 turns it off.
    homography_from: int = 12


@dataclass(frozen=True)
class LocalMatch:
    """Geometric agreement of one reference with one listing photo."""

    ref_row: int
    votes: int  # listing keypoints whose neighbour is this reference (ratio test passed)
    inliers: int  # distinct listing keypoints consistent with the best transform
    inlier_ratio: float  # inliers / tentative matches of that orientation
    coverage: float  # inliers / the reference's stored keypoints
    mirrored: bool
    instances: int
    outline: tuple[tuple[float, float], ...]  # reference corners projected into the listing
    box: tuple[int, int, int, int]  # bounding box of the outline, clipped to the listing
    area_share: float  # box area / listing area
    outline_share: float  # the projected reference's own area / listing area (not clipped): ~1 for a copy
    scale: float  # listing pixels per reference pixel
    rotation_deg: float
    inverted: bool = False  # matched as the reference's negative (contrast-inverted descriptors)

    def to_dict(self) -> dict:
        return {"inliers": self.inliers, "votes": self.votes, "inlier_ratio": round(self.inlier_ratio, 3),
                "coverage": round(self.coverage, 3), "mirrored": self.mirrored, "instances": self.instances,
                "outline": [[round(x, 1), round(y, 1)] for x, y in self.outline], "box": list(self.box),
                "area_share": round(self.area_share, 4), "outline_share": round(self.outline_share, 4),
                "scale": round(self.scale, 4),
                "rotation_deg": round(self.rotation_deg, 1), "inverted": self.inverted}


def tentative_matches(distances: np.ndarray, ref_rows: np.ndarray, brand_codes: np.ndarray,
                      opts: MatchOptions) -> np.ndarray:
    """Boolean Q x k mask of neighbours that pass the cross-brand ratio test and the distance cap.

    ``brand_codes`` is Q x k (an integer per neighbour's brand, -1 for none).
    """
    q, k = distances.shape
    if q == 0:
        return np.zeros((0, k), bool)
    b0 = brand_codes[:, :1]
    other = (brand_codes != b0) & (ref_rows >= 0)
    has_other = other.any(axis=1)
    first_other = np.argmax(other, axis=1)
    d_other = np.where(has_other, distances[np.arange(q), first_other], distances[:, -1])
    ok = (brand_codes == b0) & (ref_rows >= 0)
    ok &= distances < (opts.ratio ** 2) * d_other[:, None]
    ok &= distances < opts.max_distance ** 2
    # One vote per (listing keypoint, reference): the nearest of its neighbours in that reference.
    for j in range(1, k):
        dup = (ref_rows[:, :j] == ref_rows[:, j:j + 1]).any(axis=1)
        ok[:, j] &= ~dup
    return ok


def match_references(query_points: np.ndarray, query_mirrored: np.ndarray, image_size: tuple[int, int],
                     distances: np.ndarray, ref_rows: np.ndarray, ref_points: np.ndarray,
                     brand_codes: np.ndarray, ref_sizes: dict[int, tuple[int, int]],
                     ref_counts: dict[int, int], opts: MatchOptions = MatchOptions(),
                     query_inverted: np.ndarray | None = None) -> list[LocalMatch]:
    """Geometric matches of one listing, best first (by inliers).

    One row per listing descriptor: its point (listing pixels), whether it describes the
    mirror image (``query_mirrored``) or the negative (``query_inverted``), and its k
    neighbours in the descriptor index. Straight, mirrored, negative and mirrored negative are
    fitted apart; a later one wins only with ``mirror_margin`` times the inliers.
    """
    mask = tentative_matches(distances, ref_rows, brand_codes, opts)
    qi, kj = np.nonzero(mask)
    if not len(qi):
        return []
    rows = ref_rows[qi, kj]
    mirrored = np.asarray(query_mirrored, bool)[qi]
    inverted = (np.zeros(len(qi), bool) if query_inverted is None else np.asarray(query_inverted, bool)[qi])
    qpt_idx = qi
    # votes: distinct listing keypoints (positions) per reference
    uniq_rows, inverse = np.unique(rows, return_inverse=True)
    pos_key = np.round(query_points[qpt_idx]).astype(np.int64)
    votes = {}
    for u, r in enumerate(uniq_rows):
        sel = inverse == u
        votes[int(r)] = len(np.unique(pos_key[sel], axis=0))
    ranked = sorted((r for r in votes if votes[r] >= opts.min_votes), key=lambda r: -votes[r])[:opts.top_n]
    out = []
    w, h = image_size
    thr = max(2.0, opts.ransac_share * max(w, h))
    for r in ranked:
        sel = rows == r
        best = None
        for flip, neg in ((False, False), (True, False), (False, True), (True, True)):
            s = sel & (mirrored == flip) & (inverted == neg)
            if s.sum() < opts.min_votes:
                continue
            src = ref_points[qi[s], kj[s]]
            dst = query_points[qpt_idx[s]].copy()
            if flip:
                dst[:, 0] = w - dst[:, 0]
            fit = _fit_instances(src, dst, thr, opts)
            if fit is not None and neg and fit[0] < opts.min_inliers_inverted:
                fit = None
            # A symmetric mark fits both ways: call it mirrored only when clearly better.
            if fit is not None and (best is None or fit[0] > opts.mirror_margin * best[0]):
                best = (*fit, flip, int(s.sum()), neg, src, dst)
        if best is None:
            continue
        inliers, m, instances, flip, tentative, neg, src, dst = best
        if inliers < opts.min_inliers:
            continue
        rw, rh = ref_sizes.get(r, (0, 0))
        corners = np.float32([[0, 0], [rw, 0], [rw, rh], [0, rh]])
        proj = corners @ m[:, :2].T + m[:, 2]
        if opts.homography_from and inliers >= opts.homography_from:
            refit = _refit_homography(src, dst, corners, thr, inliers)
            if refit is not None:
                inliers, proj = refit
        if flip:
            proj[:, 0] = w - proj[:, 0]
        x0, y0 = np.clip(proj.min(axis=0), 0, [w, h])
        x1, y1 = np.clip(proj.max(axis=0), 0, [w, h])
        area = max(0.0, (x1 - x0) * (y1 - y0)) / max(1.0, float(w * h))
        xs, ys = proj[:, 0], proj[:, 1]
        outline_area = 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))
        scale = float(math.hypot(m[0, 0], m[1, 0]))
        rot = float(math.degrees(math.atan2(m[1, 0], m[0, 0])))
        out.append(LocalMatch(int(r), votes[r], inliers, inliers / max(1, tentative),
                              min(1.0, inliers / max(1, ref_counts.get(r, inliers))), flip, instances,
                              tuple((float(x), float(y)) for x, y in proj),
                              (int(x0), int(y0), int(math.ceil(x1)), int(math.ceil(y1))), area,
                              outline_area / max(1.0, float(w * h)), scale, rot, neg))
    out.sort(key=lambda m: (-m.inliers, m.ref_row))
    return out


def _fit_instances(src: np.ndarray, dst: np.ndarray, thr: float,
                   opts: MatchOptions) -> tuple[int, np.ndarray, int] | None:
    """(inliers of the best instance, its 2x3 transform, number of instances) or None."""
    best = None
    instances = 0
    remaining = np.ones(len(src), bool)
    for _ in range(opts.max_instances):
        if remaining.sum() < max(4, opts.min_inliers):
            break
        s, d = src[remaining], dst[remaining]
        m, mask = cv2.estimateAffinePartial2D(s, d, method=cv2.RANSAC, ransacReprojThreshold=thr,
                                              maxIters=1000, confidence=0.995, refineIters=5)
        if m is None or mask is None:
            break
        inl = mask.ravel().astype(bool)
        n = _distinct(d[inl])
        scale = math.hypot(m[0, 0], m[1, 0])
        if n < opts.min_inliers or not (1e-3 < scale < 1e3) or _spread(d[inl]) < 2 * thr:
            break
        instances += 1
        if best is None:
            best = (n, m)
        idx = np.flatnonzero(remaining)
        remaining[idx[inl]] = False
    if best is None:
        return None
    return best[0], best[1], instances


MIN_CORNER_DEG = 30.0  # a homography's outline with a sharper corner is a degenerate fit, not a view


def _refit_homography(src: np.ndarray, dst: np.ndarray, corners: np.ndarray, thr: float,
                      inliers: int) -> tuple[int, np.ndarray] | None:
    """(inliers, projected corners) of a homography fitted to all tentative matches, when it
    explains more distinct listing points than the similarity's ``inliers`` and maps the
    reference to a convex quadrilateral with no corner sharper than MIN_CORNER_DEG."""
    if len(src) < 8:
        return None
    h, mask = cv2.findHomography(src, dst, cv2.RANSAC, thr, maxIters=2000, confidence=0.995)
    if h is None or mask is None or not np.isfinite(h).all():
        return None
    n = _distinct(dst[mask.ravel().astype(bool)])
    if n <= inliers:
        return None
    proj = cv2.perspectiveTransform(corners.reshape(-1, 1, 2), h).reshape(-1, 2)
    if not np.isfinite(proj).all() or not _plausible_quad(proj):
        return None
    return n, proj


def _plausible_quad(q: np.ndarray) -> bool:
    """Convex, not degenerate, every interior angle within [MIN_CORNER_DEG, 180 - MIN_CORNER_DEG]."""
    quad = q.astype(np.float32)
    if not cv2.isContourConvex(quad.reshape(-1, 1, 2)) or abs(cv2.contourArea(quad)) < 1.0:
        return False
    for i in range(4):
        a, b, c = q[i - 1], q[i], q[(i + 1) % 4]
        u, v = a - b, c - b
        cos = float(np.dot(u, v) / max(1e-9, np.linalg.norm(u) * np.linalg.norm(v)))
        if not MIN_CORNER_DEG <= math.degrees(math.acos(max(-1.0, min(1.0, cos)))) <= 180.0 - MIN_CORNER_DEG:
            return False
    return True


def _distinct(points: np.ndarray) -> int:
    """Distinct positions: SIFT repeats a keypoint once per dominant orientation."""
    return len(np.unique(np.round(points).astype(np.int64), axis=0)) if len(points) else 0


def _spread(points: np.ndarray) -> float:
    """Diagonal of the points' bounding box: inliers piled on one spot prove nothing."""
    if len(points) < 2:
        return 0.0
    return float(np.hypot(*(points.max(axis=0) - points.min(axis=0))))
