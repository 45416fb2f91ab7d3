"""Quality: brandguard and the baselines on one DISC21-style benchmark, same metrics code.

Every method writes predictions (``query_id,reference_id,score``, top-k per query) and is
scored by ``brandguard.evaluation.metrics.evaluate`` — the same µAP / recall@P90 / recall@1 as
``brandguard eval`` — overall and per family. brandguard itself runs through
``brandguard.cli.main.main(["eval", ...])``, i.e. exactly the command a user runs.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench_common import ALL_METHODS, LABELS, BenchConfig, Dataset  # noqa: F401

HEADLINE = ("micro_ap", "recall_at_p90", "recall_at_1")


@dataclass(frozen=True)
class MethodQuality:
    """One method's scores on the benchmark (metrics are None without ground truth)."""

    method: str
    label: str
    seconds: float
    n_queries: int
    n_predictions: int
    overall: dict | None
    per_family: dict | None
    predictions: str
    notes: dict = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class PRCurve:
    """Micro (pooled) precision-recall points, as µAP integrates them."""

    recall: np.ndarray
    precision: np.ndarray


def pr_curve(preds: list, gt: dict[str, set[str]], queries: set[str] | None = None) -> PRCurve:
    """Pooled PR curve (brandguard.evaluation.metrics.pr_curve), optionally restricted to ``queries``."""
    from brandguard.evaluation.metrics import pr_curve as evaluation_pr_curve

    kept = preds if queries is None else [p for p in preds if p.query_id in queries]
    recall, precision = evaluation_pr_curve(kept, gt)
    return PRCurve(np.asarray(recall, float), np.asarray(precision, float))


def _orb_subset(ds: Dataset, n: int, seed: int = 0) -> list[str] | None:
    """A family-stratified query subset for ORB (documented in the output), or None for all."""
    from brandguard.evaluation.metrics import read_query_families
    from brandguard.inputs import list_images

    if n <= 0:
        return None
    qids = [q for q, _ in list_images(ds.queries)]
    if n >= len(qids):
        return None
    fams = read_query_families(ds.query_info) if ds.query_info else {}
    by_fam: dict[str, list[str]] = defaultdict(list)
    for q in qids:
        by_fam[fams.get(q, "all")].append(q)
    rng = random.Random(seed)
    out: list[str] = []
    for fam, qs in sorted(by_fam.items()):
        take = max(1, round(n * len(qs) / len(qids)))
        out += rng.sample(qs, min(take, len(qs)))
    return sorted(out)


def run_brandguard(ds: Dataset, cfg: BenchConfig, bundle: Path, out: Path, method: str = "brandguard",
                   verify_top: int = 0, depth: str = "fast") -> MethodQuality:
    """``brandguard eval`` as a user runs it; ``verify_top`` adds the fast path's keypoint check,
    ``depth`` picks the stages (fast, thorough, auto: the default of ``scan`` and ``eval``)."""
    from brandguard.cli.main import main as cli_main
    from brandguard.evaluation.metrics import read_predictions

    argv = ["eval", "--references", str(ds.references), "--queries", str(ds.queries), "--out", str(out),
            "--k", str(cfg.k), "--bundle", str(bundle), "--threads", str(cfg.threads), "--no-progress",
            "--verify-top", str(verify_top), "--depth", depth]
    if ds.ground_truth:
        argv += ["--ground-truth", str(ds.ground_truth)]
    if ds.query_info:
        argv += ["--query-info", str(ds.query_info)]
    t0 = time.perf_counter()
    rc = cli_main(argv)
    dt = time.perf_counter() - t0
    if rc != 0:
        return MethodQuality(method, LABELS[method], dt, 0, 0, None, None, "", error=f"exit code {rc}")
    preds = read_predictions(out / "predictions.csv")
    m = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else None
    return MethodQuality(method, LABELS[method], round(dt, 2), m["n_queries"] if m else
                         len({p.query_id for p in preds}), len(preds),
                         {k: m[k] for k in HEADLINE} if m else None, m.get("per_family") if m else None,
                         str(out / "predictions.csv"), {"model_sha256": m.get("model_sha256") if m else None})


