"""Evaluation gate: a retrained bundle is promoted only if it is better for its brand and not
worse for everyone else.

Why two benchmarks: a per-brand fine-tune can buy the brand's recall by bending the embedding
space under the other brands' references. So the candidate and the bundle it would replace are
both run (real pipeline: ONNX Runtime, region search, FAISS) over

(a) the brand's benchmark, generated from its references with the corpus augmentation families
    (copy_light, copy_strong, logo_in_photo, knockoff) plus distractors (photos and unregistered
    marks), scored at the *brand* level (a query's predictions collapse to the best score per
    brand; the true pair is (query, brand)): with ~100 near-identical references of one mark,
    "which brand" is the decision the verdict makes, not "which of its 100 images";
(b) a fixed cross-brand regression benchmark (``data_cache/corpus_std/val`` when present, else
    the same standard val split built once, deterministically, by ``benchmark.regression_split``),
    scored with the standard image-level µAP of DISC21.

Rules (``GateConfig``): promote iff brand µAP(candidate) >= brand µAP(current) + ``min_brand_gain``
and strictly greater (or both at the ceiling), and regression µAP(candidate) >=
regression µAP(current) - ``tolerance``. The report is written as JSON, a Markdown table and a
PNG of the PR curves. Torch-free: it only compares exported bundles. The benchmarks themselves
are written by :mod:`brandguard.training.retrain.benchmark`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from brandguard.artifacts import atomic_write_bytes
from brandguard.errors import BrandguardError, InputError
from brandguard.evaluation.metrics import Prediction, evaluate, read_ground_truth, read_query_families
from brandguard.evaluation.metrics import pr_curve as evaluation_pr_curve
from brandguard.inputs import list_images
from brandguard.training.runlog import progress_text

REPORT_JSON = "gate_report.json"
REPORT_MD = "gate_report.md"
REPORT_PNG = "gate_pr_curves.png"


class GateError(BrandguardError):
    """The gate could not run (missing benchmark, unreadable bundle...)."""


@dataclass(frozen=True)
class GateConfig:
    """Promotion rules and evaluation settings."""

    tolerance: float = 0.01  # allowed regression-µAP drop
    min_brand_gain: float = 0.0  # required brand-µAP gain (on top of "strictly better")
    ceiling: float = 0.999  # both at or above: "not worse" is enough for the brand
    k: int = 10
    threads: int = 1
    region_mode: str = "full"

    def validate(self) -> None:
        if not 0 <= self.tolerance < 1 or self.min_brand_gain < 0 or self.k < 1:
            raise InputError("gate: tolerance in [0,1), min_brand_gain >= 0, k >= 1")


@dataclass
class BenchScore:
    """One bundle on one benchmark."""

    micro_ap: float
    recall_at_p90: float
    recall_at_1: float
    n_queries: int
    level: str  # "brand" or "image"
    per_family: dict[str, Any] = field(default_factory=dict)
    model_sha256: str = ""
    pr: dict[str, list[float]] = field(default_factory=dict)  # precision/recall points, for the plot


@dataclass
class GateReport:
    decision: str  # "promote" | "reject"
    reasons: list[str]
    brand: str | None
    candidate_sha256: str
    current_sha256: str
    config: dict[str, Any]
    benchmarks: dict[str, dict[str, Any]]  # name -> {"candidate": BenchScore, "current": BenchScore, "split": str}
    files: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.decision == "promote"

    def to_dict(self, with_curves: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_curves:
            for b in d["benchmarks"].values():
                for side in ("candidate", "current"):
                    if isinstance(b.get(side), dict):
                        b[side].pop("pr", None)
        return d


# --------------------------------------------------------------------------- scoring


def pr_curve(predictions: Sequence[Prediction], gt: dict[str, set[str]], max_points: int = 400) -> dict[str, list[float]]:
    """Pooled precision/recall after each prediction (as µAP sees them), downsampled."""
    recall, precision = evaluation_pr_curve(predictions, gt, max_points)
    return {"precision": [round(x, 5) for x in precision], "recall": [round(x, 5) for x in recall]}


def to_brand_level(predictions: Sequence[Prediction], gt: dict[str, set[str]]) -> tuple[list[Prediction], dict[str, set[str]]]:
    """Collapse (query, reference) predictions to (query, brand) with the best score; brand = the
    reference id's first path component."""
    best: dict[tuple[str, str], float] = {}
    for p in predictions:
        key = (p.query_id, p.reference_id.split("/")[0])
        if key not in best or p.score > best[key]:
            best[key] = p.score
    preds = [Prediction(q, b, s) for (q, b), s in best.items()]
    bgt = {q: {r.split("/")[0] for r in refs} for q, refs in gt.items()}
    return preds, bgt


