"""The local-feature stage end to end: real marks (simple-icons), real photos (scikit-image),
the shipped model, SIFT/RootSIFT, FAISS descriptor index, RANSAC, fused verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from brandguard.cli.main import EXIT_OK, main
from brandguard.datasets.logos import get_logo_source, render_logo
from brandguard.datasets.photos import load_photo, skimage_photos
from brandguard.vision.local import SiftExtractor, describe_rgb
from brandguard.engine.pipeline import Pipeline
from brandguard.engine.routing import DepthOptions, ListingHints
from tests_helpers import save

BRANDS = ("cocacola", "apple", "starbucks", "ferrari")


def _mark_on_white(slug: str, height: int = 240) -> np.ndarray:
    rgba = render_logo(get_logo_source(slug), height)
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = (rgba[..., :3] * a + 255 * (1 - a)).astype(np.uint8)
    return cv2.copyMakeBorder(rgb, 24, 24, 24, 24, cv2.BORDER_CONSTANT, value=(255, 255, 255))


def _photo(i: int, side: int = 640) -> np.ndarray:
    photos = skimage_photos()
    if not photos:
        pytest.skip("scikit-image's bundled photos are not installed")
    return load_photo(photos[i % len(photos)].path, max_side=side)


def paste(photo: np.ndarray, mark: np.ndarray, width_share: float, angle: float, centre: tuple[float, float],
          mirror: bool = False, plate: bool = False) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Paste ``mark`` (white = transparent, unless ``plate``: printed on its white tag) scaled to
    ``width_share`` of the photo, rotated by ``angle`` degrees; returns the photo and the true box
    of the mark's outline."""
    h, w = photo.shape[:2]
    if mirror:
        mark = mark[:, ::-1]
    s = width_share * w / mark.shape[1]
    mh, mw = mark.shape[:2]
    m = cv2.getRotationMatrix2D((mw / 2, mh / 2), angle, s)
    m[:, 2] += np.array(centre) - np.array([mw / 2, mh / 2])
    warped = cv2.warpAffine(mark, m, (w, h), flags=cv2.INTER_AREA, borderValue=(255, 255, 255))
    mask = cv2.warpAffine(np.full((mh, mw), 255, np.uint8), m, (w, h), flags=cv2.INTER_NEAREST)
    ink = ((warped.min(axis=2) < 245) | plate) & (mask > 0)
    out = photo.copy()
    out[ink] = warped[ink]
    corners = np.float32([[0, 0], [mw, 0], [mw, mh], [0, mh]]) @ m[:, :2].T + m[:, 2]
    return out, (*corners.min(axis=0), *corners.max(axis=0))


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.fixture(scope="module")
def local_bundle(tmp_path_factory) -> Path:
    """The shipped model indexed over four real brands' marks (global + descriptor index)."""
    root = tmp_path_factory.mktemp("local")
    for b in BRANDS:
        save(_mark_on_white(b), root / "refs" / b / "logo.png")
    out = root / "bundle"
    assert main(["index", str(root / "refs"), "--out", str(out)]) == EXIT_OK
    return out


def _jpeg(img: np.ndarray, path: Path) -> Path:
    return save(img, path, quality=88)


def test_index_keeps_descriptors_and_card_records_extractor(local_bundle):
    manifest = json.loads((local_bundle / "index.json").read_text())
    assert manifest["local"]["extractor"] == "sift" and manifest["local"]["count"] > 50
    assert manifest["local"]["references"] == len(BRANDS)
    pipe = Pipeline.from_bundle(local_bundle, require_index=True)
    assert pipe.card.local_features["extractor"] == "sift"
    assert len(pipe.index.local) == manifest["local"]["count"]


def test_small_rotated_mark_in_photo_is_found_with_its_box(local_bundle, tmp_path):
    pipe = Pipeline.from_bundle(local_bundle, require_index=True, depth="thorough")
    photo = _photo(0)
    listing, truth = paste(photo, _mark_on_white("starbucks"), 0.15, 20, (0.6 * photo.shape[1], 0.45 * photo.shape[0]))
    (v,) = pipe.check([str(_jpeg(listing, tmp_path / "l.jpg"))])
    assert v.verdict in ("copy", "knockoff") and v.brand == "starbucks", v.evidence
    assert v.evidence["stage"] in ("local", "global+local")
    assert iou(v.evidence["match_box"], truth) >= 0.5, (v.evidence["match_box"], truth)
    assert v.evidence["local"]["inliers"] >= 8 and not v.evidence["local"]["mirrored"]
    assert "decided_by" in v.evidence and v.evidence["thresholds"]["flag_probability"] > 0


