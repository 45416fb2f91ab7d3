"""The training losses (torch is imported inside each function).

- ``info_nce`` + ``koleo``: the base recipe's self-supervised objective (``loop.train``);
  ``cutmix_views`` makes the mixed views and their soft targets for it.
- ``supcon``: supervised contrastive loss of the per-brand fine-tune (``retrain.brand``).
"""

from __future__ import annotations

import math
from typing import Any


def info_nce(z: Any, n: int, temperature: float, targets: Any | None = None) -> Any:
    """Contrastive loss over 2n unit vectors: rows 0..n-1 are first views, n..2n-1 second.

    ``targets`` (2n x 2n, rows summing to 1) replaces the one-hot "my other view" target,
    which is how mixed views get credit split between their two source instances.
    """
    import torch
    import torch.nn.functional as F

    sim = z @ z.t() / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    if targets is None:
        idx = torch.arange(2 * n, device=z.device)
        return F.cross_entropy(sim, (idx + n) % (2 * n))
    logp = F.log_softmax(sim, dim=1).masked_fill(eye, 0.0)
    return -(targets * logp).sum(dim=1).mean()


def koleo(z: Any, eps: float = 1e-8) -> Any:
    """Kozachenko-Leonenko differential-entropy estimate (negated, to minimise): mean of
    -log(distance to the nearest other embedding)."""
    import torch

    with torch.no_grad():
        sim = z @ z.t()
        sim.fill_diagonal_(-2.0)
        nn_idx = sim.argmax(dim=1)
    d = (z - z[nn_idx]).norm(dim=1)
    return -torch.log(d + eps).mean()


def cutmix_views(x: Any, n: int, prob: float, gen: Any) -> tuple[Any, Any | None]:
    """Paste a random rectangle of another instance's second view into some second views.

    Returns the new batch and soft targets (or None when nothing was mixed).
    """
    import torch

    if prob <= 0:
        return x, None
    mixed = torch.rand(n, generator=gen) < prob
    if not bool(mixed.any()):
        return x, None
    two_n = 2 * n
    targets = torch.zeros(two_n, two_n)
    idx = torch.arange(two_n)
    targets[idx, (idx + n) % two_n] = 1.0
    x = x.clone()
    size = x.shape[-1]
    for i in torch.nonzero(mixed).flatten().tolist():
        j = int(torch.randint(0, n - 1, (1,), generator=gen))
        j = j + 1 if j >= i else j
        lam = float(torch.empty(1).uniform_(0.5, 0.9, generator=gen))
        side = int(round(size * math.sqrt(1 - lam)))
        if side < 1:
            continue
        y0 = int(torch.randint(0, size - side + 1, (1,), generator=gen))
        x0 = int(torch.randint(0, size - side + 1, (1,), generator=gen))
        x[n + i, :, y0 : y0 + side, x0 : x0 + side] = x[n + j, :, y0 : y0 + side, x0 : x0 + side]
        area = side * side / (size * size)
        targets[n + i] = 0.0
        targets[n + i, i] = 1.0 - area
        targets[n + i, j] = area
    return x, targets


def supcon(z: Any, labels: Any, temperature: float) -> Any:
    """Supervised contrastive loss (Khosla et al. 2020) over unit vectors ``z`` (N x D)."""
    import torch

    sim = z @ z.t() / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    logp = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    return -(logp.masked_fill(~pos, 0.0).sum(1) / pos.sum(1).clamp(min=1)).mean()
