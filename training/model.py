"""Embedding network: MobileNetV3-Small features -> GeM pooling -> projection MLP -> L2 norm.

Small on purpose: the shipped model must embed a listing photo in a few milliseconds on one
CPU core and fit in a ~4 MB ONNX file. No pretrained weights exist in this project, so the
backbone is always built with ``weights=None`` and trained from scratch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from brandguard.errors import InputError

BACKBONES = ("mobilenet_v3_small",)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the embedding network; stored in checkpoints so a model can be rebuilt."""

    backbone: str = "mobilenet_v3_small"
    input_size: int = 160
    dim: int = 256
    hidden: int = 512
    gem_p: float = 3.0

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise InputError(f"backbone {self.backbone!r} not one of {BACKBONES}")
        if not 32 <= self.input_size <= 1024 or self.input_size % 32:
            raise InputError(f"input_size {self.input_size} must be a multiple of 32 in [32, 1024]")
        if not 8 <= self.dim <= 4096:
            raise InputError(f"dim {self.dim} not in [8, 4096]")
        if self.hidden < 8:
            raise InputError(f"hidden {self.hidden} must be >= 8")
        if not 1.0 <= self.gem_p <= 10.0:
            raise InputError(f"gem_p {self.gem_p} not in [1, 10]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = set(cls.__dataclass_fields__)
        cfg = cls(**{k: v for k, v in data.items() if k in known})
        cfg.validate()
        return cfg

    def architecture(self) -> str:
        """Human-readable architecture string for the model card."""
        return f"{self.backbone}+gem+mlp{self.hidden}-{self.dim}+l2"


class GeM(nn.Module):
    """Generalised-mean pooling, ``(mean x^p)^(1/p)`` with learnable ``p``.

    p=1 is average pooling, large p approaches max pooling; copy detection benefits from
    p>1 because a small pasted logo should not be averaged away by the background.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        pooled = x.clamp(min=self.eps).pow(p).mean(dim=(2, 3))
        return pooled.pow(1.0 / p)


class EmbeddingNet(nn.Module):
    """Image batch (N,3,S,S, normalised) -> unit-norm embedding (N, dim)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        # Imported here so importing this module stays cheap.
        from torchvision.models import mobilenet_v3_small

        net = mobilenet_v3_small(weights=None)
        self.backbone = net.features
        channels = net.features[-1].out_channels  # 576 for MobileNetV3-Small
        self.pool = GeM(cfg.gem_p)
        self.head = nn.Sequential(
            nn.Linear(channels, cfg.hidden, bias=False),
            nn.BatchNorm1d(cfg.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.hidden, cfg.dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.pool(self.backbone(x))
        return F.normalize(self.head(feats), dim=1)


def build_model(cfg: ModelConfig) -> EmbeddingNet:
    """Fresh, randomly initialised model (no weights are ever downloaded)."""
    return EmbeddingNet(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
