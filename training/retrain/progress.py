"""Progress of a brand onboarding: each stage's expected seconds (from the image counts it will
process) and one line per stage with the whole run's percent and ETA."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from brandguard.inputs import list_images
from brandguard.training.retrain.benchmark import cached_regression_split
from brandguard.training.runlog import clock, progress_text

if TYPE_CHECKING:
    from brandguard.training.retrain.brand import FinetuneConfig

EST_S = {"bench": 0.01, "index": 0.1, "judge": 0.08, "score": 0.0035}
EST_REGRESSION_BUILD_S = 30.0
EST_STANDARD_VAL_IMAGES = 2918  # references + queries of the standard corpus's val split (seed 0)


class RunProgress:
    """The onboarding's stage lines: each stage's time, then the whole run's ``NN% ETA mm:ss``.

    Why estimated: the fine-tune's budget is known, but building benchmarks, indexing,
    calibrating and gating take as long as the images they process, so they are estimated from
    image counts (``expect``). A stage with no progress of its own ticks (``ticking``) while it runs."""

    def __init__(self, log_to: Any, tick_s: float = 15.0) -> None:
        self.log_to, self.tick_s = log_to, tick_s
        self.t0 = self.last = time.perf_counter()
        self.est: dict[str, float] = {}
        self.timings: dict[str, float] = {}

    def expect(self, **seconds: float) -> None:
        self.est.update(seconds)

    def remaining(self) -> float:
        return sum(v for n, v in self.est.items() if n not in self.timings)

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        took, self.last = now - self.last, now
        self.timings[name] = round(took, 1)
        elapsed, left = now - self.t0, self.remaining()
        print(f"[onboard] {name}: {took:.1f}s  run {progress_text(elapsed / (elapsed + left), elapsed, left)}",
              file=self.log_to, flush=True)

    @contextmanager
    def ticking(self, name: str, what: str) -> Iterator[None]:
        """Say what stage ``name`` does, then an estimated ``≈NN% ETA`` every ``tick_s`` until it ends."""
        import threading

        est = self.est.get(name, 0.0)
        print(f"[onboard] {name}: {what} (≈{clock(est)})", file=self.log_to, flush=True)
        stop = threading.Event()
        start = time.perf_counter()

        def tick() -> None:
            while not stop.wait(self.tick_s):
                el = time.perf_counter() - start
                frac = min(0.99, el / est) if est > 0 else 0.99
                print(f"[onboard] {name}: {el:.0f}s ≈{progress_text(frac, el, max(0.0, est - el)).strip()}",
                      file=self.log_to, flush=True)

        thread = threading.Thread(target=tick, name=f"progress-{name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def expect_stages(run: RunProgress, cfg: FinetuneConfig, n_refs: int, n_other: int, n_held: int, n_feedback: int) -> None:
    """The stage estimates ``RunProgress`` needs, from the image counts each stage will process."""
    reg = Path(cfg.regression) if cfg.regression else cached_regression_split(cfg.cache_dir, cfg.seed)
    reg_images = EST_STANDARD_VAL_IMAGES
    if reg is not None and (reg / "queries").is_dir():
        reg_images = sum(len(list_images(reg / sub)) for sub in ("references", "queries"))
    others = 60  # benchmark_inputs: 30 other brands x 2 references
    bench = n_refs + others + n_held * 4 * cfg.bench_per_reference + 24 * cfg.bench_per_reference
    calib = n_refs + others + n_held * 4 + 24 + n_feedback
    budget = cfg.minutes * 60.0
    run.expect(regression=0.0 if reg is not None else EST_REGRESSION_BUILD_S,
               benchmarks=EST_S["bench"] * (bench + calib), views_setup=1.0 + 0.01 * n_refs,
               finetune=min(budget, cfg.steps * 1.0) if cfg.steps else budget, export=3.0,
               index=EST_S["index"] * (n_refs + n_other), calibrate=EST_S["judge"] * calib,
               gate=EST_S["score"] * 2 * (bench + reg_images), register=2.0 if cfg.registry else 0.0)
