"""Per-brand retraining: fine-tune the serving model on one brand, re-index, recalibrate, gate,
register (and promote when the gate says so).

Why fine-tune rather than only index: the base model is trained self-supervised on generic
marks; a brand's own imagery (its ~100 references, the knockoffs its investigators confirmed)
is the best signal there is for *that* brand's copies and lookalikes. Why carefully: every other
brand is served by the same embedding, so the brand's gain must not cost them — the loss keeps
other brands' embeddings where the parent model put them (distillation), and the gate checks it.

Loss per step (B instances, two views each; views come from ``datasets.augment``):

- supervised contrastive over all 2B views: every view of the brand (copies of its references,
  logo-in-photo and *knockoff* renderings of its mark, confirmed-counterfeit listings) is a
  positive of every other brand view; each other-brand instance only of its own second view;
- ``distill`` x mean(1 - cos(student, parent)) on the other brands' views (their embeddings stay).

``head_only`` freezes the backbone (BatchNorm statistics stay frozen in both modes: batches of
brand views are not the distribution they were estimated on), which is ~3x cheaper per step and
leaves most of the space untouched by construction.

Where it starts (``resolve_parent``): the registry's current version (a ``--registry`` path that
does not exist yet is created with the shipped default model as v0001), or a ``--from`` bundle;
its torch weights are ``--weights``, its ``weights.pt``, or, for a bundle without them (the shipped
one), recovered from its ONNX file (``training.checkpoint.weights_from_onnx``); either way they
must reproduce the bundle's ONNX embeddings before anything is trained.

Feedback from the leads store (``--leads-db``): ``confirmed_counterfeit`` listings are extra
positives for the brand's imagery (half train the model, the other half calibrate its threshold);
``genuine`` and ``dismissed`` ones are hard negatives for the brand's threshold (calibration only: a genuine listing may show the real
mark, so it must not be pushed away from it).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from brandguard.artifacts import atomic_write_bytes
from brandguard.errors import InputError
from brandguard.inputs import ReferenceRow
from brandguard.registry import DEFAULT_DEPLOYMENT, WEIGHTS_FILE, Registry
from brandguard.training.checkpoint import save_weights
from brandguard.training.losses import supcon
from brandguard.training.retrain.benchmark import (
    BenchSource,
    build_brand_benchmark,
    imread_rgb,
    mark_from_reference,
    other_brand_sources,
    regression_split,
)
from brandguard.training.retrain.brand_data import (
    ViewSource,
    anchor_images,
    files_digest,
    read_brand_references,
    read_feedback,
    split_holdout,
)
from brandguard.training.retrain.gate import GateConfig, GateReport, run_gate
from brandguard.training.retrain.parent import Parent, load_parent_model, resolve_parent
from brandguard.training.retrain.progress import RunProgress, expect_stages
from brandguard.training.runlog import progress_text
from brandguard.vision.bundle import Bundle, write_bundle


@dataclass
class FinetuneConfig:
    """One brand onboarding / retraining run."""

    brand: str
    references: str
    out: str
    from_bundle: str | None = None
    registry: str | None = None
    deployment: str = DEFAULT_DEPLOYMENT
    weights: str | None = None  # torch weights of the parent (default: registry / bundle weights.pt)
    leads_db: str | None = None
    head_only: bool = False
    minutes: float = 4.0
    steps: int | None = None
    batch_size: int = 32
    brand_fraction: float = 0.4
    photo_fraction: float = 0.0  # share of other-brand instances that are plain photos (0.3 measured worse: it
    # pushed logo-in-photo views of the brand away with the photos)
    lr: float = 1e-3
    backbone_lr_scale: float = 0.2
    temperature: float = 0.1
    distill: float = 2.0
    holdout: float = 0.2
    bench_per_reference: int = 2  # queries per held-out reference and family in the gate's brand benchmark
    anchor_brands: int = 64
    view_side: int = 256
    regression: str | None = None
    cache_dir: str = "data_cache"
    gate: GateConfig = field(default_factory=GateConfig)
    target_precision: float = 0.95
    promote: bool = True
    seed: int = 0
    threads: int = 1

    def validate(self) -> None:
        from brandguard.cases.keys import validate_brand

        validate_brand(self.brand)
        if (self.from_bundle is None) == (self.registry is None):
            raise InputError("give exactly one of --from BUNDLE or --registry REG")
        if self.minutes <= 0 or (self.steps is not None and self.steps < 1):
            raise InputError("--minutes must be > 0 and --steps >= 1")
        if self.batch_size < 4 or not 0.05 <= self.brand_fraction <= 0.9:
            raise InputError("--batch-size >= 4 and brand fraction in [0.05, 0.9]")
        if not 0.0 < self.holdout < 0.9 or self.distill < 0 or self.threads < 1:
            raise InputError("--holdout in (0, 0.9), --distill >= 0, --threads >= 1")


@dataclass
class TuneStats:
    mode: str
    steps: int
    seconds: float
    images: int
    first_loss: float
    final_loss: float
    final_distill: float


@dataclass
class FinetuneResult:
    brand: str
    candidate: str
    parent_version: str | None
    version: str | None
    promoted: bool
    gate: dict[str, Any]
    timings: dict[str, float]
    tune: dict[str, Any]
    calibration: dict[str, Any]
    training_data: dict[str, Any]


# --------------------------------------------------------------------------- the loop


def _freeze_bn(model: Any) -> None:
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def _tune_progress(step: int, elapsed: float, cfg: FinetuneConfig) -> str:
    """``NN% ETA mm:ss`` of the fine-tune: it stops at ``cfg.steps`` or ``cfg.minutes``, whichever
    comes first, so the share done is the larger of the two and the time left the smaller."""
    budget = cfg.minutes * 60.0
    frac, remaining = elapsed / budget, budget - elapsed
    if cfg.steps:
        frac = max(frac, step / cfg.steps)
        remaining = min(remaining, elapsed / max(step, 1) * (cfg.steps - step))
    return progress_text(frac, elapsed, remaining)


def finetune_model(model: Any, views: ViewSource, cfg: FinetuneConfig, log_to: Any = sys.stderr) -> tuple[Any, TuneStats]:
    """Fine-tune ``model`` in place for ``cfg.minutes`` (or ``cfg.steps``); returns it and stats."""
    import torch
    import torch.nn.functional as F

    from brandguard.vision.preprocess import normalise_batch

    torch.manual_seed(cfg.seed)
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    head_params = list(model.head.parameters())
    if cfg.head_only:
        for p in list(model.backbone.parameters()) + list(model.pool.parameters()):
            p.requires_grad_(False)
        groups = [{"params": head_params, "lr": cfg.lr}]
    else:
        body = list(model.backbone.parameters()) + list(model.pool.parameters())
        groups = [{"params": head_params, "lr": cfg.lr}, {"params": body, "lr": cfg.lr * cfg.backbone_lr_scale}]
    for g in groups:
        g["base_lr"] = g["lr"]
    opt = torch.optim.AdamW(groups, weight_decay=1e-4)
    n_brand = max(2, round(cfg.batch_size * cfg.brand_fraction))
    n_anchor = max(2, cfg.batch_size - n_brand)
    budget = cfg.minutes * 60.0
    t0 = time.perf_counter()
    step, images = 0, 0
    first = last = last_d = float("nan")
    model.train()
    _freeze_bn(model)
    if cfg.head_only:
        model.backbone.eval()
    while True:
        elapsed = time.perf_counter() - t0
        if (cfg.steps is not None and step >= cfg.steps) or elapsed >= budget:
            break
        progress = step / cfg.steps if cfg.steps else elapsed / budget
        warm = min(1.0, (step + 1) / 5)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
        v, labels, is_anchor = views.batch(step, n_brand, n_anchor)
        x = torch.from_numpy(normalise_batch(v, views.card))
        lab = torch.from_numpy(np.concatenate([labels, labels]))
        anc = torch.from_numpy(np.concatenate([is_anchor, is_anchor]))
        if cfg.head_only:
            with torch.no_grad():
                feats = model.pool(model.backbone(x))
                t = F.normalize(teacher.head(feats[anc]), dim=1)
            z = F.normalize(model.head(feats), dim=1)
        else:
            z = model(x)
            with torch.no_grad():
                t = teacher(x[anc])
        l_sup = supcon(z, lab, cfg.temperature)
        l_dis = (1.0 - (z[anc] * t).sum(1)).mean()
        loss = l_sup + cfg.distill * l_dis
        if not torch.isfinite(loss):
            raise FloatingPointError(f"fine-tune loss became {loss.item()} at step {step}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 5.0)
        opt.step()
        step += 1
        images += len(v)
        last, last_d = float(loss.item()), float(l_dis.item())
        if math.isnan(first):
            first = last
        if step % 10 == 0:
            elapsed = time.perf_counter() - t0
            print(f"[finetune] step {step} loss {last:.4f} supcon {l_sup.item():.4f} distill {last_d:.4f} "
                  f"{images / elapsed:.0f} img/s {_tune_progress(step, elapsed, cfg)}", file=log_to, flush=True)
    model.eval()
    stats = TuneStats("head_only" if cfg.head_only else "full", step, round(time.perf_counter() - t0, 1), images,
                      round(first, 5), round(last, 5), round(last_d, 5))
    return model, stats


# --------------------------------------------------------------------------- export, index, calibrate


def export_candidate(model: Any, parent: Parent, dest: Path, cfg: FinetuneConfig, stats: TuneStats,
                     training_data: dict[str, Any], threads: int) -> Bundle:
    """ONNX export with ``training/export.py``'s checks (onnx checker, parity vs torch, copy sanity)."""
    from brandguard.training.export import check_parity, copy_sanity, export_onnx_bytes, ort_session, parity_images

    data = export_onnx_bytes(model, model.cfg.input_size)
    pc = parent.bundle.card
    card = replace(pc, sha256="0" * 64, version=f"{pc.version}+{cfg.brand}",
                   created_at=datetime.now(timezone.utc).replace(microsecond=0).isoformat())
    sess = ort_session(data, threads)
    imgs = parity_images(None, 16, cfg.seed)
    diff = check_parity(model, sess, card, imgs, 1e-3)
    sanity = copy_sanity(sess, card, 40, cfg.seed)
    training = {
        "method": f"per-brand fine-tune ({stats.mode}): supervised contrastive on the brand's references and "
                  f"copy/knockoff views + distillation to the parent on other brands",
        "parent_sha256": pc.sha256, "parent_name": pc.name, "brand": cfg.brand,
        "steps": stats.steps, "seconds": stats.seconds, "seed": cfg.seed, "lr": cfg.lr,
        "distill": cfg.distill, "temperature": cfg.temperature, "data": training_data,
        "base": pc.training,
    }
    metrics = {"parity_max_abs_diff": diff, "parity_images": len(imgs), "onnx_bytes": len(data),
               "sanity_copy_vs_different_logos": sanity}
    card = replace(card, training=training, metrics=metrics)
    if dest.exists():
        shutil.rmtree(dest)
    bundle = write_bundle(dest, data, card)
    save_weights(model, dest / WEIGHTS_FILE)
    return bundle


