"""Shared pieces of the benchmark harness: configuration, timing, environment, model snapshot.

Why a snapshot: the shipped bundle can be replaced while a long run is in progress (the model
is retrained in place); every part of one run must measure the very same model, so the run
copies it once, verifies the copy and uses only the copy.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STD_SPLIT = REPO / "data_cache" / "corpus_std" / "test"
DEFAULT_PHOTOS = REPO.parent / "shared" / "data" / "clothing-photos"

LABELS = {
    "brandguard": "brandguard fast: embedding search (shipped model)",
    "brandguard_verified": "brandguard fast + ORB verification of the top 3",
    "brandguard_thorough": "brandguard thorough: global + local features, fused",
    "brandguard_auto": "brandguard auto (what scan runs by default)",
    "rootsift_probe": "RootSIFT voting probe (flat index, ratio test, RANSAC)",
    "phash": "pHash (imagehash)", "dhash": "dHash (imagehash)", "whash": "wHash (imagehash)",
    "pdq": "PDQ 256-bit (pdqhash)",
    "imagededup_phash": "imagededup PHash", "imagededup_dhash": "imagededup DHash",
    "imagededup_whash": "imagededup WHash", "imagededup_ahash": "imagededup AHash",
    "tiny": "tiny image 16x16", "orb": "ORB + RANSAC",
}
ALL_METHODS = tuple(LABELS)


def pin_threads(n: int) -> None:
    """Put thread counts in the environment before numpy/OpenMP libraries start their pools."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(n)


@dataclass(frozen=True)
class Dataset:
    """A DISC21-style benchmark: folders of references and queries plus optional labels."""

    name: str
    references: Path
    queries: Path
    ground_truth: Path | None = None
    query_info: Path | None = None  # CSV query_id,family → per-family metrics

    @classmethod
    def from_split(cls, split: Path, name: str | None = None) -> "Dataset":
        split = Path(split)
        gt, qi = split / "ground_truth.csv", split / "queries.csv"
        return cls(name or split.as_posix(), split / "references", split / "queries",
                   gt if gt.is_file() else None, qi if qi.is_file() else None)


@dataclass(frozen=True)
class BenchConfig:
    """Everything one run depends on; written into results.json so a number can be traced."""

    quick: bool
    out: Path
    repeats: int
    threads: int  # cores used by multi-threaded parts (ONNX Runtime, FAISS, torch, decode pools)
    listings: int  # listing JPEGs for the speed part
    photos: Path | None
    bundle: Path | None  # None = the shipped default bundle
    dataset: Dataset | None  # None = quick mode builds a tiny corpus
    k: int
    methods: tuple[str, ...]
    orb_shortlist: int
    orb_max_queries: int  # 0 = every query
    faiss_sizes: tuple[int, ...]
    faiss_factory_sizes: tuple[int, ...]  # size whose choose_factory() string is used at each size
    faiss_queries: int
    ray_workers: tuple[int, ...]
    http_results: Path
    parts: tuple[str, ...]
    doc: Path | None


@dataclass(frozen=True)
class Rate:
    """Items per second over repeats; the median is the number reported."""

    median_per_s: float
    runs_per_s: list[float]
    items: int
    extra: dict = field(default_factory=dict)


def timed(fn: Callable[[], int], repeats: int, extra: dict | None = None) -> Rate:
    """Run ``fn`` (returns how many items it processed) ``repeats`` times; median rate."""
    runs, items = [], 0
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        items = fn()
        runs.append(items / max(time.perf_counter() - t0, 1e-9))
    return Rate(round(statistics.median(runs), 2), [round(r, 2) for r in runs], items, dict(extra or {}))


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - a missing optional package is reported as None
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    """Machine and versions, so a table can be read next to where it was measured."""
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gb = None
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": cpu_model(), "arch": platform.machine(), "cores": os.cpu_count(), "memory_gb": mem_gb,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(), "python": platform.python_version(), "git_commit": git_commit(),
        "versions": {m: _version(m) for m in ("brandguard", "numpy", "onnxruntime", "faiss-cpu",
                                              "opencv-python-headless", "pillow", "torch", "torchvision",
                                              "ray", "imagededup", "imagehash", "pdqhash", "matplotlib")},
    }


def snapshot_bundle(src: Path | None, dest: Path, attempts: int = 5) -> Path:
    """Copy the model bundle (model, card, and the thresholds and score background that belong to
    the model) and verify the copy's hash.

    Retries while the source is being rewritten (card and model briefly disagree).
    """
    from brandguard.errors import BundleError
    from brandguard.vision.bundle import Bundle, default_bundle_path

    src = Path(src) if src is not None else default_bundle_path()
    last: Exception | None = None
    for attempt in range(attempts):
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        try:
            from brandguard.references import new_bundle_from

            new_bundle_from(Bundle.load(src), dest)
            Bundle.load(dest)
            return dest
        except (BundleError, OSError) as exc:
            last = exc
            time.sleep(2 + 3 * attempt)
    raise BundleError(f"could not take a consistent copy of {src}: {last}")
