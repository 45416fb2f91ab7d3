"""The base recipe's training loop (``train``) and what runs around it: the learning-rate
schedule, precise BatchNorm at the end, the held-out copy-retrieval check, and ``profile``
(data side vs model step). The recipe itself, its config and its command line are in
:mod:`brandguard.training.train`.

A run is bounded by wall-clock time and/or steps, checkpoints to ``OUT/ckpt.pt``
(:mod:`~brandguard.training.checkpoint`), logs every step to ``OUT/log.csv`` and plots
``OUT/loss.png`` (:mod:`~brandguard.training.runlog`). SIGINT/SIGTERM save a checkpoint and stop.
"""

from __future__ import annotations

import csv
import json
import math
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from brandguard.errors import InputError
from brandguard.training.checkpoint import CKPT_NAME, load_checkpoint, save_checkpoint
from brandguard.training.data import (
    MEAN,
    STD,
    ViewConfig,
    ViewMaker,
    list_photos,
    load_marks,
    make_loader,
    to_model_input,
)
from brandguard.training.losses import cutmix_views, info_nce, koleo
from brandguard.training.runlog import (
    LOG_FIELDS,
    LOG_NAME,
    PLOT_NAME,
    SUMMARY_NAME,
    plot_log,
    portable_name,
    truncate_log,
)

if TYPE_CHECKING:
    from brandguard.training.train import TrainConfig


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


# --------------------------------------------------------------------------- schedule


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up for ``warmup_steps``, then cosine decay to 2% over ``progress`` in [0,1]."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = min(1.0, max(0.0, progress))
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * p)))


# --------------------------------------------------------------------------- evaluation


def embed_uint8(model: Any, images: np.ndarray, device: str = "cpu", batch: int = 128) -> np.ndarray:
    """N x S x S x 3 uint8 (already model-sized) -> N x D float32 embeddings."""
    import torch

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
        truncate_log(log_path, step)  # rows logged after the last checkpoint are redone
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
