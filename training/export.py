"""Export a trained checkpoint to an ONNX model bundle, with checks that make it safe to ship.

Steps: torch -> ONNX (opset 17, dynamic batch, input ``image``, output ``embedding``) ->
``onnx.checker`` -> parity against torch on real images through the *inference* preprocessing
(onnxruntime, fail above ``--tol``) -> a copy-detection sanity check on held-out brands ->
``vision.bundle.write_bundle`` (sha256 filled in, files written atomically).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from brandguard.errors import BundleError, InputError
from brandguard.vision.bundle import Bundle, ModelCard, write_bundle
from brandguard.vision.preprocess import preprocess_batch

OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "embedding"
LICENSES = {
    "simple-icons-pack": "CC0-1.0 (icons carrying their own licence keep it; ND-licensed icons excluded)",
    "clothing-photos": "CC0-1.0",
}


class ExportParityError(BundleError):
    """The ONNX model does not reproduce the torch model's embeddings within tolerance."""


@dataclass(frozen=True)
class ExportReport:
    dest: str
    onnx_bytes: int
    parity_max_abs_diff: float
    parity_images: int
    sanity: dict[str, float]
    sha256: str


def export_onnx_bytes(model: Any, input_size: int) -> bytes:
    """Trace the model to ONNX in memory (TorchScript exporter: no onnxscript needed)."""
    import torch

    model = model.eval().to("cpu").to(memory_format=torch.contiguous_format)
    dummy = torch.zeros(2, 3, input_size, input_size, dtype=torch.float32)
    buf = io.BytesIO()
    # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
    # onnxscript (not a dependency here); it is still the supported path for torch 2.x.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model, (dummy,), buf, dynamo=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    data = buf.getvalue()
    import onnx

    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    return data


def ort_session(model_bytes: bytes, threads: int = 1) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def ort_embed(sess: Any, batch: np.ndarray, chunk: int = 64) -> np.ndarray:
    outs = [sess.run([OUTPUT_NAME], {INPUT_NAME: batch[i : i + chunk]})[0] for i in range(0, len(batch), chunk)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def parity_images(photos: str | None, n: int, seed: int) -> list[np.ndarray]:
    """Real photos (held-out split) when a folder is given, plus rendered held-out marks on
    backgrounds, in assorted sizes so the resize path is exercised too."""
    from brandguard.training.data import ViewConfig, ViewMaker, list_photos, load_marks, read_photo

    rng = np.random.default_rng(seed)
    imgs: list[np.ndarray] = []
    for p in list_photos(photos, "val", seed)[: n // 2]:
        im = read_photo(p)
        if im is not None:
            imgs.append(im)
    marks = load_marks("val", seed, 128, max(2, n - len(imgs)), None)
    maker = ViewMaker(marks, [], ViewConfig(input_size=160, batch_size=2))
    for i in range(min(len(marks), n - len(imgs))):
        imgs.append(maker.mark_in_scene(rng, i))
    return imgs


def check_parity(model: Any, sess: Any, card: ModelCard, images: Sequence[np.ndarray], tol: float) -> float:
    """Max |torch - onnxruntime| over the embeddings of ``images``; raises above ``tol``."""
    import torch

    batch = preprocess_batch(list(images), card)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(batch)).numpy()
    got = ort_embed(sess, batch)
    diff = float(np.abs(ref - got).max())
    if not np.isfinite(diff) or diff > tol:
        raise ExportParityError(f"ONNX output differs from torch by {diff:.3g} (tolerance {tol:g})")
    return diff


def copy_sanity(sess: Any, card: ModelCard, n: int = 60, seed: int = 0) -> dict[str, float]:
    """Held-out logos: cosine(logo, JPEG-recompressed + cropped + rescaled copy of it) vs
    cosine between two different logos, through the real inference path (ONNX + preprocess)."""
    from brandguard.training.data import load_marks

    marks = load_marks("val", seed, 128, n, None)
    rng = np.random.default_rng([seed, 4242])
    refs, copies = [], []
    for i in range(len(marks)):
        rgba = marks.rgba[i].copy()
        rgba[..., :3] = marks.colors[i]
        a = rgba[..., 3:4].astype(np.float32) / 255.0
        big = cv2.resize(rgba[..., :3].astype(np.float32) * a + 255.0 * (1 - a), (320, 320),
                         interpolation=cv2.INTER_LINEAR)
        ref = np.clip(big + 0.5, 0, 255).astype(np.uint8)
        s = rng.uniform(0.8, 0.92)
        cs = int(320 * s)
        y, x = rng.integers(0, 320 - cs + 1, 2)
        crop = cv2.resize(ref[y : y + cs, x : x + cs], (int(cs * 0.7), int(cs * 0.7)), interpolation=cv2.INTER_AREA)
        ok, enc = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 40])
        copies.append(cv2.imdecode(enc, cv2.IMREAD_UNCHANGED))
        refs.append(ref)
    r = ort_embed(sess, preprocess_batch(refs, card))
    c = ort_embed(sess, preprocess_batch(copies, card))
    pos = np.sum(r * c, axis=1)
    rr = r @ r.T
    off = rr[~np.eye(len(r), dtype=bool)]
    cr = c @ r.T
    return {
        "logos": float(len(r)),
        "copy_cos_mean": float(pos.mean()),
        "copy_cos_min": float(pos.min()),
        "different_logos_cos_mean": float(off.mean()),
        "different_logos_cos_p99": float(np.quantile(off, 0.99)),
        "copy_top1": float(np.mean(cr.argmax(axis=1) == np.arange(len(r)))),
    }