def split_fingerprint(split_dir: Path) -> str:
    """Identifies a benchmark's content cheaply: its CSVs and its file list with sizes."""
    h = hashlib.sha256()
    for name in ("ground_truth.csv", "queries.csv"):
        p = split_dir / name
        if p.is_file():
            h.update(p.read_bytes())
    for sub in ("references", "queries"):
        for ident, path in list_images(split_dir / sub):
            h.update(f"{sub}/{ident}:{path.stat().st_size}\n".encode())
    return h.hexdigest()


def score_bundle(bundle_dir: Path, split_dir: Path, level: str, cfg: GateConfig,
                 cache_dir: Path | None = None) -> BenchScore:
    """Run one bundle over one benchmark split (cached by model sha256 + split fingerprint)."""
    from brandguard.evaluation.predictions import predict
    from brandguard.vision.bundle import Bundle
    from brandguard.engine.pipeline import Pipeline

    if level not in ("brand", "image"):
        raise InputError(f"level must be brand or image, got {level!r}")
    card = Bundle.load(bundle_dir).card
    key = None
    if cache_dir is not None:
        key = hashlib.sha256(f"{card.sha256}|{split_fingerprint(split_dir)}|{level}|{cfg.k}|{cfg.region_mode}|fast".encode()
                             ).hexdigest()[:32]
        cached = cache_dir / f"{key}.json"
        if cached.is_file():
            return BenchScore(**json.loads(cached.read_text()))
    # The gate judges the global model being trained: the local stage does not change with it and
    # would blur the comparison, so both bundles are measured at fast depth.
    pipe = Pipeline.from_bundle(bundle_dir, threads=cfg.threads, region_mode=cfg.region_mode, depth="fast")
    try:
        run = predict(pipe, split_dir / "references", split_dir / "queries", k=cfg.k)
    finally:
        if pipe.index is not None:
            pipe.index.close()
    gt = read_ground_truth(split_dir / "ground_truth.csv")
    fams = read_query_families(split_dir / "queries.csv") if (split_dir / "queries.csv").is_file() else None
    preds = run.predictions
    if level == "brand":
        preds, gt = to_brand_level(preds, gt)
    m = evaluate(preds, gt, run.query_ids, fams)
    score = BenchScore(micro_ap=m["micro_ap"], recall_at_p90=m["recall_at_p90"], recall_at_1=m["recall_at_1"],
                       n_queries=m["n_queries"], level=level, per_family=m.get("per_family", {}),
                       model_sha256=card.sha256, pr=pr_curve(preds, gt))
    if key is not None and cache_dir is not None:
        atomic_write_bytes(cache_dir / f"{key}.json", json.dumps(asdict(score)).encode())
    return score


# --------------------------------------------------------------------------- the gate


def gate_decision(brand_scores: tuple[BenchScore, BenchScore] | None, regression: tuple[BenchScore, BenchScore],
           cfg: GateConfig) -> tuple[str, list[str]]:
    """Apply the rules to (candidate, current) scores; returns (decision, reasons)."""
    reasons: list[str] = []
    ok = True
    if brand_scores is not None:
        cand, cur = brand_scores
        gain = cand.micro_ap - cur.micro_ap
        at_ceiling = cand.micro_ap >= cfg.ceiling and cur.micro_ap >= cfg.ceiling
        better = (gain > 0 and gain >= cfg.min_brand_gain) or at_ceiling
        reasons.append(f"brand µAP {cur.micro_ap:.4f} -> {cand.micro_ap:.4f} ({gain:+.4f}): "
                       + ("better" if better else f"not better (needs > 0 and >= {cfg.min_brand_gain:+.4f})"))
        ok &= better
    cand, cur = regression
    drop = cur.micro_ap - cand.micro_ap
    kept = drop <= cfg.tolerance + 1e-12
    reasons.append(f"regression µAP {cur.micro_ap:.4f} -> {cand.micro_ap:.4f} ({-drop:+.4f}): "
                   + ("within tolerance" if kept else f"drops more than {cfg.tolerance:.4f}"))
    ok &= kept
    return ("promote" if ok else "reject"), reasons


def _split_images(split_dir: Path) -> int:
    return sum(len(list_images(split_dir / sub)) for sub in ("references", "queries"))


