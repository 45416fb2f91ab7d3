"""Dense agreement and the source rule: which of a brand's references a listing was made from.

A copy of a brand's product photo matches the brand's bare logo as well (the logo is printed on
the product); the listing's pixels around the mark say which one it copies."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from brandguard.cli.main import EXIT_OK, main
from brandguard.engine.fusion import FEATURES, DeepCalibration, PairEvidence, prefer_sources
from brandguard.engine.candidates import ReferenceThumbs
from brandguard.engine.pipeline import Pipeline
from brandguard.errors import BundleError
from brandguard.vision.agreement import LISTING_THUMB_SIDE, REFERENCE_THUMB_SIDE, agreement, thumbnail
from test_local_stage import _mark_on_white, _photo
from tests_helpers import save


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _product(mark: np.ndarray, photo: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The mark printed on a textured product photo; returns the image and the mark's box."""
    prod = cv2.resize(photo, (480, 480), interpolation=cv2.INTER_AREA)
    m = cv2.resize(mark, (200, round(200 * mark.shape[0] / mark.shape[1])), interpolation=cv2.INTER_AREA)
    y0, x0 = 140, 140
    prod[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
    return prod, (x0, y0, x0 + m.shape[1], y0 + m.shape[0])


def _outline(m: np.ndarray, w: int, h: int) -> list[tuple[float, float]]:
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]]) @ m[:, :2].T + m[:, 2]
    return [tuple(map(float, c)) for c in corners]


@pytest.fixture(scope="module")
def scene():
    """A product photo, its logo, and a listing that copies the product (rotated, scaled)."""
    mark = _mark_on_white("starbucks", 200)
    prod, (x0, y0, x1, y1) = _product(mark, _photo(1))
    logo = np.ascontiguousarray(prod[y0:y1, x0:x1])
    rot = cv2.getRotationMatrix2D((240, 240), 12, 0.8)
    rot[:, 2] += (40, 30)
    listing = cv2.warpAffine(prod, rot, (560, 540), borderValue=(250, 250, 250))
    logo_to_listing = rot.copy()
    logo_to_listing[:, 2] += rot[:, :2] @ np.float32([x0, y0])
    return dict(prod=prod, logo=logo, listing=listing, rot=rot, logo_rot=logo_to_listing)


def _agreements(scene):
    lst = thumbnail(_gray(scene["listing"]), LISTING_THUMB_SIDE)
    size = scene["listing"].shape[1::-1]
    prod, logo = scene["prod"], scene["logo"]
    a_prod = agreement(lst, size, thumbnail(_gray(prod), REFERENCE_THUMB_SIDE), prod.shape[1::-1],
                       _outline(scene["rot"], *prod.shape[1::-1]))
    a_logo = agreement(lst, size, thumbnail(_gray(logo), REFERENCE_THUMB_SIDE), logo.shape[1::-1],
                       _outline(scene["logo_rot"], *logo.shape[1::-1]))
    return a_prod, a_logo


def test_agreement_of_the_copied_image_and_of_its_logo(scene):
    a_prod, a_logo = _agreements(scene)
    assert a_prod.ncc > 0.9 and a_logo.ncc > 0.9  # both agree where they lie
    assert a_prod.agree_share > 3 * a_logo.agree_share  # the product explains far more of the listing
    assert a_prod.beyond(a_logo) > 0.1  # ... outside the logo's outline
    assert a_logo.beyond(a_prod) == 0.0  # the logo explains nothing the product does not


def test_a_negative_agrees_only_when_the_match_says_negative(scene):
    """A listing that is the reference's negative (a light mark on a dark shirt) agrees as much as
    the straight copy when the match was made by inverted descriptors; a straight match whose
    pixels are the negative is contradicted by them."""
    lst = thumbnail(_gray(255 - scene["listing"]), LISTING_THUMB_SIDE)
    prod = scene["prod"]
    args = (lst, scene["listing"].shape[1::-1], thumbnail(_gray(prod), REFERENCE_THUMB_SIDE), prod.shape[1::-1],
            _outline(scene["rot"], *prod.shape[1::-1]))
    straight, _ = _agreements(scene)
    neg, plain = agreement(*args, negative=True), agreement(*args)
    assert neg.inverted and not plain.inverted and not straight.inverted
    assert neg.ncc > 0.9 and abs(neg.ncc - straight.ncc) < 0.02 and plain.ncc < -0.9
    assert neg.agree_share > 0.8 * straight.agree_share and plain.agree_share == 0.0
    assert neg.to_dict()["inverted"] is True


