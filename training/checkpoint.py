"""Checkpoints and weights files: state dicts and plain values only, so every one of them loads
with ``torch.load(weights_only=True)``.

- ``OUT/ckpt.pt`` of a training run (``save_checkpoint``): model + optimizer state, step, elapsed
  time, the run's config and the model's config, enough to resume or export.
- ``weights.pt`` beside a bundle (``save_weights``): model state + model config, what a
  fine-tune starts from.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brandguard.artifacts import atomic_write_bytes
from brandguard.errors import InputError

if TYPE_CHECKING:
    from brandguard.training.train import TrainConfig

CKPT_NAME = "ckpt.pt"


def save_checkpoint(path: Path, model: Any, opt: Any, step: int, elapsed: float, budget: float,
                    cfg: TrainConfig, model_cfg: dict[str, Any]) -> None:
    """State dicts and plain values only, so ``torch.load(weights_only=True)`` can read it."""
    import torch

    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "elapsed_s": elapsed,
        "budget_s": budget,
        "train_config": asdict(cfg),
        "model_config": dict(model_cfg),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(f"no checkpoint at {p}")
    return torch.load(p, map_location="cpu", weights_only=True)


def model_from_checkpoint(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """Rebuild the model (eval mode) and return it with the checkpoint dict."""
    from brandguard.training.model import ModelConfig, build_model

    ckpt = load_checkpoint(path)
    model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt


def save_weights(model: Any, path: Path) -> None:
    """State dict + model config only: loadable with ``torch.load(weights_only=True)``."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "model_config": model.cfg.to_dict()}, buf)
    atomic_write_bytes(path, buf.getvalue())