def reindex(candidate: Path, parent: Bundle, brand_rows: Sequence[ReferenceRow], threads: int) -> dict[str, Any]:
    """Index the parent's references (other brands; the brand's are replaced) + the brand's."""
    from brandguard.index.manifest import MANIFEST_FILE
    from brandguard.index.store import ReferenceIndex
    from brandguard.references import build_index
    from brandguard.engine.pipeline import Pipeline

    rows: list[ReferenceRow] = []
    if (parent.path / MANIFEST_FILE).is_file():
        idx = ReferenceIndex.load(parent.path, parent.card)
        try:
            for r in idx.records():
                if r.brand == brand_rows[0].brand:
                    continue
                src = Path(r.source) if Path(r.source).is_absolute() else parent.path / r.source
                rows.append(ReferenceRow(r.reference_id, r.brand, str(src), r.sku, r.kind))
        finally:
            idx.close()
    n_other = len(rows)
    rows.extend(brand_rows)
    pipe = Pipeline.from_bundle(candidate, threads=threads)
    index, rep = build_index(pipe, rows, threads=threads)
    index.close()
    return {"references": rep.indexed, "brands": rep.brands, "other_brand_references": n_other,
            "skipped": rep.skipped, "factory": rep.factory}


def calibrate_brand(candidate: Path, parent: Bundle, split: Path, brand: str, target: float,
                    threads: int) -> dict[str, Any]:
    """The brand's thresholds from its held-out views (and feedback); global ones kept."""
    from brandguard.evaluation.calibration import calibrate, judge_split
    from brandguard.engine.decide import CALIBRATION_FILE, BrandThresholds, Calibration
    from brandguard.engine.pipeline import Pipeline

    pipe = Pipeline.from_bundle(candidate, threads=threads)
    try:
        judged = judge_split(pipe, split, threads=threads)
    finally:
        if pipe.index is not None:
            pipe.index.close()
    base = Calibration.load(parent.path)
    cal, rep = calibrate(judged, target, min_inliers=base.min_inliers)
    positives_kept = rep["per_family"]
    n_true = sum(v["flagged_right_brand"] for v in positives_kept.values())
    per = dict(base.per_brand)
    if n_true > 0:
        per[brand] = BrandThresholds(copy=cal.copy, knockoff=cal.knockoff)
        note = "brand thresholds set"
    else:
        per.pop(brand, None)
        note = "no threshold reaches the target precision with any true flag: brand uses the global thresholds"
    out = replace(base, per_brand=per)
    atomic_write_bytes(candidate / CALIBRATION_FILE, out.to_json().encode())
    return {"brand": brand, "note": note, "thresholds": asdict(per[brand]) if brand in per else None,
            "global": {"copy": base.copy, "knockoff": base.knockoff, "method": base.method}, "report": rep}