def test_a_wrong_placement_does_not_agree(scene):
    lst = thumbnail(_gray(scene["listing"]), LISTING_THUMB_SIDE)
    prod = scene["prod"]
    shifted = scene["rot"].copy()
    shifted[:, 2] += (90, -60)
    a = agreement(lst, scene["listing"].shape[1::-1], thumbnail(_gray(prod), REFERENCE_THUMB_SIDE),
                  prod.shape[1::-1], _outline(shifted, *prod.shape[1::-1]))
    right, _ = _agreements(scene)
    assert a is not None and a.ncc < 0.5 < right.ncc
    assert a.agree_share < right.agree_share / 3


def test_outline_outside_the_listing_gives_no_agreement(scene):
    lst = thumbnail(_gray(scene["listing"]), LISTING_THUMB_SIDE)
    far = [(5000.0, 5000.0), (5100.0, 5000.0), (5100.0, 5100.0), (5000.0, 5100.0)]
    assert agreement(lst, scene["listing"].shape[1::-1], lst, (100, 100), far) is None


def test_prefer_sources_gives_the_brand_first_place_to_the_copied_image(scene):
    a_prod, a_logo = _agreements(scene)
    probs = np.array([0.95, 0.90, 0.97])  # logo first within brand "b"; "c" is another brand
    out, swaps = prefer_sources(["b", "b", "c"], probs, [a_logo, a_prod, a_prod], 0.6, 0.06)
    assert out[1] == 0.95 and out[0] < out[1]  # the product took the logo's place ...
    assert out[2] == 0.97  # ... other brands untouched, the listing's best score unchanged
    assert list(swaps) == [1] and swaps[1][0] == 0 and swaps[1][1] > 0.06
    # not when the product's agreement is below the NCC floor, or the share beyond is too small
    assert not prefer_sources(["b", "b"], probs[:2], [a_logo, a_prod], 0.999, 0.06)[1]
    assert not prefer_sources(["b", "b"], probs[:2], [a_logo, a_prod], 0.6, 0.9)[1]
    # the first place already right: nothing to do
    assert not prefer_sources(["b", "b"], np.array([0.8, 0.9]), [a_logo, a_prod], 0.6, 0.06)[1]
    # the brand's other references fall behind its first by the sibling factor; other brands do not
    out, _ = prefer_sources(["b", "b", "c"], probs, [a_logo, a_prod, a_prod], 0.6, 0.06, sibling_factor=0.5)
    assert out[1] == 0.95 and out[0] == pytest.approx((0.90 - 1e-6) * 0.5) and out[2] == 0.97
    out, _ = prefer_sources(["b", "b"], np.array([0.8, 0.9]), [a_logo, a_prod], 0.6, 0.06, sibling_factor=0.5)
    assert list(out) == [0.4, 0.9]


def test_calibration_fitted_before_the_dense_features_still_loads():
    old = FEATURES[:17]
    d = {"weights": [0.5] + [0.0] * 16, "bias": -1.0, "mean": [0.0] * 17, "scale": [1.0] * 17,
         "features": list(old), "flag": 0.5}
    cal = DeepCalibration.from_dict(d)
    e = PairEvidence(0.8, False, dense=True, ncc=0.9, agree_share=0.5)
    assert cal.probability([e])[0] == pytest.approx(1 / (1 + np.exp(-(0.5 * 0.8 - 1.0))))
    with pytest.raises(BundleError, match="features"):
        DeepCalibration.from_dict({**d, "features": list(old[:16]) + ["no_such_feature"]})
    with pytest.raises(BundleError, match="one weight"):
        DeepCalibration.from_dict({**d, "weights": [0.5] * 16})


