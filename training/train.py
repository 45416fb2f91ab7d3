"""Self-supervised copy-detection training (SSCD-style, sized for a 2-core CPU box).

Each step draws B distinct instances (train-split brand marks placed on backgrounds, and real
photos), makes two augmented views of each, and minimises

    InfoNCE(views, temperature)  +  koleo_weight * KoLeo(views)

InfoNCE makes the two views of an instance each other's nearest neighbour among the 2B views;
the KoLeo (differential-entropy) term pushes every embedding away from its nearest other
embedding so the space is used uniformly — that is what makes one global similarity threshold
work for copy detection (Pizzi et al., "A Self-Supervised Descriptor for Image Copy Detection").
Optional cutmix-style mixing pastes part of another instance into a view and gives that view a
soft target split between the two instances.

Runs are bounded by wall-clock time (``--minutes``) and/or ``--steps``, checkpoint to
``OUT/ckpt.pt`` (state dicts only), log every step to ``OUT/log.csv`` and plot ``OUT/loss.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brandguard.errors import InputError

CKPT_NAME = "ckpt.pt"
LOG_NAME = "log.csv"
PLOT_NAME = "loss.png"
SUMMARY_NAME = "summary.json"
LOG_FIELDS = ("step", "elapsed_s", "lr", "loss", "infonce", "koleo", "pos_sim", "data_wait_s", "compute_s")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass
class TrainConfig:
    """Everything a run depends on; saved in the checkpoint and the summary."""

    out: str
    minutes: float = 10.0
    steps: int | None = None
    input_size: int = 128
    dim: int = 256
    hidden: int = 512
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 40
    temperature: float = 0.1
    koleo_weight: float = 1.0
    mixup: float = 0.0
    photos: str | None = None
    photo_fraction: float = 0.3
    min_mark_fraction: float = 0.25
    mark_px: int = 128
    max_marks: int | None = None
    shared_augment: bool = True
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    workers: int = 1
    cache_dir: str = "data_cache"
    ckpt_every_s: float = 120.0
    eval_marks: int = 200
    bn_batches: int = 8
    resume: bool = False

    def validate(self) -> None:
        if self.minutes <= 0:
            raise InputError(f"--minutes must be > 0, got {self.minutes}")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"--steps must be >= 1, got {self.steps}")
        if self.batch_size < 2:
            raise InputError("--batch-size must be >= 2: the loss needs negatives")
        if not 0.0 < self.temperature <= 1.0:
            raise InputError(f"--temperature {self.temperature} not in (0, 1]")
        if self.koleo_weight < 0:
            raise InputError("--koleo-weight must be >= 0")
        if not 0.0 <= self.mixup <= 1.0:
            raise InputError(f"--mixup {self.mixup} not in [0, 1]")
        if self.lr <= 0 or self.weight_decay < 0:
            raise InputError("--lr must be > 0 and --weight-decay >= 0")
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"--device must be cpu or cuda, got {self.device!r}")
        if self.threads < 1:
            raise InputError("--threads must be >= 1")
        if self.workers not in (0, 1):
            raise InputError("--workers must be 0 or 1")


@dataclass
class TrainResult:
    """What a run produced; also written to ``OUT/summary.json``."""

    out: str
    step: int
    elapsed_s: float
    final_loss: float
    first_loss: float
    images_seen: int
    train_img_per_s: float
    data_wait_fraction: float
    checkpoint: str
    log: str
    plot: str
    eval: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    data_sources: list[str] = field(default_factory=list)


def portable_name(path: str | os.PathLike[str]) -> str:
    """Last two components of a path: enough to name a data source without leaking the
    machine's directory layout into model cards."""
    parts = Path(path).resolve().parts
    return "/".join(parts[-2:])


# --------------------------------------------------------------------------- losses


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


# --------------------------------------------------------------------------- schedule


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up for ``warmup_steps``, then cosine decay to 2% over ``progress`` in [0,1]."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = min(1.0, max(0.0, progress))
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * p)))


# --------------------------------------------------------------------------- checkpoints and logs


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