# --------------------------------------------------------------------------- orchestration


def _png(path: Path, rgb: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"encoding failed for {path}")
    path.write_bytes(buf.tobytes())
    return str(path)


def benchmark_inputs(work: Path, cfg: FinetuneConfig) -> tuple[list[BenchSource], list[np.ndarray]]:
    """Other registered brands (train-split marks not used as anchors) and unregistered marks."""
    from brandguard.datasets.augment.views import reference_views

    rng = np.random.default_rng([cfg.seed, 4321])
    others: list[BenchSource] = []
    for slug, mark in other_brand_sources(30, cfg.seed, cfg.cache_dir, skip=cfg.anchor_brands, size=128,
                                         exclude=cfg.brand):
        views = reference_views(rng, mark, size=256)
        for name in ("logo_clean", "logo_product"):
            others.append(BenchSource(f"{slug}/{name}", _png(work / "other_refs" / slug / f"{name}.png", views[name])))
    unreg = [m for _s, m in other_brand_sources(12, cfg.seed, cfg.cache_dir, skip=cfg.anchor_brands + 30,
                                                 size=128, exclude=cfg.brand)]
    return others, unreg


# Seconds per image, one thread on the shared 2-core development machine: only to tell the person
# waiting how long the stages without progress of their own will take.
def _index_size(bundle: Bundle) -> int:
    """References in a bundle's index (0 without one): what a re-index has to embed again."""
    from brandguard.index.manifest import MANIFEST_FILE
    from brandguard.index.store import ReferenceIndex

    if not (bundle.path / MANIFEST_FILE).is_file():
        return 0
    idx = ReferenceIndex.load(bundle.path, bundle.card)
    try:
        return len(idx)
    finally:
        idx.close()


