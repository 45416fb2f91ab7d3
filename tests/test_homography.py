"""A product photographed at an angle: the homography refit and the perspective overlay.

A catalogue shot seen on a table at an angle is a perspective view of it, not a similarity:
the similarity's consensus covers part of the product (on a repeating print, sometimes a
shifted copy of the pattern), and the dense check that lays the shot over the listing along
a parallelogram misplaces its far side. Real SIFT on a real photo, exact kNN, the real fit.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from brandguard.datasets.photos import load_photo, skimage_photos
from brandguard.vision.agreement import agreement, projection, thumbnail
from brandguard.vision.local import SiftExtractor, describe_rgb
from brandguard.vision.local_match import MatchOptions, match_references

SIDE = 512


def _photo(i: int) -> np.ndarray:
    photos = skimage_photos()
    if not photos:
        pytest.skip("scikit-image's bundled photos are not installed")
    return load_photo(photos[i % len(photos)].path, max_side=SIDE)


def _at_an_angle(ref: np.ndarray, pull: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """``ref`` on a grey table, its top edge pulled in by ``pull`` of the width and the right
    side shortened (a photo taken from above and to the left); the true corners."""
    h, w = ref.shape[:2]
    W, H = int(w * 1.2), int(h * 1.2)
    ox, oy = 0.1 * w, 0.1 * h
    true = np.float32([[ox + pull * w, oy], [ox + w - pull * w * 0.5, oy + pull * h * 0.3],
                       [ox + w, oy + h], [ox, oy + h - pull * h * 0.2]])
    hm = cv2.getPerspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]), true)
    table = np.full((H, W, 3), 128, np.uint8)
    view = cv2.warpPerspective(ref, hm, (W, H), dst=table, borderMode=cv2.BORDER_TRANSPARENT)
    return view, true


def _matches(ref: np.ndarray, other: np.ndarray, listing: np.ndarray, opts: MatchOptions):
    """match_references for ``listing`` against two references (``ref`` = row 0, brand 0;
    ``other`` = row 1, brand 1), with an exact 5-NN search."""
    sift = SiftExtractor()
    refs = [describe_rgb(sift, im, im.shape[1::-1], SIDE, upscale=True) for im in (ref, other)]
    q = describe_rgb(sift, listing, listing.shape[1::-1], SIDE, mirror=True)
    d = np.concatenate([r.descriptors for r in refs])
    pts = np.concatenate([r.points for r in refs])
    rows = np.concatenate([np.full(len(r.descriptors), i) for i, r in enumerate(refs)])
    qd, qp, qm = q.query_rows()
    dist = ((qd ** 2).sum(1)[:, None] - 2 * qd @ d.T + (d ** 2).sum(1)[None]).astype(np.float32)
    nn = np.argsort(dist, axis=1)[:, :5]
    out = match_references(qp, qm, q.image_size, np.take_along_axis(dist, nn, 1), rows[nn], pts[nn],
                           rows[nn].astype(np.int64), {i: r.image_size for i, r in enumerate(refs)},
                           {i: len(r.descriptors) for i, r in enumerate(refs)}, opts)
    return [m for m in out if m.ref_row == 0], refs[0].image_size


def test_homography_refit_finds_the_angled_outline_and_more_inliers():
    ref, other = _photo(0), _photo(3)
    listing, true = _at_an_angle(ref)
    sim, size = _matches(ref, other, listing, MatchOptions(homography_from=0))
    hom, _ = _matches(ref, other, listing, MatchOptions(homography_from=12))
    assert sim and hom
    assert size == (ref.shape[1], ref.shape[0])  # outlines: reference corners in listing pixels
    err_sim = np.abs(np.array(sim[0].outline) - true).max()
    err_hom = np.abs(np.array(hom[0].outline) - true).max()
    assert hom[0].inliers > sim[0].inliers, (hom[0].inliers, sim[0].inliers)
    assert err_hom < 0.03 * listing.shape[1] < err_sim, (err_hom, err_sim)


def test_refit_is_off_below_its_inlier_floor_and_for_a_similarity_view():
    """A mark seen square-on (a similarity) keeps a parallelogram outline: the refit is only
    taken when it explains more points and draws a plausible quadrilateral."""
    ref, other = _photo(0), _photo(3)
    h, w = ref.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 15, 0.8)
    listing = cv2.warpAffine(ref, m, (w, h), borderValue=(128, 128, 128))
    (hom, *_), _ = _matches(ref, other, listing, MatchOptions(homography_from=12))
    o = np.array(hom.outline)
    assert np.allclose(o[0] + o[2], o[1] + o[3], atol=0.02 * w)  # still (nearly) a parallelogram
    off, _ = _matches(ref, other, listing, MatchOptions(homography_from=10 ** 6))
    assert off[0].inliers <= hom.inliers


def test_perspective_overlay_agrees_where_the_affine_one_does_not():
    ref = _photo(0)
    listing, true = _at_an_angle(ref, pull=0.25)
    lg = cv2.cvtColor(listing, cv2.COLOR_RGB2GRAY)
    rg = thumbnail(cv2.cvtColor(ref, cv2.COLOR_RGB2GRAY), 256)
    size = (ref.shape[1], ref.shape[0])
    lt = thumbnail(lg, 128)
    good = agreement(lt, (listing.shape[1], listing.shape[0]), rg, size, [tuple(p) for p in true])
    # the same outline cut to three corners: the affine map through them
    m = projection([tuple(p) for p in true[:3]], size)
    assert np.allclose(m[2], [0, 0, 1])
    bad = agreement(lt, (listing.shape[1], listing.shape[0]), rg, size, [tuple(p) for p in true[:3]])
    assert good is not None and bad is not None
    assert good.ncc > 0.9 and good.ncc > bad.ncc + 0.1, (good.ncc, bad.ncc)


def test_projection_of_a_parallelogram_is_the_affine_map():
    size = (200, 100)
    m = cv2.getRotationMatrix2D((0, 0), 30, 0.5)
    outline = np.float32([[0, 0], [200, 0], [200, 100], [0, 100]]) @ m[:, :2].T + m[:, 2] + 50
    p = projection([tuple(x) for x in outline], size)
    assert np.allclose(p[2], [0, 0, 1], atol=1e-9)
    assert np.allclose(p[:2, :2], m[:, :2], atol=1e-6)


def test_folded_outline_falls_back_to_affine():
    outline = [(0.0, 0.0), (100.0, 100.0), (100.0, 0.0), (0.0, 100.0)]  # a bow tie
    p = projection(outline, (100, 100))
    assert np.allclose(p[2], [0, 0, 1])


def test_match_options_default_refits():
    assert MatchOptions().homography_from > 0
    assert dataclasses.replace(MatchOptions(), homography_from=0).homography_from == 0
