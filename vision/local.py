"""Local features: keypoints and descriptors that find a mark anywhere in a listing photo.

A global embedding sees the whole photo; a brand mark covering 15% of it barely moves that
vector. Local features describe small patches, so a mark matches wherever it sits, at any
scale or rotation, and the matched points say *where* it is (the evidence a reviewer wants).

One interface, :class:`LocalExtractor` (``extract(gray) -> LocalFeatures``), two
implementations: OpenCV SIFT turned into RootSIFT here, and XFeat on ONNX Runtime
(``vision/xfeat.py``). Points are always returned in the pixels of the image the caller
describes (its *original* pixels, see :func:`describe_rgb`), so every box in the evidence shares
one coordinate system.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from brandguard.errors import BundleError, InputError
from brandguard.vision.agreement import LISTING_THUMB_SIDE, thumbnail
from brandguard.vision.shapes import ListingShapes, ReferenceShape, listing_shapes, reference_shape

QUERY_SIDE = 640  # long side a listing photo is described at (small marks need the pixels)
REFERENCE_SIDE = 512  # long side a reference image is described at
# Long side of auto depth's keypoint glance: a quick look (straight and mirror keypoints, a quarter
# of the IVF probes) at every listing the global score does not send deep, which sends it deep when
# any reference fits it geometrically. On a third of the test split (standard corpus) a 320 px
# glance routed 72% of the marks in photos that thorough finds (the global gate alone: 32%), 95% of
# the strong copies (65%) and 83% of the knockoffs (69%), and no more distractors; 400 px routed
# 78% of the marks in photos, and auto's recall@1 there went 0.490 -> 0.541 (µAP 0.676 -> 0.698
# overall), for 1.4x the glance's CPU (on 800 px clothing listings 58 -> 81 ms of keypoints,
# search and fits in one measurement; the search is mostly the IVF quantizer). 480 px was no better.
GLANCE_SIDE = 400
GLANCE_PROBE_SHARE = 0.25


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoints of one image: ``points`` (N x 2, x/y in the image's original pixels) and
    ``descriptors`` (N x D float32, unit rows), plus that image's (width, height)."""

    points: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]
    # The mirror image's keypoints (same original-pixel frame, x not flipped back), for
    # mirrored knockoffs; None when not computed. SIFT gets them by permuting bins.
    mirror_points: np.ndarray | None = None
    mirror_descriptors: np.ndarray | None = None
    # A small grey copy of the image (vision/agreement.py): which of a brand's references the
    # listing was made from is told by the pixels around the keypoints, not the keypoints.
    thumb: np.ndarray | None = None
    # The shape stage (vision/shapes.py): a listing's colour parts, or a reference's mark
    # (None: not computed, or the reference is not a mark on a plain background).
    shapes: ListingShapes | None = None
    mark: ReferenceShape | None = None

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def query_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(descriptors, points, mirrored flags) of every row to search: straight, then mirror."""
        if self.mirror_descriptors is None or self.mirror_points is None:
            return self.descriptors, self.points, np.zeros(len(self.points), bool)
        return (np.concatenate([self.descriptors, self.mirror_descriptors]),
                np.concatenate([self.points, self.mirror_points]),
                np.concatenate([np.zeros(len(self.points), bool), np.ones(len(self.mirror_points), bool)]))


class LocalExtractor(Protocol):
    """What the pipeline needs from a local-feature extractor."""

    name: str
    dim: int

    def extract(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """HxW uint8 grey -> (N x 2 float32 points in its pixels, N x dim float32 unit descriptors)."""

    def params(self) -> dict:
        """Everything that changes the descriptors, recorded in the bundle's card."""

    def mirror(self, descriptors: np.ndarray) -> np.ndarray | None:
        """Descriptors the same points would have in the mirror image, or None if unknown."""

    def invert(self, descriptors: np.ndarray) -> np.ndarray | None:
        """Descriptors the same points have in the contrast-inverted image, or None if unknown."""


def _sift_mirror_permutation() -> np.ndarray:
    """Index permutation mapping a SIFT descriptor to that of the horizontally mirrored patch.

    OpenCV lays the 4x4x8 histogram out as (row, column, orientation) in the keypoint's own
    frame, whose x axis follows the keypoint orientation. Mirroring the image reflects that
    frame across its x axis: rows swap (r -> 3 - r) and orientations negate (o -> -o mod 8).
    Measured on scikit-image's astronaut: relative error 0.20 against descriptors extracted from
    the flipped image (interpolation), against 0.88 for the unpermuted descriptor.
    """
    idx = np.empty(128, np.int64)
    for r in range(4):
        for c in range(4):
            for o in range(8):
                idx[(r * 4 + c) * 8 + o] = ((3 - r) * 4 + c) * 8 + (-o) % 8
    return idx