def read_log(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _truncate_log(path: Path, last_step: int) -> None:
    """Drop rows after ``last_step`` (a run killed between checkpoints logged steps that
    the resumed run will repeat)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= last_step]
    if len(keep) != len(rows):
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(keep)
        os.replace(tmp, path)


def plot_log(log_path: Path, png_path: Path) -> None:
    """Loss per step (raw and smoothed) and the learning rate, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    if not rows:
        return
    steps = np.array([r["step"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    ema = np.empty_like(loss)
    acc = loss[0]
    for i, v in enumerate(loss):
        acc = 0.95 * acc + 0.05 * v if i else v
        ema[i] = acc
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, loss, alpha=0.3, lw=0.8, label="loss")
    ax.plot(steps, ema, lw=1.5, label="loss (EMA)")
    ax.plot(steps, [r["infonce"] for r in rows], lw=0.8, alpha=0.6, label="InfoNCE")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(steps, [r["lr"] for r in rows], color="grey", lw=0.8, ls="--", label="lr")
    ax2.set_ylabel("learning rate")
    ax.legend(loc="upper right")
    ax.set_title(f"{log_path.parent.name}: {len(rows)} steps")
    fig.tight_layout()
    tmp = png_path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, png_path)


# --------------------------------------------------------------------------- evaluation


def embed_uint8(model: Any, images: np.ndarray, device: str = "cpu", batch: int = 128) -> np.ndarray:
    """N x S x S x 3 uint8 (already model-sized) -> N x D float32 embeddings."""
    import torch

    from brandguard.training.data import to_model_input

    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = to_model_input(torch.from_numpy(np.ascontiguousarray(images[i : i + batch])), MEAN, STD)
            out.append(model(x.to(device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def copy_retrieval_eval(model: Any, maker: Any, n: int, seed: int, device: str = "cpu") -> dict[str, float]:
    """Held-out brands: clean reference of each mark vs one edited in-scene copy of it.

    recall@1 = share of copies whose nearest reference is their own mark.
    """
    n = min(n, len(maker.marks))
    if n < 2:
        return {}
    rng = np.random.default_rng([seed, 987654321])
    refs, queries = [], []
    for i in range(n):
        refs.append(maker.mark_reference(rng, i))
        q = maker.strong_mark_view(rng, i)
        from brandguard.vision.preprocess import resize_for_model

        queries.append(resize_for_model(np.ascontiguousarray(q), maker.card))
    r = embed_uint8(model, np.stack(refs), device)
    q = embed_uint8(model, np.stack(queries), device)
    sim = q @ r.T
    pos = np.diag(sim)
    neg = sim.copy()
    np.fill_diagonal(neg, -np.inf)
    return {
        "n": float(n),
        "recall_at_1": float(np.mean(sim.argmax(axis=1) == np.arange(n))),
        "mean_pos_sim": float(pos.mean()),
        "mean_max_neg_sim": float(neg.max(axis=1).mean()),
    }


# --------------------------------------------------------------------------- the loop


def recalibrate_bn(model: Any, batches: Any, mean: Sequence[float] = MEAN, std: Sequence[float] = STD) -> int:
    """Recompute every BatchNorm's running statistics as an exact average over ``batches``
    (uint8 NHWC tensors) with the final weights ("precise BN").

    Why: running stats are an EMA over weights that kept changing, and after a short run they
    lag far enough behind that eval-mode embeddings all collapse onto one vector.
    """
    import torch

    from brandguard.training.data import to_model_input

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    n = 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for x_u8 in batches:
            x = to_model_input(x_u8, mean, std).to(device).contiguous(memory_format=torch.channels_last)
            model(x)
            n += 1
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.train(was_training)
    return n



class _StopFlag:
    """Set by SIGINT/SIGTERM so the loop saves a checkpoint and exits cleanly."""

    def __init__(self) -> None:
        self.stop = False

    def __call__(self, *_: Any) -> None:
        self.stop = True


def _resolve_device(name: str) -> str:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda requested but CUDA is not available")
    return name


def train(cfg: TrainConfig, log_to: Any = sys.stderr) -> TrainResult:
    """Run (or resume) one training job; returns when the step or time budget is used up."""
    import cv2
    import torch

    from brandguard.training.data import (
        ViewConfig,
        ViewMaker,
        list_photos,
        load_marks,
        make_loader,
        to_model_input,
    )
    from brandguard.training.model import ModelConfig, build_model, count_parameters

    cfg.validate()
    torch.set_num_threads(cfg.threads)
    cv2.setNumThreads(1)
    device = _resolve_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path, plot_path = out / CKPT_NAME, out / LOG_NAME, out / PLOT_NAME

    ckpt = None
    if cfg.resume:
        ckpt = load_checkpoint(ckpt_path)
        model_cfg = ModelConfig.from_dict(ckpt["model_config"])
        if (model_cfg.input_size, model_cfg.dim, model_cfg.hidden) != (cfg.input_size, cfg.dim, cfg.hidden):
            raise InputError(
                f"checkpoint was trained with input_size={model_cfg.input_size} dim={model_cfg.dim} "
                f"hidden={model_cfg.hidden}; pass the same values to --resume"
            )
    else:
        model_cfg = ModelConfig(input_size=cfg.input_size, dim=cfg.dim, hidden=cfg.hidden)
        model_cfg.validate()

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg).to(device).to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.98),
    )
    step, prev_elapsed = 0, 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, prev_elapsed = int(ckpt["step"]), float(ckpt["elapsed_s"])
    budget_s = prev_elapsed + cfg.minutes * 60.0

    marks = load_marks("train", cfg.seed, cfg.mark_px, cfg.max_marks, cfg.cache_dir)
    photos = list_photos(cfg.photos, "train", cfg.seed)
    vcfg = ViewConfig(input_size=cfg.input_size, batch_size=min(cfg.batch_size, len(marks) + len(photos)),
                      photo_fraction=cfg.photo_fraction, min_mark_fraction=cfg.min_mark_fraction,
                      use_shared_augment=cfg.shared_augment)
    maker = ViewMaker(marks, photos, vcfg)
    sources = [f"{len(marks)} train-split marks: {marks.source}"]
    if photos:
        sources.append(f"{len(photos)} photos (train photo split) from {portable_name(cfg.photos)}")
    sources.append(f"augmentations: {maker.augment_source}")
    print(f"[train] {count_parameters(model):,} params, {len(marks)} marks, {len(photos)} photos, "
          f"batch {vcfg.batch_size}x2 views at {cfg.input_size}px, augment={maker.augment_source}, "
          f"start step {step}, budget {budget_s / 60:.1f} min", file=log_to, flush=True)

    new_log = not log_path.exists() or ckpt is None
    if not new_log:
        _truncate_log(log_path, step)  # rows logged after the last checkpoint are redone
    log_f = open(log_path, "w" if new_log else "a", newline="")
    writer = csv.writer(log_f)
    if new_log:
        writer.writerow(LOG_FIELDS)

    stop = _StopFlag()
    old_handlers = {}
    if threading.current_thread() is threading.main_thread():  # signals only work there
        old_handlers = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    loader = make_loader(maker, cfg.seed, step, cfg.workers)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    model.train()
    t_run = time.perf_counter()
    last_ckpt = t_run
    first_loss, last_loss, ema = float("nan"), float("nan"), None
    images, data_wait, compute = 0, 0.0, 0.0
    try:
        while not stop.stop:
            elapsed = prev_elapsed + (time.perf_counter() - t_run)
            if cfg.steps is not None and step >= cfg.steps:
                break
            if elapsed >= budget_s:
                break
            t0 = time.perf_counter()
            x_u8, _ids = next(loader)
            t1 = time.perf_counter()
            n = x_u8.shape[0] // 2
            x = to_model_input(x_u8, MEAN, STD)
            x, targets = cutmix_views(x, n, cfg.mixup, gen)
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            progress = step / cfg.steps if cfg.steps else elapsed / budget_s
            lr = lr_at(cfg, step, progress)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                z = model(x)
            z = z.float()
            l_nce = info_nce(z, n, cfg.temperature, None if targets is None else targets.to(device))
            l_ko = koleo(z)
            loss = l_nce + cfg.koleo_weight * l_ko
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            with torch.no_grad():
                pos_sim = float((z[:n] * z[n:]).sum(1).mean())
            t2 = time.perf_counter()
            step += 1
            images += 2 * n
            data_wait += t1 - t0
            compute += t2 - t1
            last_loss = float(loss.item())
            if math.isnan(first_loss):
                first_loss = last_loss
            ema = last_loss if ema is None else 0.95 * ema + 0.05 * last_loss
            writer.writerow([step, f"{prev_elapsed + t2 - t_run:.2f}", f"{lr:.6g}", f"{last_loss:.5f}",
                             f"{l_nce.item():.5f}", f"{l_ko.item():.5f}", f"{pos_sim:.4f}",
                             f"{t1 - t0:.4f}", f"{t2 - t1:.4f}"])
            if step % 10 == 0:
                log_f.flush()
                rate = images / max(1e-9, time.perf_counter() - t_run)
                print(f"[train] step {step} loss {last_loss:.4f} (ema {ema:.4f}) nce {l_nce.item():.3f} "
                      f"koleo {l_ko.item():.3f} pos {pos_sim:.3f} lr {lr:.2e} {rate:.0f} img/s "
                      f"data-wait {data_wait / max(1e-9, data_wait + compute):.0%}", file=log_to, flush=True)
            if time.perf_counter() - last_ckpt > cfg.ckpt_every_s:
                save_checkpoint(ckpt_path, model, opt, step, prev_elapsed + time.perf_counter() - t_run,
                                budget_s, cfg, model_cfg.to_dict())
                log_f.flush()
                plot_log(log_path, plot_path)
                last_ckpt = time.perf_counter()
        if step > 0 and cfg.bn_batches > 0:
            used = recalibrate_bn(model, (next(loader)[0] for _ in range(cfg.bn_batches)))
            print(f"[train] recalibrated BatchNorm statistics on {used} batches", file=log_to, flush=True)
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        log_f.close()
        del loader
    elapsed = prev_elapsed + (time.perf_counter() - t_run)
    save_checkpoint(ckpt_path, model, opt, step, elapsed, budget_s, cfg, model_cfg.to_dict())
    plot_log(log_path, plot_path)

    ev: dict[str, float] = {}
    if cfg.eval_marks > 1:
        val_marks = load_marks("val", cfg.seed, cfg.mark_px, cfg.eval_marks, cfg.cache_dir)
        vmaker = ViewMaker(val_marks, list_photos(cfg.photos, "val", cfg.seed), vcfg)
        ev = copy_retrieval_eval(model, vmaker, cfg.eval_marks, cfg.seed, device)
        print(f"[train] held-out brands copy retrieval: {ev}", file=log_to, flush=True)

    run_time = max(1e-9, data_wait + compute)
    result = TrainResult(
        out=str(out), step=step, elapsed_s=round(elapsed, 1), final_loss=float(ema if ema is not None else last_loss),
        first_loss=first_loss, images_seen=images,
        train_img_per_s=round(images / max(1e-9, elapsed - prev_elapsed), 1),
        data_wait_fraction=round(data_wait / run_time, 3),
        checkpoint=str(ckpt_path), log=str(log_path), plot=str(plot_path), eval=ev,
        config=asdict(cfg), data_sources=sources,
    )
    (out / SUMMARY_NAME).write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


# --------------------------------------------------------------------------- profiling


def profile(cfg: TrainConfig, batches: int = 3, log_to: Any = sys.stderr) -> dict[str, float]:
    """Images/s of the data side alone (one process) and of the model step alone."""
    import cv2
    import torch

    from brandguard.training.data import ViewConfig, ViewMaker, list_photos, load_marks, to_model_input
    from brandguard.training.model import ModelConfig, build_model

    torch.set_num_threads(cfg.threads)
    cv2.setNumThreads(1)
    marks = load_marks("train", cfg.seed, cfg.mark_px, cfg.max_marks, cfg.cache_dir)
    maker = ViewMaker(marks, list_photos(cfg.photos, "train", cfg.seed), ViewConfig(
        input_size=cfg.input_size, batch_size=cfg.batch_size, photo_fraction=cfg.photo_fraction,
        use_shared_augment=cfg.shared_augment))
    t = time.perf_counter()
    xs = [maker.batch(cfg.seed, i)[0] for i in range(batches)]
    data_rate = sum(len(x) for x in xs) / (time.perf_counter() - t)
    model = build_model(ModelConfig(input_size=cfg.input_size, dim=cfg.dim, hidden=cfg.hidden))
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = to_model_input(torch.from_numpy(xs[0]), MEAN, STD).contiguous(memory_format=torch.channels_last)
    n = len(xs[0]) // 2
    times = []
    for _ in range(batches + 1):
        t = time.perf_counter()
        z = model(x)
        loss = info_nce(z, n, cfg.temperature) + cfg.koleo_weight * koleo(z)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    model_rate = len(xs[0]) / float(np.median(times[1:]))
    res = {"data_img_per_s": round(data_rate, 1), "model_img_per_s": round(model_rate, 1),
           "threads": cfg.threads, "input_size": cfg.input_size}
    print(f"[profile] {res} (augment={maker.augment_source})", file=log_to, flush=True)
    return res


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m brandguard.training.train",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__,
        epilog=(
            "examples:\n"
            "  # 15-minute CPU run on logos + real photos, then export the bundle\n"
            "  python -m brandguard.training.train --out runs/x --minutes 15 --input-size 128 \\\n"
            "      --photos ../shared/data/clothing-photos/train\n"
            "  python -m brandguard.training.export --ckpt runs/x/ckpt.pt --dest runs/x/bundle\n"
            "  # continue the same run for 10 more minutes (same OUT, same model sizes)\n"
            "  python -m brandguard.training.train --out runs/x --minutes 10 --input-size 128 --resume\n"
            "  # where does the time go? data generation vs model step\n"
            "  python -m brandguard.training.train --out runs/x --profile\n"
        ),
    )
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True, help="run folder: ckpt.pt, log.csv, loss.png, summary.json")
    g.add_argument("--minutes", type=float, default=10.0,
                   help="wall-clock budget of this invocation; the cosine schedule spans the whole run "
                        "(time already spent in a resumed checkpoint + this). Default %(default)s")
    g.add_argument("--steps", type=int, default=None,
                   help="total step budget (overrides time for the schedule; runs stop at whichever comes first)")
    g.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt (same step count, same data order)")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    g.add_argument("--threads", type=int, default=1,
                   help="torch threads for the model step. On a 2-core box keep 1: the data worker needs the other core")
    g.add_argument("--workers", type=int, choices=(0, 1), default=1,
                   help="data worker processes (0 = generate batches in the training process)")
    g.add_argument("--seed", type=int, default=0, help="seeds the model init, the brand split and every batch")
    g.add_argument("--ckpt-every", dest="ckpt_every_s", type=float, default=120.0, help="seconds between checkpoints")
    g.add_argument("--eval-marks", type=int, default=200,
                   help="held-out (val-split) brands for the copy-retrieval check at the end; 0 skips it")
    g.add_argument("--bn-batches", type=int, default=8,
                   help="batches used to recompute BatchNorm statistics at the end (precise BN); 0 skips")
    g.add_argument("--profile", action="store_true", help="measure data vs model images/s and exit")

    g = p.add_argument_group("model")
    g.add_argument("--input-size", type=int, default=128,
                   help="square input side (multiple of 32). 128 trains ~2x faster than 160 on one "
                        "core; 160 keeps small marks more legible once compute is not the limit")
    g.add_argument("--dim", type=int, default=256, help="embedding dimension")
    g.add_argument("--hidden", type=int, default=512, help="projection head hidden width")

    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=32,
                   help="instances per step (each gives 2 views). From scratch on CPU, more steps beat "
                        "more negatives per step")
    g.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate")
    g.add_argument("--weight-decay", type=float, default=0.05)
    g.add_argument("--warmup-steps", type=int, default=40)
    g.add_argument("--temperature", type=float, default=0.1,
                   help="InfoNCE temperature (SSCD uses 0.05 from a pretrained trunk; from scratch 0.1 learns sooner)")
    g.add_argument("--koleo-weight", type=float, default=1.0,
                   help="weight of the KoLeo entropy regulariser. SSCD uses 30 from a pretrained trunk; from "
                        "scratch, 10 spread the embeddings out before they learned anything")
    g.add_argument("--mixup", type=float, default=0.0,
                   help="probability that a second view gets a cutmix patch of another instance")

    g = p.add_argument_group("data")
    g.add_argument("--photos", default=None,
                   help="folder of real photos (instances and backgrounds); without it only logos "
                        "on generated backgrounds are used")
    g.add_argument("--photo-fraction", type=float, default=0.3, help="share of each batch that is photos")
    g.add_argument("--min-mark-fraction", type=float, default=0.25,
                   help="smallest mark side as a fraction of the picture side")
    g.add_argument("--mark-px", type=int, default=128, help="side of the pre-rendered mark squares")
    g.add_argument("--max-marks", type=int, default=None, help="use only the first N train brands (tests)")
    g.add_argument("--no-shared-augment", dest="shared_augment", action="store_false",
                   help="use the built-in augmentations even if brandguard.datasets.augment exists")
    g.add_argument("--cache-dir", default="data_cache", help="where rendered marks are cached")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    try:
        if args.profile:
            print(json.dumps(profile(cfg)))
            return 0
        res = train(cfg)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in asdict(res).items() if k != "config"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
