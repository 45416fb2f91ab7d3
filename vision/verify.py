"""Local-feature verification: is the listing geometrically a copy of the reference?

An embedding says "these look alike"; a brand's lawyer wants "this region of the listing is
that reference image, scaled 0.4x and rotated 3 degrees". ORB keypoints, a ratio test and a
RANSAC homography give exactly that: the inlier count, the matched box in the listing and the
transform. A copy (however cropped or re-encoded) keeps many consistent inliers; a redrawn,
mirrored or spliced mark does not, which is what separates ``copy`` from ``knockoff``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from brandguard.vision.local import to_gray

WORK_SIDE = 400  # long side both images are brought to before matching


@dataclass(frozen=True)
class Geometry:
    """Evidence from matching keypoints of a query against one reference."""

    inliers: int
    matches: int
    box: tuple[int, int, int, int] | None  # matched region in query pixels (x0, y0, x1, y1)
    scale: float | None
    rotation_deg: float | None
    mirrored: bool

    def to_dict(self) -> dict:
        return {"inliers": self.inliers, "matches": self.matches, "box": list(self.box) if self.box else None,
                "scale": None if self.scale is None else round(self.scale, 3),
                "rotation_deg": None if self.rotation_deg is None else round(self.rotation_deg, 1),
                "mirrored": self.mirrored}


NO_GEOMETRY = Geometry(0, 0, None, None, None, False)


def to_work_gray(rgb: np.ndarray, side: int = WORK_SIDE) -> tuple[np.ndarray, float]:
    """Grey image with long side <= ``side`` and the factor applied (to map boxes back)."""
    gray, to_rgb = to_gray(rgb, side)
    return gray, 1.0 / to_rgb


class Verifier:
    """ORB + RANSAC matcher; keeps a small cache of reference keypoints."""

    def __init__(self, n_features: int = 400, ratio: float = 0.8, ransac_px: float = 6.0, cache_size: int = 512,
                 min_inliers: int = 15):
        self._orb = cv2.ORB_create(nfeatures=n_features)
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        self.ratio = ratio
        self.ransac_px = ransac_px
        self._cache: dict[str, tuple] = {}
        self._cache_size = cache_size
        self.min_inliers = min_inliers

    def features(self, gray: np.ndarray):
        # A white border lets ORB find corners of marks that touch the image edge.
        padded = cv2.copyMakeBorder(gray, 16, 16, 16, 16, cv2.BORDER_REPLICATE)
        kps, desc = self._orb.detectAndCompute(padded, None)
        pts = np.float32([k.pt for k in kps]).reshape(-1, 2) - 16.0 if kps else np.zeros((0, 2), np.float32)
        return pts, desc

    def reference_features(self, key: str, load_rgb):
        """Keypoints of a reference (and of its mirror image), computed once per reference.

        ``load_rgb`` is called only on a cache miss; it returns the reference's RGB array.
        """
        hit = self._cache.get(key)
        if hit is None:
            gray, factor = to_work_gray(load_rgb())
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            flipped = np.ascontiguousarray(gray[:, ::-1])
            hit = (self.features(gray), self.features(flipped), gray.shape, factor)
            self._cache[key] = hit
        return hit

    def _match(self, q, r) -> tuple[int, int, np.ndarray | None]:
        (qp, qd), (rp, rd) = q, r
        if qd is None or rd is None or len(qd) < 4 or len(rd) < 4:
            return 0, 0, None
        pairs = self._matcher.knnMatch(rd, qd, k=2)
        good = [m for m, *rest in pairs if rest and m.distance < self.ratio * rest[0].distance]
        if len(good) < 6:
            return 0, len(good), None
        src = rp[[m.queryIdx for m in good]]
        dst = qp[[m.trainIdx for m in good]]
        # A similarity transform (scale, rotation, shift) is what copies undergo; it needs
        # fewer points than a homography and refuses the wild fits a homography allows.
        m, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=self.ransac_px,
                                              maxIters=2000, confidence=0.99)
        if m is None or mask is None:
            return 0, len(good), None
        return int(mask.sum()), len(good), m

    def verify(self, query_gray: np.ndarray, query_factor: float, ref_key: str, load_ref_rgb,
               query_features=None) -> Geometry:
        """Match a query (work-size grey, with its scale factor) against a reference.

        ``scale`` in the result is reference size to listing size, in original pixels.
        """
        q = query_features if query_features is not None else self.features(query_gray)
        straight, flipped, (rh, rw), ref_factor = self.reference_features(ref_key, load_ref_rgb)
        n1, g1, m1 = self._match(q, straight)
        # The mirror test doubles the matching cost; only pay it when the straight match failed.
        n2, g2, m2 = self._match(q, flipped) if n1 < self.min_inliers else (0, 0, None)
        mirrored = n2 > n1
        inliers, good, m = (n2, g2, m2) if mirrored else (n1, g1, m1)
        if m is None:
            return Geometry(inliers, good, None, None, None, mirrored)
        scale = float(math.hypot(m[0, 0], m[1, 0]))
        rotation = float(math.degrees(math.atan2(m[1, 0], m[0, 0])))
        corners = np.float32([[0, 0], [rw, 0], [rw, rh], [0, rh]])
        proj = corners @ m[:, :2].T + m[:, 2]
        qh, qw = query_gray.shape
        x0, y0 = np.clip(proj.min(axis=0), 0, [qw, qh])
        x1, y1 = np.clip(proj.max(axis=0), 0, [qw, qh])
        inv = 1.0 / query_factor
        box = (int(x0 * inv), int(y0 * inv), int(x1 * inv), int(y1 * inv))
        return Geometry(inliers, good, box, scale * ref_factor * inv, rotation, mirrored)