_SIFT_MIRROR = _sift_mirror_permutation()


def _sift_invert_permutation() -> np.ndarray:
    """Index permutation mapping a SIFT descriptor to that of the contrast-inverted patch.

    Inverting the grey levels negates every gradient: DoG extrema stay where they are and each
    keypoint's orientation turns by 180 degrees, so the patch frame is turned half a circle and
    the relative orientations do not change: cells swap (r, c) -> (3 - r, 3 - c), bins stay.
    Why it matters: a light mark on a dark shirt, where the reference is dark on light, has
    the same keypoints with other descriptors. Measured on scikit-image's astronaut: all 500
    keypoints found again at the same positions, descriptors equal to the permuted ones
    (difference 0, against 0.87 for the unpermuted descriptor).
    """
    idx = np.empty(128, np.int64)
    for r in range(4):
        for c in range(4):
            for o in range(8):
                idx[(r * 4 + c) * 8 + o] = ((3 - r) * 4 + (3 - c)) * 8 + o
    return idx


_SIFT_INVERT = _sift_invert_permutation()


class SiftExtractor:
    """OpenCV SIFT, converted to RootSIFT (L1-normalise, square root: Hellinger kernel as L2).

    ``contrast`` is lower than OpenCV's 0.04 because flat vector logos have few, weak corners.
    """

    name = "sift"
    dim = 128

    def __init__(self, n_features: int = 1000, contrast: float = 0.02, edge: float = 10.0):
        self.n_features = int(n_features)
        self.contrast = float(contrast)
        self.edge = float(edge)
        self._sift = cv2.SIFT_create(nfeatures=self.n_features, contrastThreshold=self.contrast,
                                     edgeThreshold=self.edge)

    def params(self) -> dict:
        return {"n_features": self.n_features, "contrast": self.contrast, "edge": self.edge,
                "descriptor": "rootsift", "opencv": cv2.__version__}

    def extract(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise InputError(f"expected an HxW uint8 grey image, got {gray.shape} {gray.dtype}")
        kps, desc = self._sift.detectAndCompute(gray, None)
        if desc is None or not kps:
            return np.zeros((0, 2), np.float32), np.zeros((0, self.dim), np.float32)
        pts = np.float32([k.pt for k in kps])
        return pts, rootsift(desc)

    def mirror(self, descriptors: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(descriptors[:, _SIFT_MIRROR])

    def invert(self, descriptors: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(descriptors[:, _SIFT_INVERT])


def rootsift(desc: np.ndarray) -> np.ndarray:
    """SIFT histograms -> RootSIFT unit vectors (Arandjelovic & Zisserman 2012)."""
    d = desc.astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-7)
    np.sqrt(d, out=d)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-7)
    return d


def to_gray(rgb: np.ndarray, side: int, upscale: bool = False) -> tuple[np.ndarray, float]:
    """Grey image with long side <= ``side`` (== ``side`` with ``upscale``), and the factor from
    its pixels to ``rgb``'s."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"expected HxWx3 RGB, got {rgb.shape}")
    h, w = rgb.shape[:2]
    f = side / max(h, w) if upscale else min(1.0, side / max(h, w))
    if f != 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))),
                         interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 1.0 / f


def describe_rgb(extractor: LocalExtractor, rgb: np.ndarray, original_size: tuple[int, int],
                 side: int, mirror: bool = False, upscale: bool = False, shapes: bool = False,
                 mark: bool = False) -> LocalFeatures:
    """Local features of a decoded image, with points mapped to its ``original_size`` pixels.

    ``rgb`` may be a reduced decode (JPEG draft) of an image stored at ``original_size``.
    ``mirror`` adds the mirror image's features: permuted descriptors where the extractor
    knows how (SIFT), else a second extraction on the flipped image. ``upscale`` brings small
    images up to ``side``: flat vector marks at 300 px give SIFT a handful of keypoints
    (a 240 px swoosh: 3), at 512 px several times more. ``shapes`` adds a listing's colour
    parts, ``mark`` a reference's mark shape (the shape stage, ``vision/shapes.py``).
    """
    gray, to_rgb = to_gray(rgb, side, upscale)
    pts, desc = extractor.extract(gray)
    thumb = thumbnail(gray, LISTING_THUMB_SIDE)
    h, w = rgb.shape[:2]
    gw = gray.shape[1]
    scale = np.float32([to_rgb * original_size[0] / w, to_rgb * original_size[1] / h])
    mpts = mdesc = None
    if mirror:
        mdesc = extractor.mirror(desc) if len(desc) else desc
        if mdesc is not None:
            mpts = pts
        else:
            fpts, mdesc = extractor.extract(np.ascontiguousarray(gray[:, ::-1]))
            mpts = fpts.copy()
            if len(mpts):  # back to the unflipped frame (pixel centres: x -> W - 1 - x)
                mpts[:, 0] = gw - 1 - mpts[:, 0]
        mpts = np.ascontiguousarray(mpts * scale if len(mpts) else mpts.reshape(-1, 2), np.float32)
        mdesc = np.ascontiguousarray(mdesc, np.float32)
    if len(pts):
        pts = pts * scale
    return LocalFeatures(np.ascontiguousarray(pts, np.float32).reshape(-1, 2), np.ascontiguousarray(desc, np.float32),
                         (int(original_size[0]), int(original_size[1])), mpts, mdesc, thumb,
                         listing_shapes(rgb, original_size) if shapes else None,
                         reference_shape(rgb) if mark else None)


@dataclass(frozen=True)
class LocalConfig:
    """The local stage of a bundle, as its model card records it (``local_features``).

    ``extractor`` is ``sift`` or ``xfeat``; ``params`` go to its constructor; ``models`` lists
    any network file the extractor loads, with licence and sha256 (checked on load).
    """

    extractor: str = "sift"
    params: dict = field(default_factory=dict)
    query_side: int = QUERY_SIDE
    reference_side: int = REFERENCE_SIDE
    models: tuple = ()

    @classmethod
    def from_card(cls, data: dict) -> "LocalConfig | None":
        if not data:
            return None
        unknown = set(data) - {"extractor", "params", "query_side", "reference_side", "models"}
        if unknown:
            raise BundleError(f"model card local_features has unknown keys {sorted(unknown)}")
        cfg = cls(extractor=data.get("extractor", "sift"), params=dict(data.get("params", {})),
                  query_side=int(data.get("query_side", QUERY_SIDE)),
                  reference_side=int(data.get("reference_side", REFERENCE_SIDE)),
                  models=tuple(data.get("models", ())))
        if cfg.extractor not in EXTRACTORS:
            raise BundleError(f"unknown local feature extractor {cfg.extractor!r}; known: {sorted(EXTRACTORS)}")
        if not (64 <= cfg.query_side <= 4096 and 64 <= cfg.reference_side <= 4096):
            raise BundleError("local_features sides must be between 64 and 4096 px")
        return cfg

    def spec_sha256(self) -> str:
        """Identity of the descriptors: an index built with another spec is refused."""
        ident = {"extractor": self.extractor, "params": self.params, "reference_side": self.reference_side,
                 "models": [m.get("sha256") for m in self.models]}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def make(self, threads: int = 1) -> LocalExtractor:
        """The extractor this config names (XFeat loads and verifies its ONNX file)."""
        if self.extractor == "xfeat":
            from brandguard.vision.xfeat import XFeatExtractor

            return XFeatExtractor(threads=threads, **self.params)
        return SiftExtractor(**self.params)


EXTRACTORS = ("sift", "xfeat")


def describe_source(extractor: LocalExtractor, source, side: int, limits, mirror: bool = False,  # noqa: ANN001
                    upscale: bool = False, shapes: bool = False, mark: bool = False) -> LocalFeatures:
    """Decode ``source`` (path or bytes) at about ``side`` px and describe it. Raises ImageDecodeError."""
    from brandguard.vision.decode import decode_image

    decoded = decode_image(source, target_side=side, limits=limits)
    return describe_rgb(extractor, decoded.rgb, decoded.display_size, side, mirror=mirror, upscale=upscale,
                        shapes=shapes, mark=mark)


def describe_reference(extractor: LocalExtractor, source, config: "LocalConfig", limits) -> LocalFeatures:  # noqa: ANN001
    """A reference's keypoints (brought to the configured side, small ones enlarged) and its mark shape."""
    return describe_source(extractor, source, config.reference_side, limits, upscale=True, mark=True)
