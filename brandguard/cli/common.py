"""What every command shares: exit codes, thread pinning, the bundle/registry/runtime/depth
options and their readers. Imports nothing heavy (``--help`` stays instant)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# Exit codes scripts can trust (the README and every --help epilog list them).
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_ARTIFACT = 0, 1, 2, 3
EXIT_GATE_REJECTED = 4  # train brand: the evaluation gate rejected the candidate


def set_threads(threads: int) -> None:
    """Pin every numeric library's thread pool before it is imported (OpenMP reads env once)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(threads)
    import cv2

    cv2.setNumThreads(threads)


def add_bundle_arg(p: argparse.ArgumentParser, help_extra: str = "") -> None:
    p.add_argument("--bundle", type=Path, default=None,
                   help="bundle folder (model.onnx + model_card.json [+ index]); default: the shipped model"
                   + help_extra)


def add_registry_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", type=Path, default=None,
                   help="model registry: use the bundle its --deployment currently serves (instead of --bundle)")
    p.add_argument("--deployment", default="default", help="registry deployment name (default: default)")


def resolve_bundle(args: argparse.Namespace) -> Path | None:
    """--bundle, or the registry deployment's current version (verified file by file)."""
    from brandguard.registry import resolve_bundle as resolve

    return resolve(args.bundle, getattr(args, "registry", None), getattr(args, "deployment", "default"))


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (0 or negative sizes would loop or divide by zero)."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=positive_int, default=1, help="ONNX Runtime / FAISS / OpenCV threads (default 1)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda uses onnxruntime's CUDA provider when installed, else falls back to cpu")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (for logs)")


def add_depth_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--depth", choices=("fast", "thorough", "auto"), default="auto",
                   help="fast: global embedding only (hundreds of listings/s per core); thorough: + local "
                        "features (keypoints in a descriptor index, RANSAC geometry) on every image, which finds "
                        "marks small inside photos and mirrored knockoffs; auto (default): local features only "
                        "where the global score passes the calibrated gate, a brand hint or the title names a "
                        "registered brand, a quick keypoint glance (SIFT at 400 px) fits a registered image, or "
                        "the --audit-share draw picks the listing. A bundle without local "
                        "features runs fast")
    p.add_argument("--audit-share", type=float, default=0.0,
                   help="auto depth: share of other listings sent through the local stage at random (0-1)")
    p.add_argument("--text", action=argparse.BooleanOptionalAction, default=True,
                   help="read brand names written in the photos of listings that go deep (OCR; about 0.1 s per "
                        "photo read) and match titles against the brands' names (default: on; --no-text skips it)")


def depth_options(args: argparse.Namespace):  # noqa: ANN202
    from brandguard.engine.routing import DepthOptions

    return DepthOptions(args.depth, args.audit_share, text=args.text)