def run_probe_method(ds: Dataset, cfg: BenchConfig, out: Path) -> MethodQuality:
    """The plain RootSIFT voting probe (benchmarks/bench_probe.py), scored like every method."""
    from bench_probe import run_probe

    from brandguard.evaluation.metrics import evaluate, read_ground_truth, read_predictions, read_query_families

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    notes = run_probe(ds.references, ds.queries, out / "predictions.csv", threads=cfg.threads)
    dt = time.perf_counter() - t0
    preds = read_predictions(out / "predictions.csv")
    from brandguard.inputs import list_images

    qids = [q for q, _ in list_images(ds.queries)]
    m = None
    if ds.ground_truth:
        m = evaluate(preds, read_ground_truth(ds.ground_truth), qids,
                     read_query_families(ds.query_info) if ds.query_info else None)
    return MethodQuality("rootsift_probe", LABELS["rootsift_probe"], round(dt, 2), len(qids), len(preds),
                         {k: m[k] for k in HEADLINE} if m else None, m.get("per_family") if m else None,
                         str(out / "predictions.csv"), notes)


def run_baseline_method(method: str, ds: Dataset, cfg: BenchConfig, out: Path) -> MethodQuality:
    from brandguard.datasets.baselines import OrbOptions, run_baseline

    subset = _orb_subset(ds, cfg.orb_max_queries) if method == "orb" else None
    t0 = time.perf_counter()
    r = run_baseline(method, None, out, cfg.k, references=ds.references, queries=ds.queries,
                     ground_truth=ds.ground_truth, query_info=ds.query_info, workers=cfg.threads,
                     orb=OrbOptions(shortlist=cfg.orb_shortlist), query_ids=subset)
    dt = time.perf_counter() - t0
    m = r.metrics
    notes = dict(r.notes)
    if m and "shortlist_recall" in m:
        notes["shortlist_recall"] = m["shortlist_recall"]
    if subset is not None:
        notes["query_subset"] = f"{len(subset)} queries, family-stratified, seed 0"
    n_preds = sum(1 for _ in open(r.predictions_path, encoding="utf-8")) - 1
    return MethodQuality(method, LABELS.get(method, method), round(dt, 2),
                         m["n_queries"] if m else notes.get("queries", 0), n_preds,
                         {k: m[k] for k in HEADLINE} if m else None, m.get("per_family") if m else None,
                         str(r.predictions_path), notes)


def run_quality(cfg: BenchConfig, ds: Dataset, bundle: Path, log=print) -> dict:  # noqa: ANN001
    """Every configured method on ``ds``; returns the ``quality`` section of results.json."""
    out = cfg.out / "quality"
    from brandguard.datasets.baselines import worker_pool

    results: list[MethodQuality] = []
    with worker_pool(cfg.threads):
        results = [_run_method(m, ds, cfg, bundle, out, log) for m in cfg.methods]
    figures = plot_pr_curves(results, ds, cfg.out) if ds.ground_truth else {}
    from brandguard.inputs import list_images

    return {
        "dataset": {"name": ds.name, "references": str(ds.references), "queries": str(ds.queries),
                    "ground_truth": str(ds.ground_truth) if ds.ground_truth else None,
                    "query_info": str(ds.query_info) if ds.query_info else None,
                    "n_references": len(list_images(ds.references)), "n_queries": len(list_images(ds.queries))},
        "k": cfg.k,
        "methods": {r.method: asdict(r) for r in results},
        "figures": figures,
    }


