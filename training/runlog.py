"""What a training run records in its folder besides the checkpoint: one CSV row per step
(``log.csv``), the loss plot (``loss.png``), the summary (``summary.json``, written by the loop),
and the portable names of its data sources (for model cards); and what it tells the person
waiting for it (``progress_text``: ``NN% ETA mm:ss`` on the log lines of long steps).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

LOG_NAME = "log.csv"
PLOT_NAME = "loss.png"
SUMMARY_NAME = "summary.json"
LOG_FIELDS = ("step", "elapsed_s", "lr", "loss", "infonce", "koleo", "pos_sim", "data_wait_s", "compute_s")


def portable_name(path: str | os.PathLike[str]) -> str:
    """Last two components of a path: enough to name a data source without leaking the
    machine's directory layout into model cards."""
    parts = Path(path).resolve().parts
    return "/".join(parts[-2:])


def clock(seconds: float) -> str:
    """``mm:ss`` (``h:mm:ss`` past an hour): how long steps and ETAs are written in the logs."""
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


def progress_text(fraction: float, elapsed_s: float, remaining_s: float | None = None) -> str:
    """``NN% ETA mm:ss`` for a step that is ``fraction`` done after ``elapsed_s``: the time left is
    ``remaining_s`` when the caller knows it (a time budget), else extrapolated from the rate so far."""
    f = min(1.0, max(0.0, fraction))
    if remaining_s is None:
        remaining_s = elapsed_s * (1.0 - f) / f if f > 0 else float("nan")
    eta = clock(remaining_s) if remaining_s == remaining_s else "--:--"
    return f"{int(f * 100):3d}% ETA {eta}"


def read_log(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def truncate_log(path: Path, last_step: int) -> None:
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