def run_gate(candidate: str | os.PathLike[str], current: str | os.PathLike[str], out: str | os.PathLike[str],
             regression: str | os.PathLike[str], brand: str | None = None,
             brand_benchmark: str | os.PathLike[str] | None = None, cfg: GateConfig = GateConfig(),
             cache_dir: str | os.PathLike[str] | None = None, log_to: Any = None) -> GateReport:
    """Score both bundles, decide, and write the report (JSON, Markdown, PNG) into ``out``.

    With ``log_to``, one line per scored (bundle, benchmark) with ``NN% ETA mm:ss`` of the gate,
    weighted by the images each scoring embeds."""
    from brandguard.vision.bundle import Bundle

    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cand_b, cur_b = Bundle.load(candidate), Bundle.load(current)
    cache = Path(cache_dir) if cache_dir is not None else None
    jobs: list[tuple[str, Path, str]] = []
    if brand_benchmark is not None:
        jobs.append(("brand", Path(brand_benchmark), "brand"))
    jobs.append(("regression", Path(regression), "image"))
    sizes = {split: _split_images(split) for _, split, _ in jobs} if log_to is not None else {}
    total = 2 * sum(sizes.values())
    done, t0 = 0, time.perf_counter()
    scores: dict[tuple[str, str], BenchScore] = {}
    for name, split, level in jobs:
        for side, b in (("candidate", cand_b), ("current", cur_b)):
            t = time.perf_counter()
            scores[(name, side)] = score_bundle(b.path, split, level, cfg, cache)
            if log_to is not None:
                done += sizes[split]
                took = time.perf_counter() - t
                print(f"[gate] {name} benchmark, {side}: µAP {scores[(name, side)].micro_ap:.4f} on "
                      f"{sizes[split]} images in {took:.1f}s  {progress_text(done / total, time.perf_counter() - t0)}",
                      file=log_to, flush=True)
    benches: dict[str, dict[str, Any]] = {}
    brand_pair = None
    if brand_benchmark is not None:
        brand_pair = (scores[("brand", "candidate")], scores[("brand", "current")])
        benches["brand"] = {"split": str(Path(brand_benchmark)), "candidate": brand_pair[0], "current": brand_pair[1]}
    reg_pair = (scores[("regression", "candidate")], scores[("regression", "current")])
    benches["regression"] = {"split": str(Path(regression)), "candidate": reg_pair[0], "current": reg_pair[1]}
    decision, reasons = gate_decision(brand_pair, reg_pair, cfg)
    report = GateReport(decision=decision, reasons=reasons, brand=brand, candidate_sha256=cand_b.card.sha256,
                        current_sha256=cur_b.card.sha256, config=asdict(cfg), benchmarks=benches)
    report.files = {"json": str(out / REPORT_JSON), "markdown": str(out / REPORT_MD), "png": str(out / REPORT_PNG)}
    atomic_write_bytes(out / REPORT_JSON, (json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str) + "\n").encode())
    atomic_write_bytes(out / REPORT_MD, markdown_report(report).encode("utf-8"))
    plot_pr(report, out / REPORT_PNG)
    return report


def markdown_report(report: GateReport) -> str:
    """A table a reviewer can read in a pull request or a ticket."""
    lines = [f"# Gate: **{report.decision.upper()}**" + (f" — brand `{report.brand}`" if report.brand else ""), "",
             f"candidate `{report.candidate_sha256[:12]}` vs current `{report.current_sha256[:12]}`", "",
             "| benchmark | level | metric | current | candidate | Δ |", "|---|---|---|---:|---:|---:|"]
    for name, b in report.benchmarks.items():
        cand, cur = b["candidate"], b["current"]
        for metric in ("micro_ap", "recall_at_p90", "recall_at_1"):
            c, p = getattr(cand, metric), getattr(cur, metric)
            lines.append(f"| {name} (n={cand.n_queries}) | {cand.level} | {metric} | {p:.4f} | {c:.4f} | {c - p:+.4f} |")
        for fam in sorted(set(cand.per_family) & set(cur.per_family)):
            c, p = cand.per_family[fam].get("micro_ap"), cur.per_family[fam].get("micro_ap")
            if c is not None and p is not None:
                lines.append(f"| {name} | {cand.level} | µAP {fam} | {p:.4f} | {c:.4f} | {c - p:+.4f} |")
    lines += ["", "Rules:", ""] + [f"- {r}" for r in report.reasons]
    c = report.config
    lines += ["", f"(tolerance {c['tolerance']}, min brand gain {c['min_brand_gain']}, k {c['k']}, "
                  f"regions {c['region_mode']})", ""]
    return "\n".join(lines)


def plot_pr(report: GateReport, png: Path) -> None:
    """PR curves of candidate and current on each benchmark (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report.benchmarks)
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), dpi=100, squeeze=False)
    for ax, name in zip(axes[0], names):
        b = report.benchmarks[name]
        for side, style in (("current", "--"), ("candidate", "-")):
            s: BenchScore = b[side]
            ax.plot(s.pr.get("recall", []), s.pr.get("precision", []), style, lw=1.6,
                    label=f"{side} µAP {s.micro_ap:.3f}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"{name} ({b['candidate'].level}-level, {b['candidate'].n_queries} queries)")
        ax.legend(loc="lower left")
        ax.grid(alpha=0.3)
    fig.suptitle(f"gate: {report.decision}" + (f" — {report.brand}" if report.brand else ""))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(png, buf.getvalue())