def _run_method(method: str, ds: Dataset, cfg: BenchConfig, bundle: Path, out: Path, log) -> MethodQuality:  # noqa: ANN001
    log(f"[quality] {method} …")
    try:
        if method == "brandguard":
            r = run_brandguard(ds, cfg, bundle, out / "brandguard")
        elif method == "brandguard_verified":
            r = run_brandguard(ds, cfg, bundle, out / "brandguard_verified", method, verify_top=3)
        elif method in ("brandguard_thorough", "brandguard_auto"):
            r = run_brandguard(ds, cfg, bundle, out / method, method, depth=method.split("_")[1])
        elif method == "rootsift_probe":
            r = run_probe_method(ds, cfg, out / method)
        else:
            r = run_baseline_method(method, ds, cfg, out)
    except Exception as exc:  # noqa: BLE001 - one broken method must not lose the others' numbers
        r = MethodQuality(method, LABELS.get(method, method), 0.0, 0, 0, None, None, "",
                          error=f"{type(exc).__name__}: {exc}")
    log(f"[quality] {method}: {r.overall} ({r.seconds:.1f}s)" + (f" ERROR {r.error}" if r.error else ""))
    return r


def plot_pr_curves(results: list[MethodQuality], ds: Dataset, out: Path) -> dict[str, str]:
    """PNG of pooled PR curves: overall, and one panel per family that has positives."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from brandguard.evaluation.metrics import read_ground_truth, read_predictions, read_query_families

    gt = read_ground_truth(ds.ground_truth)
    fams = read_query_families(ds.query_info) if ds.query_info else {}
    ok = [r for r in results if r.predictions and r.error is None]
    preds = {r.method: read_predictions(r.predictions) for r in ok}
    subsets = {r.method: {p.query_id for p in preds[r.method]} for r in ok}
    figures: dict[str, str] = {}
    palette = plt.get_cmap("tab10").colors
    others = [r.method for r in ok if not r.method.startswith("brandguard")]
    colours = ({m: palette[i % len(palette)] for i, m in enumerate(others)}
               | {"brandguard": "dimgray", "brandguard_verified": "black", "brandguard_thorough": "crimson",
                  "brandguard_auto": "darkorange"})

    def draw(ax, family: str | None) -> None:  # noqa: ANN001
        distractors = {q for q in fams if q not in gt}
        for r in ok:
            # a method run on a query subset (ORB) is scored against that subset's ground truth
            scope = subsets[r.method] if r.notes.get("query_subset") else None
            qs = None if family is None else {q for q, f in fams.items() if f == family} | distractors
            fam_gt = gt if family is None else {q: v for q, v in gt.items() if fams.get(q) == family}
            if scope is not None:
                fam_gt = {q: v for q, v in fam_gt.items() if q in scope}
            c = pr_curve(preds[r.method], fam_gt, qs)
            style = "-" if r.method.startswith("brandguard") else "--" if r.method in ("orb", "tiny") else ":"
            width = 2.4 if r.method.startswith("brandguard") else 1.3
            ax.plot(c.recall, c.precision, style, lw=width, color=colours[r.method], label=r.label + (" †" if r.notes.get("query_subset") else ""))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.axhline(0.9, color="grey", lw=0.5)
        ax.grid(alpha=0.3)

    fig, ax = plt.subplots(figsize=(7, 5.5))
    draw(ax, None)
    ax.set_title(f"Pooled (micro) precision-recall, {Path(ds.name).name or ds.name}")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    p = out / "pr_overall.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    figures["overall"] = str(p)

    pos_fams = sorted({fams[q] for q in gt if q in fams})
    if pos_fams:
        cols = 2
        rows = (len(pos_fams) + 1) // 2
        fig, axes = plt.subplots(rows, cols, figsize=(11, 4.2 * rows), squeeze=False)
        for i, fam in enumerate(pos_fams):
            draw(axes[i // cols][i % cols], fam)
            axes[i // cols][i % cols].set_title(f"{fam} (+ all distractors)")
        for j in range(len(pos_fams), rows * cols):
            axes[j // cols][j % cols].axis("off")
        axes[0][0].legend(fontsize=6, loc="upper right")
        fig.tight_layout()
        p = out / "pr_families.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        figures["per_family"] = str(p)
    return figures
