"""Checkpoints and weights files: state dicts and plain values only, so every one of them loads
with ``torch.load(weights_only=True)``.

- ``OUT/ckpt.pt`` of a training run (``save_checkpoint``): model + optimizer state, step, elapsed
  time, the run's config and the model's config, enough to resume or export.
- ``weights.pt`` beside a bundle (``save_weights``): model state + model config, what a
  fine-tune starts from.
- weights recovered from a bundle's ``model.onnx`` (``weights_from_onnx``, ``model_from_onnx``):
  what a fine-tune starts from when the bundle has no ``weights.pt`` (the shipped model: the run
  that made it is gone, its ONNX file is all there is).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brandguard.artifacts import atomic_write_bytes
from brandguard.errors import BundleError, InputError

if TYPE_CHECKING:
    from brandguard.training.model import EmbeddingNet, ModelConfig
    from brandguard.training.train import TrainConfig
    from brandguard.vision.bundle import Bundle, ModelCard

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


# --------------------------------------------------------------------------- weights from ONNX


class WeightsRecoveryError(BundleError):
    """A bundle's ONNX graph does not map onto the architecture its model card names."""


_ARCH_RE = re.compile(r"^(?P<backbone>[a-z0-9_]+)\+gem\+mlp(?P<hidden>\d+)-(?P<dim>\d+)\+l2$")


def config_from_card(card: ModelCard) -> ModelConfig:
    """The ``ModelConfig`` a card's ``architecture`` string (``ModelConfig.architecture()``) names."""
    from brandguard.training.model import ModelConfig

    m = _ARCH_RE.match(card.architecture)
    if m is None:
        raise WeightsRecoveryError(f"architecture {card.architecture!r} is not one training/model.py builds")
    try:
        cfg = ModelConfig(backbone=m["backbone"], input_size=card.input_size, dim=int(m["dim"]),
                          hidden=int(m["hidden"]))
        cfg.validate()
    except InputError as exc:
        raise WeightsRecoveryError(f"architecture {card.architecture!r}: {exc}") from exc
    if cfg.dim != card.embedding_dim:
        raise WeightsRecoveryError(f"architecture says dim {cfg.dim}, card says {card.embedding_dim}")
    return cfg


def _conv_bn_pairs(model: Any) -> list[tuple[str, Any, str, Any]]:
    """(conv name, Conv2d, BN name, BatchNorm2d) for every convolution whose next leaf module is
    a BatchNorm over its output, in module order: the pairs ONNX constant folding fuses."""
    import torch

    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    pairs = []
    for (cn, conv), (bn_name, bn) in zip(leaves, leaves[1:]):
        if (isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d)
                and bn.num_features == conv.out_channels):
            pairs.append((cn, conv, bn_name, bn))
    return pairs


def _check_conv_attrs(node: Any, conv: Any, name: str) -> None:
    """The ONNX Conv's kernel, stride, padding, dilation and groups are the torch module's."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    want = {"kernel_shape": list(conv.kernel_size), "strides": list(conv.stride),
            "dilations": list(conv.dilation), "group": conv.groups,
            "pads": list(conv.padding) * 2}
    for key, value in want.items():
        got = attrs.get(key, 1 if key == "group" else None)
        if isinstance(got, list):
            got = [int(v) for v in got]
        if got is not None and got != value:
            raise WeightsRecoveryError(f"ONNX node {node.name or node.output[0]} -> {name}: {key} {got} != {value}")


def _check_scope(node: Any, module: str) -> None:
    """When the exporter kept the module scope in the node's output name (``/backbone/backbone.1/
    block/block.0/block.0.0/Conv_output_0``), its innermost part must end the module's path."""
    parts = node.output[0].split("/")
    scope = parts[-2] if len(parts) >= 3 else ""
    if "." in scope and not (module == scope or module.endswith("." + scope)):
        raise WeightsRecoveryError(f"ONNX node {node.output[0]} mapped onto {module}: graph order and modules disagree")


