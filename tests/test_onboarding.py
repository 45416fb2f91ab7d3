"""Onboarding a brand out of the box: the README's `train brand` line, run verbatim in an empty
folder with nothing but the installed package (shipped bundle, no registry, no corpus, no torch
weights), on 100 generated references of one brand. Real fine-tune, export, index, gate; no mocks."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README_LINE = re.compile(r"^[ \t]*(?:\.venv/bin/)?brandguard train brand (?P<brand>\S+) --references (?P<refs>\S+) "
                         r"--registry (?P<registry>\S+)[ \t]*$", re.M)


def readme_train_brand_line() -> re.Match[str]:
    m = README_LINE.search((REPO / "README.md").read_text(encoding="utf-8"))
    assert m is not None, "README.md lost its `brandguard train brand BRAND --references DIR --registry REG` line"
    return m


def test_readme_has_a_runnable_train_brand_line() -> None:
    m = readme_train_brand_line()
    assert Path(m["refs"]).name == m["brand"]  # refs/<brand>/*.png, as make_brand_references writes them


@pytest.mark.slow  # the whole onboarding (~5 min on 2 cores): make test-all
def test_readme_train_brand_line_onboards_100_references_from_scratch(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from brandguard.training.retrain.brand_data import make_brand_references

    m = readme_train_brand_line()
    make_brand_references(m["brand"], 100, tmp_path / Path(m["refs"]).parent, seed=0)
    assert len(list((tmp_path / m["refs"]).glob("*.png"))) == 100
    argv = shlex.split(m.group(0).strip())
    exe = Path(sys.executable).parent / "brandguard"  # the venv's console script, as `.venv/bin/brandguard`
    res = subprocess.run([str(exe), *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    assert res.returncode in (0, 4), res.stderr[-4000:]  # 4: the gate rejected the candidate (a decision too)
    out = json.loads(res.stdout)
    assert out["decision"] in ("promote", "reject") and (res.returncode == 0) == (out["decision"] == "promote")
    report = tmp_path / out["report"]
    assert report.is_file() and f"# Gate: **{out['decision'].upper()}**" in report.read_text()
    data = json.loads((report.parent / "gate_report.json").read_text())
    assert data["decision"] == out["decision"] and set(data["benchmarks"]) == {"brand", "regression"}
    assert data["benchmarks"]["regression"]["candidate"]["n_queries"] > 2000  # the standard val split, not tiny
    log = res.stderr
    assert "creating it with the shipped default model" in log and "recovering the torch weights" in log
    assert re.search(r"\[finetune\] step \d+ .* \d+% ETA \d\d:\d\d", log)
    assert re.search(r"\[gate\] regression benchmark, candidate: .* \d+% ETA \d\d:\d\d", log)
    assert re.search(r"\[onboard\] index: .* run +\d+% ETA", log)
    from brandguard.registry import Registry

    reg = Registry(tmp_path / m["registry"])
    assert reg.list_versions()[0].notes["source"] == "shipped default bundle"
    assert reg.current_version() == (out["version"] if out["promoted"] else "v0001")
