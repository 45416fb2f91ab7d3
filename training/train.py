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
import json
import sys
from dataclasses import asdict, dataclass, fields
from typing import Sequence

from brandguard.errors import InputError
from brandguard.training.loop import profile, train

# This module is the recipe's config (``TrainConfig``) and its command line (the docstring above
# is its --help); the loop is brandguard.training.loop, the losses brandguard.training.losses.


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
                   help="use training/data.py's built-in augmentations instead of brandguard.datasets.augment "
                        "(the ablation's baseline)")
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