def export_bundle(
    ckpt: str | Path,
    dest: str | Path,
    photos: str | None = None,
    name: str = "brandguard-default",
    version: str = "0.1.0",
    tol: float = 1e-3,
    threads: int = 1,
    parity_n: int = 32,
    sanity_n: int = 60,
    log_to: Any = sys.stderr,
) -> ExportReport:
    """Checkpoint -> verified bundle folder at ``dest``."""
    import torch

    from brandguard.training.checkpoint import model_from_checkpoint
    from brandguard.training.data import MEAN, STD
    from brandguard.training.runlog import SUMMARY_NAME, portable_name

    torch.set_num_threads(threads)
    cv2.setNumThreads(1)
    model, state = model_from_checkpoint(ckpt)
    mcfg = model.cfg
    tcfg = dict(state.get("train_config", {}))
    seed = int(tcfg.get("seed", 0))
    summary_path = Path(ckpt).parent / SUMMARY_NAME
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}

    data = export_onnx_bytes(model, mcfg.input_size)
    card = ModelCard(
        name=name, architecture=mcfg.architecture(), input_size=mcfg.input_size, embedding_dim=mcfg.dim,
        sha256="0" * 64, mean=MEAN, std=STD, opset=OPSET, version=version,
        created_at=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
    )
    sess = ort_session(data, threads)
    imgs = parity_images(photos or tcfg.get("photos"), parity_n, seed)
    diff = check_parity(model, sess, card, imgs, tol)
    print(f"[export] onnx {len(data) / 1e6:.2f} MB, parity max|diff| {diff:.2e} on {len(imgs)} images",
          file=log_to, flush=True)
    sanity = copy_sanity(sess, card, sanity_n, seed)
    print(f"[export] sanity {sanity}", file=log_to, flush=True)

    photo_src = tcfg.get("photos")
    training = {
        "method": "self-supervised copy detection (SSCD-style): InfoNCE + KoLeo over two augmented views",
        "backbone_init": "random (no pretrained weights)",
        "data_sources": [re.sub(r"(?<![\w.])/\S+", lambda m: portable_name(m.group(0)), str(d))
                         for d in summary.get("data_sources", [])],
        "licenses": {"simple-icons-pack": LICENSES["simple-icons-pack"],
                     **({"photos": f"{portable_name(photo_src)}: {LICENSES['clothing-photos']}"} if photo_src else {})},
        "brand_split": {"train_split_only": True, "seed": seed},
        "steps": int(state.get("step", 0)),
        "minutes": round(float(state.get("elapsed_s", 0.0)) / 60.0, 2),
        "seed": seed,
        "batch_size": tcfg.get("batch_size"),
        "temperature": tcfg.get("temperature"),
        "koleo_weight": tcfg.get("koleo_weight"),
        "lr": tcfg.get("lr"),
        "device": tcfg.get("device"),
        "final_loss": summary.get("final_loss"),
        "first_loss": summary.get("first_loss"),
        "train_img_per_s": summary.get("train_img_per_s"),
    }
    metrics = {
        "parity_max_abs_diff": diff,
        "parity_images": len(imgs),
        "onnx_bytes": len(data),
        "sanity_copy_vs_different_logos": sanity,
        "heldout_copy_retrieval": summary.get("eval", {}),
    }
    card = ModelCard(**{**asdict(card), "training": training, "metrics": metrics})
    bundle = write_bundle(dest, data, card)
    Bundle.load(bundle.path)  # re-read from disk: what ships is what was checked
    return ExportReport(str(bundle.path), len(data), diff, len(imgs), sanity, bundle.card.sha256)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m brandguard.training.export",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__,
        epilog="example:\n  python -m brandguard.training.export --ckpt runs/x/ckpt.pt --dest brandguard/assets/default_bundle\n",
    )
    p.add_argument("--ckpt", required=True,
                   help="final checkpoint of a brandguard.training.train run (only the final one carries "
                        "recalibrated BatchNorm statistics; a mid-run one embeds everything alike)")
    p.add_argument("--dest", required=True, help="bundle folder to (over)write: model.onnx + model_card.json")
    p.add_argument("--photos", default=None,
                   help="photo folder for the parity batch (default: the one the run trained with)")
    p.add_argument("--name", default="brandguard-default")
    p.add_argument("--version", default="0.1.0")
    p.add_argument("--tol", type=float, default=1e-3, help="max |torch - ONNX| allowed on any embedding value")
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime intra-op threads")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t = time.perf_counter()
    try:
        rep = export_bundle(args.ckpt, args.dest, args.photos, args.name, args.version, args.tol, args.threads)
    except (InputError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({**asdict(rep), "seconds": round(time.perf_counter() - t, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