def test_box_is_in_original_pixels_after_reduced_decode(local_bundle, tmp_path):
    """A 2,000 px listing is decoded reduced; the evidence box must still be in its own pixels."""
    pipe = Pipeline.from_bundle(local_bundle, require_index=True, depth="thorough")
    photo = cv2.resize(_photo(1), (2000, 1500), interpolation=cv2.INTER_CUBIC)
    listing, truth = paste(photo, _mark_on_white("starbucks"), 0.4, 0, (900, 700))
    (v,) = pipe.check([str(_jpeg(listing, tmp_path / "big.jpg"))])
    assert v.brand == "starbucks"
    assert v.evidence["image_size"] == [2000, 1500]
    assert iou(v.evidence["match_box"], truth) >= 0.5, (v.evidence["match_box"], truth)


def test_mirrored_mark_is_a_knockoff(local_bundle, tmp_path):
    pipe = Pipeline.from_bundle(local_bundle, require_index=True, depth="thorough")
    photo = _photo(2)
    # a red script in grey is faint over a dark coat: printed on a white tag, as knockoff tags are
    listing, _ = paste(photo, _mark_on_white("cocacola"), 0.5, 0, (photo.shape[1] / 2, photo.shape[0] / 2),
                       mirror=True, plate=True)
    (v,) = pipe.check([str(_jpeg(listing, tmp_path / "m.jpg"))])
    assert v.verdict == "knockoff" and v.brand == "cocacola", v.evidence
    assert v.evidence["local"]["mirrored"] is True


def test_clean_photos_stay_clear(local_bundle, tmp_path):
    pipe = Pipeline.from_bundle(local_bundle, require_index=True, depth="thorough")
    paths = [str(_jpeg(_photo(i), tmp_path / f"c{i}.jpg")) for i in range(4)]
    verdicts = pipe.check(paths)
    assert [v.verdict for v in verdicts] == ["clear"] * 4, [v.evidence.get("decided_by") for v in verdicts]


