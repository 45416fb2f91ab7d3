"""kill -9 a real `brandguard scan` process at random moments; the same command resumes and
the final output holds every listing exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from brandguard.cli.main import EXIT_OK, main
from brandguard.scan.scanner import read_results
from tests_helpers import blob_image, save


def test_kill_9_during_scan_then_resume_exactly_once(tiny_bundle, tmp_path):
    for i in range(3):
        save(blob_image(10 + i), tmp_path / "refs" / f"b{i}" / "logo.png")
    assert main(["index", str(tmp_path / "refs"), "--bundle", str(tiny_bundle), "--out", str(tmp_path / "b")]) == 0
    rows = []
    for i in range(900):
        img = blob_image(10 + i % 3) if i % 4 == 0 else blob_image(1000 + i)
        save(img[i % 7:230, i % 5:310], tmp_path / "l" / f"{i}.jpg", quality=80)
        rows.append({"listing_id": f"L{i:04d}", "image": f"l/{i}.jpg", "price": 10 + i})
    (tmp_path / "l" / "bad.jpg").write_bytes(b"not an image")
    rows.append({"listing_id": "BAD", "image": "l/bad.jpg"})
    cat = tmp_path / "cat.jsonl"
    cat.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "brandguard.cli.main", "scan", str(cat), "--bundle", str(tmp_path / "b"),
           "--out", str(out), "--workers", "1", "--batch-size", "8", "--part-size", "20", "--no-progress", "--quiet", "--no-report"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rng = np.random.default_rng(0)
    kills = 0
    parts = out / "parts"
    for _ in range(3):
        before = len(list(parts.glob("part-*.parquet"))) if parts.exists() else 0
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.time() + 120
        # wait until this run has committed at least one part, then kill at a random moment
        while proc.poll() is None and time.time() < deadline and len(list(parts.glob("part-*.parquet"))) <= before:
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0.0, 0.05)))  # soon: an idle machine finishes the rest in under a second
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the scanner and its decode workers, mid-flight
            kills += 1
        proc.wait(timeout=60)
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == EXIT_OK, final.stderr[-2000:]
    got = [r["listing_id"] for r in read_results(out)]
    assert sorted(got) == sorted(r["listing_id"] for r in rows)  # every listing, exactly once
    assert len(got) == len(set(got))
    res = {r["listing_id"]: r for r in read_results(out)}
    assert res["BAD"]["verdict"] == "inconclusive" and res["L0000"]["verdict"] == "copy"
    assert kills >= 2  # the test really interrupted running scans
    # no half-written part survives a kill
    assert not list((out / "parts").glob(".*.tmp"))
