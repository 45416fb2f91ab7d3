"""Bounded load tests of the real service process (``python -m brandguard.serve`` on loopback).

They reuse ``benchmarks/http_load.py`` (so the load script is exercised too): overload is shed
with 503 + Retry-After, every request is answered, the service recovers, and the server's RSS
stays flat over thousands of requests. No assertion is about speed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

from test_serve import build_bundle
from tests_helpers import blob_image, encode

REPO = Path(__file__).resolve().parent.parent


def _load_http_load():
    spec = importlib.util.spec_from_file_location("http_load", REPO / "benchmarks" / "http_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["http_load"] = module  # the process pool pickles its worker function by module name
    spec.loader.exec_module(module)
    return module


hl = _load_http_load()


def _images() -> list[bytes]:
    copies = [encode(blob_image(100 + i)[10:230, 15:305], "JPEG", quality=70) for i in range(4)]
    others = [encode(blob_image(900 + i), "JPEG", quality=80) for i in range(4)]
    return copies + others


def test_overload_is_shed_with_503_and_the_service_recovers(tiny_bundle, tmp_path):
    bundle = build_bundle(tiny_bundle, tmp_path)
    # Four requests may be inside at once, and each admitted image waits out a 0.5 s batch window
    # (the batch can never fill: max_batch 8 > 4 admitted), so a burst of 48 must overflow the door.
    opts = dict(threads=1, max_batch=8, queue_size=4, max_files=4, max_inflight=4, batch_window_ms=500,
                decode_threads=1, retry_after=2)
    images = _images()
    with hl.ServerProcess(bundle, tmp_path, opts) as srv:
        burst = asyncio.run(hl.burst(srv.url, srv.key, images, 48))
        assert burst.transport_errors == 0, "every request must be answered"
        assert sum(burst.status.values()) == 48
        assert set(burst.status) <= {"200", "503", "504"}, burst.status  # no other 5xx, no 4xx
        assert burst.status.get("503", 0) > 0 and burst.status.get("200", 0) >= 4, burst.status
        assert burst.retry_after_on_all_503
        assert srv.wait_idle(30)
        ready = srv.readyz()
        assert ready["inflight"] == 0 and ready["at_door"] == 0 and ready["queue_depth"] == 0
        recovery = asyncio.run(hl.closed_loop(srv.url, srv.key, images, 4, 12, "recovery"))
        assert recovery.status == {"200": 12} and recovery.transport_errors == 0
        metrics = __import__("httpx").get(f"{srv.url}/metrics").text
    rejected = float(next(line.split()[1] for line in metrics.splitlines()
                          if line.startswith("brandguard_admission_rejected_total ")))
    assert rejected == burst.status["503"]


def _rss_run(tiny_bundle, tmp_path, warmup: int, chunks: int, per_chunk: int) -> list[int]:
    bundle = build_bundle(tiny_bundle, tmp_path)
    images = _images() + [b"garbage, not an image", encode(blob_image(5), "PNG")]
    with hl.ServerProcess(bundle, tmp_path, dict(threads=1, max_batch=8, queue_size=32, decode_threads=2)) as srv:
        res = asyncio.run(hl.closed_loop(srv.url, srv.key, images, 8, warmup, "warmup"))
        assert res.status == {"200": warmup}
        samples = [srv.rss_kib]
        for _ in range(chunks):
            res = asyncio.run(hl.closed_loop(srv.url, srv.key, images, 8, per_chunk))
            assert res.status == {"200": per_chunk} and res.transport_errors == 0
            samples.append(srv.rss_kib)
    print("server RSS KiB after warm-up, then per chunk:", samples)
    return samples


def test_server_rss_stays_flat(tiny_bundle, tmp_path):
    samples = _rss_run(tiny_bundle, tmp_path, warmup=400, chunks=4, per_chunk=500)
    growth_kib = max(samples[1:]) - samples[0]
    # Flat: a leak of even 5 KiB per request would add ~10 MiB over these 2,000 requests.
    assert growth_kib < 8 * 1024, samples
    assert samples[-1] - samples[1] < 4 * 1024, samples


@pytest.mark.slow
def test_server_rss_stays_flat_over_10000_requests(tiny_bundle, tmp_path):
    samples = _rss_run(tiny_bundle, tmp_path, warmup=500, chunks=10, per_chunk=1000)
    assert max(samples[1:]) - samples[0] < 8 * 1024, samples
    assert samples[-1] - samples[2] < 4 * 1024, samples
