"""Coverage-guided fuzzing of the decode path (atheris), bounded in runs and time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hostile import hostile_corpus

HARNESS = Path(__file__).with_name("fuzz_decode.py")


def _fuzz(tmp_path: Path, runs: int, timeout: int) -> subprocess.CompletedProcess:
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, data, _ in hostile_corpus():
        (corpus / name).write_bytes(data[:65536])
    return subprocess.run([sys.executable, str(HARNESS), str(corpus), f"-runs={runs}", "-max_len=65536",
                           "-timeout=20", "-rss_limit_mb=2048"],
                          capture_output=True, text=True, timeout=timeout)


def test_decoder_fuzz_smoke(tmp_path):
    res = _fuzz(tmp_path, runs=300, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Done 300 runs" in res.stderr


@pytest.mark.slow
def test_decoder_fuzz_long(tmp_path):
    res = _fuzz(tmp_path, runs=20000, timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Done 20000 runs" in res.stderr
