"""Augmentations and logo rendering: valid images, stable family names, aspect ratio, speed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from brandguard.datasets.augment.families import (
    alter_mark,
    catalogue_shot,
    copy_light,
    copy_strong,
    distractor_photo,
    distractor_unregistered,
    knockoff,
    logo_in_photo,
    product_photo,
)
from brandguard.evaluation.families import FAMILIES
from brandguard.datasets.augment.ops import compose, ensure_rgb, measure_cost
from brandguard.datasets.augment.views import reference_views, training_view
from brandguard.datasets.logos import (
    get_logo_source,
    license_allows_modification,
    load_logo_sources,
    render_logo,
    split_of,
)
from brandguard.datasets.photos import PhotoPool, procedural_background
from brandguard.errors import InputError


@pytest.fixture(scope="module")
def mark() -> np.ndarray:
    return render_logo(get_logo_source("nike"), 96)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return procedural_background(np.random.default_rng(3), 240, 200)


def _valid(img: np.ndarray, min_side: int = 16, max_side: int = 2048) -> None:
    assert isinstance(img, np.ndarray)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert min_side <= min(img.shape[:2]) and max(img.shape[:2]) <= max_side
    assert img.std() > 1.0  # not a blank frame


def test_family_names_are_stable() -> None:
    assert FAMILIES == (
        "copy_light", "copy_strong", "logo_in_photo", "knockoff", "product_photo", "distractor_photo",
        "distractor_unregistered",
    )


def test_render_keeps_aspect_ratio_and_height() -> None:
    src = get_logo_source("nike")  # a wide swoosh
    small, big = render_logo(src, 40), render_logo(src, 160)
    assert small.shape[0] == 40 and big.shape[0] == 160 and small.shape[2] == 4
    ar_small, ar_big = small.shape[1] / 40, big.shape[1] / 160
    assert ar_big > 2.0  # the swoosh is wide, not squeezed into a square
    assert abs(ar_small - ar_big) / ar_big < 0.08
    # cropped to the mark: every border row/column touches the mark
    a = big[..., 3] > 8
    assert a[0].any() and a[-1].any() and a[:, 0].any() and a[:, -1].any()
    # brand colour applied, recolouring honoured
    assert tuple(big[a][0, :3]) == src.rgb
    assert tuple(render_logo(src, 40, color="#FF0000")[..., :3][small[..., 3] > 8][0]) == (255, 0, 0)


def test_render_rejects_bad_input() -> None:
    with pytest.raises(InputError):
        render_logo(get_logo_source("nike"), 0)
    with pytest.raises(InputError):
        render_logo(get_logo_source("nike"), 32, color="red")
    with pytest.raises(InputError):
        get_logo_source("definitely-not-a-brand")


def test_licences_recorded_and_no_derivatives_excluded() -> None:
    sources = load_logo_sources()
    assert len(sources) > 3000
    assert all(s.license for s in sources)
    assert all(license_allows_modification(s.license) for s in sources)
    assert not license_allows_modification("CC-BY-NC-ND-4.0")
    assert license_allows_modification("CC-BY-SA-4.0")
    assert {s.slug for s in sources}.isdisjoint({"jpeg", "slint"})  # CC-BY-ND-4.0 icons


def test_split_is_deterministic_and_roughly_80_10_10() -> None:
    slugs = [s.slug for s in load_logo_sources()]
    splits = [split_of(s, 0) for s in slugs]
    assert splits == [split_of(s, 0) for s in slugs]
    frac = {k: splits.count(k) / len(splits) for k in ("train", "val", "test")}
    assert 0.75 < frac["train"] < 0.85 and 0.07 < frac["val"] < 0.13 and 0.07 < frac["test"] < 0.13
    assert [split_of(s, 1) for s in slugs] != splits  # the seed changes the split


def test_every_family_returns_valid_rgb(mark: np.ndarray, photo: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    refs = reference_views(rng, mark, size=192)
    assert set(refs) == {"logo_clean", "logo_product"}
    for img in refs.values():
        _valid(img)
    for _ in range(15):  # several draws so most random branches run
        _valid(copy_light(rng, refs["logo_clean"], max_side=256))
        _valid(copy_strong(rng, refs["logo_product"], [photo], max_side=256))
        _valid(logo_in_photo(rng, mark, photo, max_side=256))
        _valid(knockoff(rng, mark, mark[:, ::-1].copy(), photo, max_side=256))
        _valid(distractor_photo(rng, photo, max_side=256))
        _valid(distractor_unregistered(rng, mark, photo, max_side=256))
        out = training_view(rng, refs["logo_clean"], [photo], [photo], out_size=128)
        assert out.shape == (128, 128, 3) and out.dtype == np.uint8


def test_same_seed_same_output(mark: np.ndarray, photo: np.ndarray) -> None:
    a = copy_strong(np.random.default_rng(5), photo, [photo])
    b = copy_strong(np.random.default_rng(5), photo, [photo])
    assert np.array_equal(a, b)
    log: list[str] = []
    knockoff(np.random.default_rng(5), mark, None, photo, log)
    assert log and log[-1].startswith("jpeg")


def test_knockoff_alters_the_mark(mark: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    other = render_logo(get_logo_source("adidas"), 96)
    changed = 0
    for _ in range(30):
        alt = alter_mark(rng, mark, other)
        same = alt.shape == mark.shape and np.array_equal(alt, mark)
        changed += not same
    assert changed == 30


def test_compose_clips_and_blends(photo: np.ndarray, mark: np.ndarray) -> None:
    out = compose(mark, photo, (-20, -20, 80, 40))  # partly outside the frame
    assert out.shape == photo.shape and not np.array_equal(out, photo)
    assert np.array_equal(out[100:, 100:], photo[100:, 100:])  # untouched far away
    with pytest.raises(InputError):
        compose(mark, photo, (0, 0, 0, 10))
    with pytest.raises(InputError):
        ensure_rgb(np.zeros((4, 4, 3), np.float32))


def test_training_view_accepts_pool_and_rgba(mark: np.ndarray) -> None:
    pool = PhotoPool([])  # procedural only
    rng = np.random.default_rng(2)
    for _ in range(8):
        _valid(training_view(rng, mark, pool, ()), min_side=8)


def test_augmentations_are_cheap(mark: np.ndarray, photo: np.ndarray) -> None:
    """A training view costs a few JPEG decodes, not a model step: measured as a ratio to
    decoding a 512 px JPEG in the same process (about 8x here), so a busy machine slows both."""
    ref = reference_views(np.random.default_rng(0), mark, size=256)["logo_product"]
    small_mark = mark[:, : mark.shape[1]]
    ms = measure_cost(lambda r: training_view(r, ref, [photo], [photo], out_size=224), n=40)
    ms_photo = measure_cost(lambda r: logo_in_photo(r, small_mark, photo, max_side=256), n=40)
    ok, jpeg_512 = cv2.imencode(".jpg", cv2.resize(photo, (512, 512)))
    decode_ms = measure_cost(lambda r: cv2.imdecode(jpeg_512, cv2.IMREAD_COLOR), n=200)
    assert ok and ms < 40 * decode_ms and ms_photo < 40 * decode_ms, (ms, ms_photo, decode_ms)


def test_render_disk_cache_round_trips(tmp_path) -> None:  # noqa: ANN001
    src = get_logo_source("adidas")
    first = render_logo(src, 48, cache_dir=tmp_path)
    files = list(tmp_path.glob("adidas-48-*.png"))
    assert len(files) == 1
    again = render_logo(src, 48, cache_dir=tmp_path)  # read back from disk
    assert np.array_equal(first, again) and again.shape[2] == 4


def test_product_photo_rephotographs_the_catalogue_shot(mark: np.ndarray) -> None:
    """The re-shot keeps the product recognisable (a homography of the shot, under other light)
    but is not the shot's pixels: reframed, seen at an angle, re-lit, re-encoded."""
    from skimage import data

    shot_log: list[str] = []
    shot = catalogue_shot(np.random.default_rng(0), mark, data.astronaut(), shot_log, size=320)
    _valid(shot)
    assert max(shot.shape[:2]) == 320
    # the product cut out onto a light studio backdrop: no seller's floor left to match on
    border = np.concatenate([shot[0], shot[-1], shot[:, 0], shot[:, -1]])
    assert shot_log[0] == "studio" and (border.min(axis=1) >= 200).mean() > 0.9, shot_log
    log: list[str] = []
    surface = procedural_background(np.random.default_rng(9), 200, 260)
    q = product_photo(np.random.default_rng(1), shot, surface, log, max_side=320)
    _valid(q)
    assert max(q.shape[:2]) <= 320
    assert any(t.startswith("reframe") for t in log) and any(t.startswith("angle") for t in log)
    assert log[-1].startswith("jpeg")
    again = product_photo(np.random.default_rng(1), shot, surface, max_side=320)
    assert np.array_equal(q, again)  # seeded: the same draw gives the same photo
    # a real geometric relation survives: SIFT finds the shot in the re-shot
    sift = cv2.SIFT_create()
    k1, d1 = sift.detectAndCompute(cv2.cvtColor(shot, cv2.COLOR_RGB2GRAY), None)
    k2, d2 = sift.detectAndCompute(cv2.cvtColor(q, cv2.COLOR_RGB2GRAY), None)
    pairs = [m for m, n in cv2.BFMatcher().knnMatch(d2, d1, k=2) if m.distance < 0.8 * n.distance]
    src = np.float32([k1[m.trainIdx].pt for m in pairs])
    dst = np.float32([k2[m.queryIdx].pt for m in pairs])
    H, inl = cv2.findHomography(src, dst, cv2.RANSAC, 4.0)
    assert H is not None and int(inl.sum()) >= 15
    assert not np.array_equal(cv2.resize(q, shot.shape[1::-1]), shot)