def weights_from_onnx(bundle: Bundle) -> dict[str, Any]:
    """Torch state dict of ``training/model.py``'s network that reproduces ``bundle``'s ONNX model.

    Why this works: ``training/export.py`` exports with constant folding, which fuses each
    eval-mode Conv+BatchNorm of the backbone into one anonymous ``onnx::Conv_*`` weight and bias
    and keeps every other parameter under its torch name (SE ``fc1``/``fc2``, ``pool.p``,
    ``head.*`` with the head BatchNorm's running statistics); the head's bias-free Linear becomes
    an anonymous ``MatMul`` weight (transposed). Named initialisers are copied; fused
    convolutions are assigned, in graph order, to the Conv2d modules followed by a BatchNorm
    (shapes, Conv attributes and, where the exporter kept it, the node's module scope checked); each such BatchNorm becomes the identity plus the fused
    bias (weight 1, running mean 0, running variance 1 - eps), exact in eval mode, which is how
    fine-tuning keeps BatchNorm (``retrain.brand._freeze_bn``). Raises ``WeightsRecoveryError``.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    from brandguard.training.model import build_model

    cfg = config_from_card(bundle.card)
    model = build_model(cfg)
    state = model.state_dict()
    graph = onnx.load_model_from_string(bundle.model_path.read_bytes()).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    out: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        t = torch.tensor(np.array(value, copy=True), dtype=state[key].dtype)
        if tuple(t.shape) != tuple(state[key].shape):
            raise WeightsRecoveryError(f"{key}: ONNX shape {tuple(t.shape)} != torch {tuple(state[key].shape)}")
        out[key] = t

    for name, arr in inits.items():
        if name in state:
            put(name, arr)
    anonymous = [n for n in graph.node if any(x in inits and x not in state for x in n.input[1:])]
    convs = [n for n in anonymous if n.op_type == "Conv"]
    pairs = _conv_bn_pairs(model)
    if len(convs) != len(pairs):
        raise WeightsRecoveryError(f"{len(convs)} fused ONNX convolutions but {len(pairs)} Conv+BatchNorm pairs "
                                   f"in {cfg.architecture()}")
    for node, (cname, conv, bname, bn) in zip(convs, pairs):
        _check_scope(node, cname)
        _check_conv_attrs(node, conv, cname)
        if len(node.input) < 3 or node.input[2] not in inits:
            raise WeightsRecoveryError(f"fused convolution for {cname} has no bias initialiser")
        put(f"{cname}.weight", inits[node.input[1]])
        bias = inits[node.input[2]]
        n = bn.num_features
        put(f"{bname}.weight", np.ones(n, np.float32))
        put(f"{bname}.bias", bias)
        put(f"{bname}.running_mean", np.zeros(n, np.float32))
        put(f"{bname}.running_var", np.full(n, 1.0 - bn.eps, np.float32))
    linears = [(f"{n}.weight", m) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and f"{n}.weight" not in out]
    mats = [n for n in anonymous if n.op_type in ("MatMul", "Gemm")]
    if len(mats) != len(linears):
        raise WeightsRecoveryError(f"{len(mats)} anonymous ONNX matrix products but {len(linears)} unnamed Linear "
                                   "layers")
    for node, (key, lin) in zip(mats, linears):
        _check_scope(node, key[: -len(".weight")])
        w = inits[node.input[1]]
        trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
        put(key, w if node.op_type == "Gemm" and trans_b else w.T)
        if lin.bias is not None:
            bkey = key[: -len("weight")] + "bias"
            if bkey not in out:
                if node.op_type != "Gemm" or len(node.input) < 3:
                    raise WeightsRecoveryError(f"{bkey}: no bias in the ONNX graph")
                put(bkey, inits[node.input[2]])
    missing = [k for k in state if k not in out and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsRecoveryError(f"no ONNX initialiser for {missing[:5]} ({len(missing)} in all)")
    for k in state:
        out.setdefault(k, state[k])
    return out


def model_from_onnx(bundle: Bundle) -> EmbeddingNet:
    """The bundle's network as a torch model (eval mode), rebuilt by :func:`weights_from_onnx`."""
    from brandguard.training.model import build_model

    model = build_model(config_from_card(bundle.card))
    model.load_state_dict(weights_from_onnx(bundle))
    return model.eval()