def onboard_brand(cfg: FinetuneConfig, log_to: Any = sys.stderr) -> FinetuneResult:
    """Fine-tune → export → index → calibrate → gate → register (→ promote)."""
    import torch

    cfg.validate()
    torch.set_num_threads(cfg.threads)
    cv2.setNumThreads(1)
    run = RunProgress(log_to)
    timings, lap = run.timings, run.lap

    # The inputs first: a wrong path must not leave a new registry behind.
    rows = read_brand_references(cfg.references, cfg.brand)
    feedback = read_feedback(cfg.leads_db, cfg.brand)
    train_rows, held_rows = split_holdout(rows, cfg.holdout, cfg.seed)
    work = Path(cfg.out)
    work.mkdir(parents=True, exist_ok=True)
    parent = resolve_parent(cfg, log_to)
    model = load_parent_model(parent, log_to=log_to)
    n_other = _index_size(parent.bundle)
    ref_ids = {r.reference_id for r in rows}
    ref_path = {r.reference_id: r.path for r in rows}
    training_data = {
        "brand": cfg.brand,
        "references": len(rows), "references_train": len(train_rows), "references_heldout": len(held_rows),
        "references_sha256": files_digest([r.path for r in rows]),
        "heldout_ids": [r.reference_id for r in held_rows],
        "feedback_positive": len(feedback.positives), "feedback_negative": len(feedback.negatives),
        "feedback_lead_ids_sha256": hashlib.sha256(json.dumps(feedback.lead_ids).encode()).hexdigest(),
        "feedback_sha256": files_digest([p for p, _ in feedback.positives] + [p for p, _ in feedback.negatives]),
    }
    expect_stages(run, cfg, len(rows), n_other, len(held_rows), len(feedback.positives) + len(feedback.negatives))
    lap("load")

    # The regression benchmark first: building it (once) is the longest step before the fine-tune.
    reg_split = regression_split(cfg.regression, cfg.cache_dir, cfg.seed, log_to=log_to)
    lap("regression")
    # Then the brand's benchmarks: they only depend on the references, and the brand's is also
    # what the gate scores the current model on.
    others, unreg = benchmark_inputs(work, cfg)
    brand_src = [BenchSource(r.reference_id, r.path) for r in rows]
    held_src = [BenchSource(r.reference_id, r.path) for r in held_rows]
    bench = build_brand_benchmark(work / "brand_benchmark", cfg.brand, brand_src, held_src, others, unreg,
                                  seed=cfg.seed + 1, per_reference=cfg.bench_per_reference,
                                  distractors=24 * cfg.bench_per_reference)
    first_ref = rows[0].reference_id
    # Confirmed counterfeits either train the model or calibrate its threshold, never both:
    # calibrating on training data would overstate the brand's precision.
    train_pos = [(p, rid) for p, rid in feedback.positives
                 if int(hashlib.sha1(f"{cfg.seed}:{p}".encode()).hexdigest(), 16) % 2 == 0]
    calib_pos = [x for x in feedback.positives if x not in train_pos]
    training_data["feedback_split"] = {"train_positives": len(train_pos), "calibration_positives": len(calib_pos)}
    extra = [(p, "feedback_counterfeit", rid if rid in ref_ids else first_ref) for p, rid in calib_pos]
    extra += [(p, f"feedback_{status}", "") for p, status in feedback.negatives]
    calib = build_brand_benchmark(work / "calibration_split", cfg.brand, brand_src, held_src, others, unreg,
                                  seed=cfg.seed + 101, extra_queries=extra)
    lap("benchmarks")

    anchors, anchor_desc = anchor_images(parent.bundle, cfg.brand, cfg.anchor_brands, cfg.seed, cfg.cache_dir,
                                         cfg.view_side)
    brand_imgs = [imread_rgb(r.path, keep_alpha=True) for r in train_rows]
    marks = [mark_from_reference(im) for im in brand_imgs]
    from brandguard.datasets.augment.ops import ensure_rgb, resize_max

    brand_rgb = [resize_max(ensure_rgb(im), cfg.view_side) for im in brand_imgs]
    marks = [None if m is None else resize_max(m, cfg.view_side // 2) for m in marks]
    counterfeit = [(resize_max(ensure_rgb(imread_rgb(ref_path.get(rid or "", train_rows[0].path))), cfg.view_side),
                    resize_max(ensure_rgb(imread_rgb(p)), cfg.view_side)) for p, rid in train_pos]
    training_data["anchors"] = anchor_desc
    views = ViewSource(brand_rgb, marks, counterfeit, anchors, unreg[:4], parent.bundle.card, cfg.view_side, cfg.seed,
                       cfg.photo_fraction)
    lap("views_setup")

    model, stats = finetune_model(model, views, cfg, log_to)
    lap("finetune")
    candidate = work / "candidate"
    export_candidate(model, parent, candidate, cfg, stats, training_data, cfg.threads)
    lap("export")
    with run.ticking("index", f"embedding and indexing {len(rows)} references of {cfg.brand} and "
                              f"{n_other} of other brands with the candidate"):
        index_rep = reindex(candidate, parent.bundle, rows, cfg.threads)
    lap("index")
    with run.ticking("calibrate", f"setting {cfg.brand}'s thresholds on its calibration split"):
        cal_rep = calibrate_brand(candidate, parent.bundle, calib, cfg.brand, cfg.target_precision, cfg.threads)
    lap("calibrate")

    cache = Path(cfg.registry) / ".cache" / "gate" if cfg.registry else work / "gate_cache"
    gate_cfg = replace(cfg.gate, threads=cfg.threads)
    report = run_gate(candidate, parent.bundle.path, candidate / "gate", reg_split, brand=cfg.brand,
                      brand_benchmark=bench, cfg=gate_cfg, cache_dir=cache, log_to=log_to)
    lap("gate")
    print(f"[onboard] gate {report.decision}: " + "; ".join(report.reasons), file=log_to, flush=True)

    version, promoted = None, False
    if cfg.registry is not None and report.passed:
        reg = Registry(cfg.registry)
        version = reg.register(candidate, parent=parent.version, metadata={
            "training_data": training_data,
            "metrics": {"gate": _gate_metrics(report), "tune": asdict(stats), "index": index_rep},
            "gate": report.to_dict(),
            "notes": {"brand": cfg.brand, "calibration": {k: v for k, v in cal_rep.items() if k != "report"}},
        })
        if cfg.promote:
            reg.promote(version, cfg.deployment, note=f"brand {cfg.brand}: " + "; ".join(report.reasons))
            promoted = True
        lap("register")
    timings["total"] = round(time.perf_counter() - run.t0, 1)
    result = FinetuneResult(cfg.brand, str(candidate), parent.version, version, promoted, report.to_dict(),
                            timings, {**asdict(stats), "index": index_rep},
                            {k: v for k, v in cal_rep.items() if k != "report"}, training_data)
    atomic_write_bytes(work / "result.json", (json.dumps(asdict(result), indent=2, sort_keys=True, default=str) + "\n").encode())
    return result


def _gate_metrics(report: GateReport) -> dict[str, Any]:
    return {name: {side: {"micro_ap": b[side].micro_ap, "recall_at_1": b[side].recall_at_1}
                   for side in ("candidate", "current")} for name, b in report.benchmarks.items()}


# --------------------------------------------------------------------------- CLI


def add_parser(sub: Any) -> None:
    """``brandguard train brand`` on the subparsers ``sub`` of ``brandguard train``."""
    p = sub.add_parser("brand", help="fine-tune the serving model for one brand, gate it, register/promote it",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("brand")
    p.add_argument("--references", required=True, help="DIR/<brand>/*.png, DIR/*.png, or a references file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from", dest="from_bundle",
                     help="bundle to fine-tune (its weights.pt or --weights; else recovered from its model.onnx)")
    src.add_argument("--registry", help="model registry: fine-tune its deployment's current version (a path that "
                     "does not exist yet becomes a registry whose v0001 is the shipped default model)")
    p.add_argument("--deployment", default=DEFAULT_DEPLOYMENT)
    p.add_argument("--weights", default=None, help="torch weights of the parent model (checked against its ONNX)")
    p.add_argument("--leads-db", default=None, help="leads store: the brand's feedback labels")
    p.add_argument("--head-only", action="store_true", help="train only the projection head (backbone frozen)")
    p.add_argument("--minutes", type=float, default=4.0, help="fine-tuning budget (default %(default)s)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--distill", type=float, default=2.0, help="weight of the other-brands distillation loss")
    p.add_argument("--out", default=None, help="work folder (default runs/brand-<BRAND>)")
    p.add_argument("--regression", default=None,
                   help="regression benchmark split (default: data_cache/corpus_std/val if built, else the standard "
                        "corpus's val split, built once into data_cache/corpus_gate_standard_s0 in under a minute)")
    p.add_argument("--tolerance", type=float, default=0.01, help="allowed regression µAP drop")
    p.add_argument("--min-brand-gain", type=float, default=0.0)
    p.add_argument("--no-promote", action="store_true", help="register a passing candidate without promoting it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(train_func=_run_brand)


def _run_brand(args: argparse.Namespace) -> int:
    cfg = FinetuneConfig(
        brand=args.brand, references=args.references, out=args.out or f"runs/brand-{args.brand}",
        from_bundle=args.from_bundle, registry=args.registry, deployment=args.deployment, weights=args.weights,
        leads_db=args.leads_db, head_only=args.head_only, minutes=args.minutes, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, distill=args.distill, regression=args.regression,
        gate=GateConfig(tolerance=args.tolerance, min_brand_gain=args.min_brand_gain, threads=args.threads),
        promote=not args.no_promote, seed=args.seed, threads=args.threads)
    res = onboard_brand(cfg)
    print(json.dumps({"brand": res.brand, "decision": res.gate["decision"], "reasons": res.gate["reasons"],
                      "version": res.version, "promoted": res.promoted, "timings": res.timings,
                      "report": str(Path(res.candidate) / "gate" / "gate_report.md")}, indent=2))
    return 0 if res.gate["decision"] == "promote" else 4
