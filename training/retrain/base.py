"""``brandguard train base``: the base recipe (:mod:`brandguard.training.train`) into a model
registry as a new version, re-indexed with the deployment's references, optionally calibrated,
and judged by the regression gate before it may be promoted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from brandguard.errors import BrandguardError
from brandguard.inputs import ReferenceRow
from brandguard.registry import DEFAULT_DEPLOYMENT, WEIGHTS_FILE, Registry
from brandguard.training.checkpoint import save_weights
from brandguard.training.retrain.benchmark import regression_split
from brandguard.training.retrain.gate import GateConfig, run_gate
from brandguard.vision.bundle import Bundle


@dataclass
class BaseResult:
    version: str
    promoted: bool
    gate: dict[str, Any] | None
    train: dict[str, Any]
    timings: dict[str, float]


def train_base(registry: str, out: str, minutes: float, deployment: str = DEFAULT_DEPLOYMENT,
               train_args: Sequence[str] = (), promote: bool = False, regression: str | None = None,
               calibrate_split: str | None = None, threads: int = 1, cache_dir: str = "data_cache",
               gate: GateConfig = GateConfig(), log_to: Any = sys.stderr, force: bool = False) -> BaseResult:
    """The base recipe (``training/train.py``) into the registry as a new version.

    The current deployment's references are re-indexed with the new model (so the version is
    servable as is); ``calibrate_split`` sets its global thresholds; with ``promote`` the gate's
    regression rule must pass (there is no brand to be better for). A first version has nothing
    to be gated against: it is promoted only with ``force``, which the history records.
    """
    from brandguard.training.export import export_bundle
    from brandguard.training.loop import train
    from brandguard.training.train import build_parser, config_from_args

    reg = Registry(registry, create=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    args = build_parser().parse_args(["--out", str(Path(out) / "run"), "--minutes", str(minutes),
                                      "--threads", str(threads), *train_args])
    tres = train(config_from_args(args), log_to=log_to)
    timings["train"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    cand = Path(out) / "candidate"
    if cand.exists():
        shutil.rmtree(cand)
    export_bundle(tres.checkpoint, cand, threads=threads, log_to=log_to)
    from brandguard.training.checkpoint import model_from_checkpoint

    model, _ = model_from_checkpoint(tres.checkpoint)
    save_weights(model, cand / WEIGHTS_FILE)
    timings["export"] = round(time.perf_counter() - t, 1)
    current: Path | None = None
    parent_version = None
    try:
        parent_version = reg.current_version(deployment)
        current = reg.current(deployment)
    except BrandguardError:
        pass
    from brandguard.index.manifest import MANIFEST_FILE
    from brandguard.index.store import ReferenceIndex

    t = time.perf_counter()
    if current is not None and (current / MANIFEST_FILE).is_file():
        from brandguard.references import build_index
        from brandguard.engine.pipeline import Pipeline

        cb = Bundle.load(current)
        idx = ReferenceIndex.load(current, cb.card)
        rows = [ReferenceRow(r.reference_id, r.brand, str(current / r.source) if not Path(r.source).is_absolute()
                             else r.source, r.sku, r.kind) for r in idx.records()]
        idx.close()
        if rows:
            pipe = Pipeline.from_bundle(cand, threads=threads)
            build_index(pipe, rows, threads=threads)[0].close()
    if calibrate_split is not None:
        from brandguard.evaluation.calibration import run_calibration

        run_calibration(cand, Path(calibrate_split), threads=threads)
    timings["index_calibrate"] = round(time.perf_counter() - t, 1)
    report = None
    if current is not None:
        t = time.perf_counter()
        split = regression_split(regression, cache_dir, log_to=log_to)
        report = run_gate(cand, current, Path(out) / "gate", split, cfg=gate, cache_dir=reg.root / ".cache" / "gate",
                          log_to=log_to)
        timings["gate"] = round(time.perf_counter() - t, 1)
    version = reg.register(cand, parent=parent_version, metadata={
        "training_data": {"sources": tres.data_sources},
        "metrics": {"train": {"steps": tres.step, "final_loss": tres.final_loss, "eval": tres.eval}},
        "gate": report.to_dict() if report is not None else {},
        "notes": {"kind": "base"},
    })
    promoted = False
    if promote and report is not None and report.passed:
        reg.promote(version, deployment, note="base model")
        promoted = True
    elif promote and (report is None and force):
        reg.promote(version, deployment, note="base model, no gate: nothing to compare with", force=True)
        promoted = True
    elif promote:
        why = "there is no current version to gate it against" if report is None else \
            "the regression gate rejected it: " + "; ".join(report.reasons)
        print(f"warning: version {version} was registered but not promoted: {why}. Promote it anyway with "
              f"`brandguard registry promote {registry} {version} --force` (recorded).", file=log_to)
    return BaseResult(version, promoted, report.to_dict() if report else None, asdict(tres), timings)


# --------------------------------------------------------------------------- CLI


def add_parser(sub: Any) -> None:
    """``brandguard train base`` on the subparsers ``sub`` of ``brandguard train``."""
    p = sub.add_parser("base", help="run the base recipe (training/train.py) into the registry as a new version")
    p.add_argument("--registry", required=True)
    p.add_argument("--deployment", default=DEFAULT_DEPLOYMENT)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--out", default="runs/base")
    p.add_argument("--promote", action="store_true", help="promote if the regression gate passes")
    p.add_argument("--force", action="store_true",
                   help="with --promote and no current version to gate against: promote anyway (recorded)")
    p.add_argument("--regression", default=None)
    p.add_argument("--calibrate-split", default=None, help="labelled split for global thresholds (e.g. corpus val)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: options of training/train.py")
    p.set_defaults(train_func=_run_base)


def _run_base(args: argparse.Namespace) -> int:
    extra = [a for a in args.train_args if a != "--"]
    res = train_base(args.registry, args.out, args.minutes, args.deployment, extra, args.promote, args.regression,
                     args.calibrate_split, args.threads, force=args.force)
    print(json.dumps({"version": res.version, "promoted": res.promoted, "timings": res.timings,
                      "gate": res.gate["decision"] if res.gate else None}, indent=2))
    return 0