def test_whole_reference_is_a_copy(local_bundle, tmp_path):
    pipe = Pipeline.from_bundle(local_bundle, require_index=True, depth="thorough")
    ref = _mark_on_white("apple")
    crop = cv2.resize(ref[10:-5, 8:], None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    (v,) = pipe.check([str(_jpeg(crop, tmp_path / "copy.jpg"))])
    assert v.verdict == "copy" and v.brand == "apple", v.evidence


def test_auto_routes_by_title_and_brand_hint(local_bundle, tmp_path):
    pipe = Pipeline.from_bundle(local_bundle, require_index=True, depth=DepthOptions("auto"))
    photo = _photo(3)
    listing, _ = paste(photo, _mark_on_white("starbucks"), 0.3, 10, (photo.shape[1] / 2, photo.shape[0] / 2))
    p = str(_jpeg(listing, tmp_path / "a.jpg"))
    items = [pipe.prepare(p) for _ in range(3)]
    hints = [ListingHints(title="Starbucks tumbler, new"), ListingHints(brand_hint="STARBUCKS"), None]
    verdicts = pipe.judge(items, [p, p, p], hints)
    assert verdicts[0].evidence["depth"]["why"] == "title names a brand"
    assert verdicts[1].evidence["depth"]["why"] == "brand hint"
    assert verdicts[0].brand == verdicts[1].brand == "starbucks"
    assert pipe.depth_counts["title names a brand"] == 1 and pipe.depth_counts["brand hint"] == 1
    # fast depth never runs the local stage
    fast = pipe.judge(items, [p, p, p], hints, DepthOptions("fast"))
    assert all(not v.evidence["depth"]["local"] for v in fast)


def test_auto_glance_routes_a_small_mark_the_global_score_misses(local_bundle, tmp_path):
    """Auto depth's keypoint glance: a mark at 15% of a photo, rotated, barely moves the global
    embedding (below the gate), yet the glance fits it and sends the listing deep, where it is
    found; clean photos are glanced at too and stay clear, whether a chance fit (5 inliers on one
    of them: a four-brand index gives the cross-brand ratio test little to compare) sends them deep
    or not."""
    import dataclasses

    pipe = Pipeline.from_bundle(local_bundle, require_index=True, depth=DepthOptions("auto"))
    gate = pipe.calibration.deep.auto_gate
    photo = _photo(0)
    listing, truth = paste(photo, _mark_on_white("starbucks"), 0.15, 20, (0.6 * photo.shape[1], 0.45 * photo.shape[0]))
    p = str(_jpeg(listing, tmp_path / "g.jpg"))
    clean = [str(_jpeg(_photo(i), tmp_path / f"gc{i}.jpg")) for i in range(4)]
    items = [pipe.prepare(x) for x in [p, *clean]]
    assert all(it.glance is not None and len(it.glance) > 0 for it in items)
    verdicts = pipe.judge(items, [p, *clean])
    assert verdicts[0].evidence["depth"]["why"] == "keypoint glance", verdicts[0].evidence["depth"]
    assert verdicts[0].verdict in ("copy", "knockoff") and verdicts[0].brand == "starbucks", verdicts[0].evidence
    assert iou(verdicts[0].evidence["match_box"], truth) >= 0.5
    assert [v.verdict for v in verdicts[1:]] == ["clear"] * 4, [v.evidence["depth"] for v in verdicts]
    routed = sum(v.evidence["depth"]["why"] == "keypoint glance" for v in verdicts)
    assert pipe.depth_counts["glanced"] == 5 and 1 <= pipe.depth_counts["keypoint glance"] == routed <= 2
    # The global stage alone would not have sent it: its best global score is under the gate.
    (hits, _ev), = pipe.search_merged([items[0]], pipe.embed_crops(items[0].crops))
    assert hits[0].score < gate
    # Keypoints taken here from the bytes route it the same way as those taken in the decode.
    bare = [dataclasses.replace(it, glance=None) for it in items]
    again = pipe.judge(bare, [p, *clean])
    assert [v.evidence["depth"]["why"] for v in again] == [v.evidence["depth"]["why"] for v in verdicts]
    # Fast depth takes no glance; thorough describes the full keypoints instead.
    assert Pipeline.from_bundle(local_bundle, require_index=True, depth="fast").prepare(p).glance is None
    assert pipe.prepare(p, local=True, depth=DepthOptions("thorough")).glance is None


def test_sift_mirror_permutation_matches_flipped_extraction():
    ext = SiftExtractor()
    img = _photo(0, side=384)
    f = describe_rgb(ext, img, (img.shape[1], img.shape[0]), 384, mirror=True)
    flipped = np.ascontiguousarray(img[:, ::-1])
    g = describe_rgb(ext, flipped, (img.shape[1], img.shape[0]), 384)
    # mirror descriptors of f should find their counterparts in g (same point, x mirrored)
    d = ((f.mirror_descriptors[:, None, :] - g.descriptors[None, :, :]) ** 2).sum(-1)
    nn = d.argmin(axis=1)
    w = img.shape[1]
    close = np.hypot(w - 1 - f.points[:, 0] - g.points[nn, 0], f.points[:, 1] - g.points[nn, 1]) < 2.0
    assert close.mean() > 0.6, close.mean()


def test_sift_invert_permutation_matches_inverted_extraction():
    """Inverting the grey levels keeps SIFT's keypoints and turns each patch half a circle: the
    inverted image's descriptors are a permutation of the original's (exactly, up to rounding)."""
    ext = SiftExtractor()
    gray = cv2.cvtColor(_photo(0, side=384), cv2.COLOR_RGB2GRAY)
    pts, desc = ext.extract(gray)
    ipts, idesc = ext.extract(255 - gray)
    d = np.abs(ipts[None, :, :] - pts[:, None, :]).sum(-1)
    nn = d.argmin(axis=1)
    same = d[np.arange(len(pts)), nn] < 0.5
    assert same.mean() > 0.95, same.mean()
    err_perm = np.linalg.norm(ext.invert(desc)[same] - idesc[nn[same]], axis=1)
    err_plain = np.linalg.norm(desc[same] - idesc[nn[same]], axis=1)
    assert np.median(err_perm) < 0.05 and np.median(err_plain) > 0.5, (np.median(err_perm), np.median(err_plain))


def test_light_mark_on_dark_photo_matches_dark_on_light_reference(local_bundle, tmp_path):
    """A contrast-inverted copy (a white mark on black, where the brand registered black on
    white) is found by its keypoints' inverted twins; without them SIFT finds next to nothing."""
    pipe = Pipeline.from_bundle(local_bundle, require_index=True, depth="thorough")
    ref = _mark_on_white("starbucks")
    inverted = 255 - cv2.resize(ref, None, fx=0.9, fy=0.9, interpolation=cv2.INTER_AREA)
    path = str(_jpeg(inverted, tmp_path / "inv.jpg"))
    (v,) = pipe.check([path])
    assert v.verdict in ("copy", "knockoff") and v.brand == "starbucks", v.evidence
    assert v.evidence["local"]["inliers"] >= 15 and v.evidence["local"]["inverted"] is True, v.evidence["local"]
    assert v.evidence["agreement"]["inverted"] is True  # the pixels agree as the reference's negative
    with_twins = v.evidence["local"]["inliers"]
    from dataclasses import replace

    pipe.match_options = replace(pipe.match_options, inverted=False)
    feats = {0: describe_rgb(pipe.extractor, inverted, inverted.shape[1::-1],
                             pipe.local_config.query_side, mirror=True)}
    plain = pipe.match_local(feats)[0]
    best = max((m.inliers for m in plain), default=0)
    assert best < with_twins / 3, (best, with_twins)
