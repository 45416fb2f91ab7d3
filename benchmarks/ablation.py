"""Training ablation: what each ingredient of the default recipe adds, on brands never trained on.

Every variant trains the same number of steps from the same seed (a step budget, not a time
budget: a busy machine then changes how long a run takes, never what it learns), is exported
with the parity check, and is scored by ``brandguard eval`` on the standard corpus's test split.
Scores are the raw embedding's (no score background, no keypoint verification), so variants
compare like for like; the inference-side ingredients (background normalisation, grid regions,
keypoint verification) are measured on the shipped model and listed below the training rows.

    python benchmarks/ablation.py                  # every variant, 800 steps each (~45 min on 2 cores)
    python benchmarks/ablation.py --steps 3000 --variants baseline no_koleo
    python benchmarks/ablation.py --report-only    # rewrite docs/ABLATION.md from the results file

Outputs: ``OUT/results.json`` (per variant: config, steps, minutes, metrics), each variant's run
folder and bundle under ``OUT/<variant>/``, ``docs/ABLATION.md`` and a copy of the results in
``docs/bench/ablation_results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from brandguard.evaluation.families import MARK_FAMILIES

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PHOTOS = REPO.parent / "shared" / "data" / "clothing-photos" / "train"
DEFAULT_SPLIT = REPO / "data_cache" / "corpus_std" / "test"


@dataclass(frozen=True)
class Variant:
    name: str
    what: str
    args: tuple[str, ...]  # extra training arguments on top of the recipe
    photos: bool = True


# The default recipe (what `make train` runs): InfoNCE over two views + KoLeo 1.0, real photos as
# 30% of each batch, the corpus's seller edits as augmentations, marks down to 25% of the picture.
VARIANTS = (
    Variant("baseline", "the default recipe (`make train`, fewer steps)", ()),
    Variant("no_koleo", "without the KoLeo entropy regulariser", ("--koleo-weight", "0")),
    Variant("no_photos", "marks on generated backgrounds only (no real photos)", (), photos=False),
    Variant("cutmix", "+ SSCD-style mixing: cutmix patch of another instance in 30% of second views",
            ("--mixup", "0.3")),
    Variant("big_marks_only", "marks never smaller than 50% of the picture (no small-mark views)",
            ("--min-mark-fraction", "0.5")),
    Variant("builtin_augment", "generic augmentations instead of the corpus's seller-edit families",
            ("--no-shared-augment",)),
)


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if rc != 0:
        raise RuntimeError(f"{cmd[0:4]} exited {rc}; see {log}")


def eval_bundle(bundle: Path, split: Path, out: Path, threads: int, log: Path, regions: str = "full",
                verify_top: int = 0) -> dict:
    """``brandguard eval`` of one bundle on one split; returns metrics.json."""
    cmd = [str(Path(sys.executable).parent / "brandguard"), "eval", "--references", str(split / "references"),
           "--queries", str(split / "queries"), "--ground-truth", str(split / "ground_truth.csv"),
           "--query-info", str(split / "queries.csv"), "--out", str(out), "--bundle", str(bundle),
           "--threads", str(threads), "--regions", regions, "--verify-top", str(verify_top), "--no-progress"]
    _run(cmd, log)
    return json.loads((out / "metrics.json").read_text())


def summarise(metrics: dict) -> dict:
    """The numbers the table shows: µAP overall and per family, recall@1 per family."""
    fam = metrics.get("per_family", {})
    return {"micro_ap": metrics["micro_ap"], "recall_at_1": metrics["recall_at_1"],
            **{f"{f}_map": fam.get(f, {}).get("micro_ap") for f in MARK_FAMILIES},
            **{f"{f}_r1": fam.get(f, {}).get("recall_at_1") for f in MARK_FAMILIES}}


def run_variant(v: Variant, a: argparse.Namespace, log=print) -> dict:  # noqa: ANN001
    run_dir = a.out / v.name
    run_dir.mkdir(parents=True, exist_ok=True)
    logf = run_dir / "commands.log"
    train = [sys.executable, "-m", "brandguard.training.train", "--out", str(run_dir / "run"),
             "--steps", str(a.steps), "--minutes", "600", "--seed", str(a.seed), "--threads", str(a.train_threads),
             "--input-size", "128", "--dim", "256", *v.args]
    if v.photos and a.photos is not None:
        train += ["--photos", str(a.photos)]
    t0 = time.perf_counter()
    resume = (run_dir / "run" / "ckpt.pt").exists()
    _run(train + (["--resume"] if resume else []), logf)
    summary = json.loads((run_dir / "run" / "summary.json").read_text())
    train_s = time.perf_counter() - t0
    _run([sys.executable, "-m", "brandguard.training.export", "--ckpt", str(run_dir / "run" / "ckpt.pt"),
          "--dest", str(run_dir / "bundle"), "--name", f"ablation-{v.name}"], logf)
    metrics = eval_bundle(run_dir / "bundle", a.split, run_dir / "eval", a.threads, logf)
    row = {"variant": v.name, "what": v.what, "args": list(v.args), "photos": v.photos and a.photos is not None,
           "steps": summary["step"], "train_minutes": round(summary["elapsed_s"] / 60, 2),
           "wall_minutes_this_call": round(train_s / 60, 2), "train_img_per_s": summary.get("train_img_per_s"),
           "final_loss": summary.get("final_loss"), **summarise(metrics)}
    log(f"[ablation] {v.name}: µAP {row['micro_ap']:.3f} "
        + " ".join(f"{f} {row[f + '_map']:.3f}" for f in MARK_FAMILIES))
    return row


def inference_rows(a: argparse.Namespace, log=print) -> list[dict]:  # noqa: ANN001
    """Inference-side ingredients on the shipped model (its own background and calibration)."""
    from brandguard.vision.bundle import default_bundle_path

    shipped = default_bundle_path()
    out = a.out / "inference"
    out.mkdir(parents=True, exist_ok=True)
    logf = out / "commands.log"
    rows = []
    bare = out / "bundle_without_background"
    if not bare.exists():
        bare.mkdir()
        for name in ("model.onnx", "model_card.json"):
            (bare / name).write_bytes((shipped / name).read_bytes())
    specs = [("shipped model, raw cosine (no background)", bare, "full", 0),
             ("+ score background normalisation (shipped)", shipped, "full", 0),
             ("+ grid regions (6 crops per query)", shipped, "grid", 0),
             ("+ keypoint verification of the top 3", shipped, "full", 3)]
    for i, (what, bundle, regions, verify) in enumerate(specs):
        t0 = time.perf_counter()
        m = eval_bundle(bundle, a.split, out / f"eval{i}", a.threads, logf, regions, verify)
        rows.append({"variant": what, "seconds": round(time.perf_counter() - t0, 1), **summarise(m)})
        log(f"[ablation] {what}: µAP {m['micro_ap']:.3f}")
    return rows


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _cells(r: dict) -> str:
    """The metric columns every table shares: µAP per family and knockoff recall@1."""
    return " | ".join(_f(r[k]) for k in ("copy_light_map", "copy_strong_map", "logo_in_photo_map", "knockoff_map",
                                          "knockoff_r1"))


def write_markdown(res: dict, path: Path) -> Path:
    """``docs/ABLATION.md`` from the results file (the only source of its numbers)."""
    lines = ["# Training ablation", "",
             "<!-- generated by benchmarks/ablation.py from its results.json; do not edit by hand -->", "",
             f"Command: `{res['command']}` on {res['date']}, {res['cores']} cores. Test split: "
             f"`{res['split']}` (brands never seen in training). Every training variant: {res['steps']} steps, "
             f"seed {res['seed']}, MobileNetV3-Small + GeM + MLP head, 128 px, 256-d; scored on the raw "
             "embedding (no score background, no keypoint verification). Δ is against the baseline row.", "",
             "| variant | what changes | µAP | Δ | light | strong | in photo | knockoff | knockoff r@1 | minutes |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = next((r for r in res["variants"] if r["variant"] == "baseline"), None)
    for r in res["variants"]:
        d = None if base is None or r is base else r["micro_ap"] - base["micro_ap"]
        lines.append(f"| {r['variant']} | {r['what']} | {_f(r['micro_ap'])} | {'' if d is None else f'{d:+.3f}'} | "
                     f"{_cells(r)} | {r['train_minutes']:.1f} |")
    metric_head = "µAP | light | strong | in photo | knockoff | knockoff r@1"
    sections = (
        ("length", "**Training length** (the default recipe; same model, longer runs):", "run | steps | minutes",
         lambda r: f"{r['variant']} | {r.get('steps') or '–'} | {r.get('train_minutes') or '–'}", ""),
        ("inference", "**Inference-side ingredients** (the shipped model, trained for the longest run above):",
         "configuration", lambda r: r["variant"], "eval s"),
    )
    for key, title, head, first, last in sections:
        if not res.get(key):
            continue
        cols = [head, metric_head] + ([last] if last else [])
        n = " | ".join(cols).count("|") + 1
        lines += ["", title, "", f"| {' | '.join(cols)} |", "|---" + "|---:" * (n - 1) + "|"]
        for r in res[key]:
            tail = f" | {r['seconds']:.0f}" if last else ""
            lines.append(f"| {first(r)} | {_f(r['micro_ap'])} | {_cells(r)}{tail} |")
    if res.get("notes"):
        lines += ["", *res["notes"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/ablation.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "bench_out" / "ablation")
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "ABLATION.md")
    p.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="benchmark split (references/, queries/, "
                   "ground_truth.csv, queries.csv); default: the standard corpus's test split")
    p.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS if DEFAULT_PHOTOS.is_dir() else None,
                   help="real photos for training (default: the shared clothing photos' train split)")
    p.add_argument("--steps", type=int, default=800, help="training steps per variant (default 800)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="*", choices=[v.name for v in VARIANTS], default=[v.name for v in VARIANTS],
                   help="variants to (re)train; the others keep their earlier results at the same --steps; "
                        "none: only the length and inference rows")
    p.add_argument("--length-bundles", nargs="*", type=Path, default=[],
                   help="extra bundles of the default recipe trained longer, for the training-length table")
    p.add_argument("--no-inference", dest="inference", action="store_false",
                   help="skip the inference-side rows (shipped model: background, grid regions, verification)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for eval")
    p.add_argument("--train-threads", type=int, default=1,
                   help="torch threads while training (1 on a 2-core box: the data worker needs the other core)")
    p.add_argument("--report-only", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    res_path = a.out / "results.json"
    if a.report_only:
        print(f"report: {publish(res_path, a.doc)}")
        return 0
    if not (a.split / "ground_truth.csv").is_file():
        print(f"error: {a.split} is not a benchmark split; build it with `brandguard corpus --size standard`",
              file=sys.stderr)
        return 2
    previous = json.loads(res_path.read_text()) if res_path.is_file() else {}
    res = {"command": "python benchmarks/ablation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count(),
           "split": str(a.split.relative_to(REPO) if a.split.is_relative_to(REPO) else a.split),
           "steps": a.steps, "seed": a.seed,
           "variants": [r for r in previous.get("variants", []) if r["variant"] not in a.variants
                        and r.get("steps") == a.steps],
           "length": previous.get("length", []), "inference": previous.get("inference", []),
           "notes": previous.get("notes", [])}
    for v in VARIANTS:
        if v.name in a.variants:
            res["variants"].append(run_variant(v, a))
            res_path.write_text(json.dumps(res, indent=2) + "\n")  # a long run keeps what it finished
    res["variants"].sort(key=lambda r: [v.name for v in VARIANTS].index(r["variant"]))
    for b in a.length_bundles:
        card = json.loads((b / "model_card.json").read_text())
        tr = card.get("training", {})
        m = eval_bundle(b, a.split, a.out / "length" / b.name, a.threads, a.out / "length.log")
        res["length"] = [r for r in res["length"] if r["variant"] != str(b)]
        res["length"].append({"variant": str(b), "steps": tr.get("steps"), "train_minutes": tr.get("minutes"),
                              **summarise(m)})
    if a.inference:
        res["inference"] = inference_rows(a)
        from brandguard.vision.bundle import default_bundle_path

        tr = json.loads((default_bundle_path() / "model_card.json").read_text()).get("training", {})
        res["length"] = [r for r in res["length"] if r["variant"] != "shipped default"]
        res["length"].append({**res["inference"][0], "variant": "shipped default", "steps": tr.get("steps"),
                              "train_minutes": tr.get("minutes")})
    res_path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"results: {res_path}\nreport: {publish(res_path, a.doc)}")
    return 0


def publish(res_path: Path, doc: Path) -> Path:
    """Write the Markdown table and keep a copy of its results beside it (``bench_out`` is not tracked)."""
    copy = doc.parent / "bench" / "ablation_results.json"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(res_path.read_bytes())
    return write_markdown(json.loads(res_path.read_text()), doc)


if __name__ == "__main__":
    sys.exit(main())