@pytest.fixture(scope="module")
def two_reference_bundle(tmp_path_factory, scene) -> Path:
    """One brand registered with its logo and its product photo, plus two other brands."""
    root = tmp_path_factory.mktemp("sources")
    save(scene["logo"], root / "refs" / "starbucks" / "logo.png")
    save(scene["prod"], root / "refs" / "starbucks" / "product.png")
    for b in ("cocacola", "ferrari"):
        save(_mark_on_white(b), root / "refs" / b / "logo.png")
    out = root / "bundle"
    assert main(["index", str(root / "refs"), "--out", str(out)]) == EXIT_OK
    return out


def test_thorough_names_the_product_photo_a_listing_copies(two_reference_bundle, scene, tmp_path):
    pipe = Pipeline.from_bundle(two_reference_bundle, depth="thorough")
    listing = save(scene["listing"], tmp_path / "copy.jpg", quality=80)
    v = pipe.check([str(listing)])[0]
    assert v.verdict == "copy" and v.brand == "starbucks"
    assert v.top[0].reference_id == "starbucks/product"
    assert v.evidence["agreement"]["ncc"] > 0.8
    # the brand's other reference falls behind the one the listing was made from
    assert v.top[1].reference_id == "starbucks/logo" and v.top[1].score < v.top[0].score
    # without the references' pixels (no dense agreement) the listing is still the brand's
    pipe.reference_thumbs = ReferenceThumbs(lambda _rid: None, pipe.limits)
    blind = pipe.check([str(listing)])[0]
    assert blind.verdict == "copy" and blind.brand == "starbucks" and "agreement" not in blind.evidence


def test_reference_thumbnails_are_cached_per_file_and_bounded(tmp_path, scene):
    a = save(scene["logo"], tmp_path / "a.png")
    b = save(scene["prod"], tmp_path / "b.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    where = {"r1": a, "r2": b, "r3": bad}
    thumbs = ReferenceThumbs(lambda rid: where.get(rid), Pipeline.from_bundle().limits, capacity=2)
    t1 = thumbs.get("r1")
    assert t1 is not None and max(t1.shape) <= REFERENCE_THUMB_SIDE and thumbs.get("r1") is t1
    assert thumbs.get("r3") is None and thumbs.get("missing") is None  # undecodable / no image: no agreement
    where["r1"] = b  # the same id registered again with another image
    assert thumbs.get("r1").shape == thumbs.get("r2").shape != t1.shape
    assert len(thumbs) <= 2


def test_candidates_without_a_geometric_match_use_the_global_only_model():
    n = len(FEATURES)
    base = {"weights": [0.0] * n, "bias": 2.0, "mean": [0.0] * n, "scale": [1.0] * n, "flag": 0.5}
    cal = DeepCalibration.from_dict({**base, "global_only": {"weights": [0.0] * n, "bias": -2.0, "mean": [0.0] * n,
                                                             "scale": [1.0] * n}})
    p = cal.probability([PairEvidence(0.5, False, inliers=12), PairEvidence(0.5, False)])
    assert p[0] == pytest.approx(1 / (1 + np.exp(-2.0))) and p[1] == pytest.approx(1 / (1 + np.exp(2.0)))
    assert DeepCalibration.from_dict(cal.to_dict()) == cal  # round trip through calibration.json
    with pytest.raises(BundleError, match="global_only"):
        DeepCalibration.from_dict({**base, "global_only": {"weights": [0.0], "bias": 0.0, "mean": [0.0], "scale": [1.0]}})


def test_deep_confidence_is_the_margin_over_the_flag_threshold():
    n = len(FEATURES)
    cal = DeepCalibration((0.0,) * n, 0.0, (0.0,) * n, (1.0,) * n, flag=0.14)
    assert cal.confidence(0.14, True) == pytest.approx(0.5) and cal.confidence(0.14, False) == pytest.approx(0.5)
    assert cal.confidence(0.9, True) > 0.95 and cal.confidence(0.01, False) > 0.9
    assert cal.confidence(0.2, True) < cal.confidence(0.5, True) < cal.confidence(0.99, True)
    assert cal.confidence(0.12, False) < 0.6  # a clear just under the threshold is a near miss
