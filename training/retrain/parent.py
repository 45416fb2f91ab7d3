"""The model a retraining starts from: the serving bundle (from a registry deployment, seeded with
the shipped model when the registry does not exist yet, or a bundle folder) and torch weights
that reproduce its ONNX model (its ``weights.pt``, ``--weights``, or recovered from the ONNX)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brandguard.errors import BrandguardError
from brandguard.registry import DEFAULT_DEPLOYMENT, WEIGHTS_FILE, Registry
from brandguard.vision.bundle import Bundle

if TYPE_CHECKING:
    from brandguard.training.retrain.brand import FinetuneConfig


class FinetuneError(BrandguardError):
    """Fine-tuning cannot start or finish (no weights for the parent model, no references...)."""


class WeightsMismatchError(FinetuneError):
    """The torch weights given for a bundle do not reproduce its ONNX model's embeddings."""


@dataclass(frozen=True)
class Parent:
    bundle: Bundle
    weights: Path | None  # None: recovered from the bundle's model.onnx (weights_from_onnx)
    version: str | None


def seed_registry(root: str | Path, deployment: str = DEFAULT_DEPLOYMENT, log_to: Any = sys.stderr) -> Registry:
    """A new registry whose first version (v0001) is the shipped default bundle, promoted.

    Why: ``train brand --registry REG`` is how a brand is onboarded, and on a fresh install there
    is no registry yet; the shipped model is what would serve the brand today, so it is what the
    first fine-tune starts from and what the gate compares against. It has no gate of its own
    (nothing to compare it with), so its promotion is forced and the history records that."""
    from brandguard.vision.bundle import default_bundle_path

    src = default_bundle_path()
    print(f"[onboard] registry {root} does not exist: creating it with the shipped default model ({src.name}) "
          f"as its first version", file=log_to, flush=True)
    reg = Registry(root, create=True)
    version = reg.register(src, metadata={"notes": {"kind": "base", "source": "shipped default bundle",
                                                    "seeded_by": "brandguard train brand"}})
    reg.promote(version, deployment, force=True,
                note="seeded from the shipped default bundle by `train brand`: no gate, nothing to compare with")
    print(f"[onboard] registry {root}: {version} = shipped default model, serving deployment {deployment!r}",
          file=log_to, flush=True)
    return reg


def _absent(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def resolve_parent(cfg: FinetuneConfig, log_to: Any = sys.stderr) -> Parent:
    """The bundle being replaced and the torch weights it was exported from.

    A registry path that does not exist yet is created and seeded with the shipped model
    (``seed_registry``). Without ``--weights`` and without a ``weights.pt`` beside the bundle,
    the weights are recovered from its ONNX file (``load_parent_model`` checks them either way)."""
    version = None
    if cfg.registry is not None:
        root = Path(cfg.registry)
        reg = seed_registry(root, cfg.deployment, log_to) if _absent(root) else Registry(root)
        version = reg.current_version(cfg.deployment)
        bundle = reg.verify(version)
        weights = Path(cfg.weights) if cfg.weights else reg.weights(version)
    else:
        bundle = Bundle.load(cfg.from_bundle)  # type: ignore[arg-type]
        weights = Path(cfg.weights) if cfg.weights else bundle.path / WEIGHTS_FILE
    if cfg.weights and not Path(cfg.weights).is_file():
        raise FinetuneError(f"--weights {cfg.weights} is not a file")
    if weights is not None and not weights.is_file():
        weights = None
    if weights is None:
        print(f"[onboard] {bundle.path} has no {WEIGHTS_FILE}: recovering the torch weights from its "
              f"{bundle.model_path.name} (checked against it below)", file=log_to, flush=True)
    return Parent(bundle, weights, version)


def load_parent_model(parent: Parent, tol: float = 1e-3, log_to: Any = sys.stderr) -> Any:
    """Rebuild the torch model and prove it is the bundle's model: same embeddings as its ONNX."""
    import torch

    from brandguard.training.checkpoint import model_from_checkpoint, model_from_onnx
    from brandguard.training.export import ort_embed, ort_session

    source = str(parent.weights) if parent.weights is not None else f"weights recovered from {parent.bundle.model_path}"
    if parent.weights is not None:
        model, _ = model_from_checkpoint(parent.weights)
    else:
        model = model_from_onnx(parent.bundle)
    card = parent.bundle.card
    if model.cfg.input_size != card.input_size or model.cfg.dim != card.embedding_dim:
        raise WeightsMismatchError(f"{source}: input {model.cfg.input_size}/dim {model.cfg.dim} but the "
                                   f"bundle's card says {card.input_size}/{card.embedding_dim}")
    x = np.random.default_rng(0).normal(size=(4, 3, card.input_size, card.input_size)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = ort_embed(ort_session(parent.bundle.model_path.read_bytes()), x)
    diff = float(np.abs(ref - got).max())
    if not diff <= tol:
        raise WeightsMismatchError(f"{source} does not reproduce {parent.bundle.path}'s model "
                                   f"(max |diff| {diff:.3g} > {tol:g})")
    print(f"[onboard] parent model: {source}, torch vs ONNX max |diff| {diff:.2g}", file=log_to, flush=True)
    return model
