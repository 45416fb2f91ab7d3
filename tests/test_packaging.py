"""The wheel is self-contained: built from the repo, it imports and runs from elsewhere."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_installs_and_imports_without_the_repo(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dist), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("brandguard-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("brandguard/cli/main.py", "brandguard/vision/decode.py", "brandguard/index/store.py",
                   "brandguard/inputs.py", "brandguard/engine/pipeline.py", "brandguard/training/__init__.py"):
        assert module in names, module
    # No top-level packages besides brandguard (no stray `datasets` or `index`).
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"brandguard"}, tops
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    code = ("import brandguard, brandguard.engine.pipeline, brandguard.scan.scanner; "
            "from brandguard.vision.bundle import default_bundle_path; "
            "print(brandguard.__file__); print(default_bundle_path())")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert res.returncode == 0, res.stderr
    where, bundle = res.stdout.split()
    assert where.startswith(str(site)) and bundle.startswith(str(site))
