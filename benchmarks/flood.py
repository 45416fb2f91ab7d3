"""Flood test of ``brandguard serve``: large-image batches and slow uploads while a normal client checks.

The hostile review (issue #16) found that 16 tiny-on-the-wire 16-bit PNGs (6300 x 6300, ~90 KB
each, under the pixel limit) in one batch peaked the server at 5.9 GB and stalled ordinary
checks for 31-56 s, and that 40 connections sending 1 byte every 2 s locked every legitimate
check out with 503 for 25 s. This runs both at once against the real service on loopback
(``python -m brandguard.serve``, the ``http_load`` harness) and measures what a normal client
sees:

1. warm-up, then ``--baseline-s`` of the normal client alone (closed loop, real JPEG photos);
2. ``--flood-s`` of: ``--batch-senders`` clients each posting batches of ``--files`` large
   PNGs back to back (one API key), ``--drips`` connections trickling a body at 1 byte per
   ``--drip-interval`` s and reconnecting when cut (another key), and the normal client
   (its own key).

Reported: the server's peak RSS (``/proc/<pid>/status`` VmHWM) and RSS samples, the normal
client's p50/p99/max latency and status counts (503 share), what the batches and the drips got.
Bounded: about ``baseline-s + flood-s`` (25 s by default) of load, well under a minute in all.

    python benchmarks/flood.py --out bench_out/flood.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import http_load as hl  # noqa: E402 - the same server harness and data as the load test

SERVER = dict(threads=1, decode_threads=2, max_batch=16, max_files=16, queue_size=32, max_inflight=32,
              batch_window_ms=2, max_inflight_per_key=8)


def large_png(side: int) -> bytes:
    """A 16-bit greyscale PNG, ``side`` x ``side``: ~40 M pixels for 6300 yet ~90 KB on the wire."""
    import numpy as np
    from PIL import Image

    row = (np.arange(side, dtype=np.uint32) * 65535 // side).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(np.tile((row // 4096) * 4096, (side, 1))).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def create_key(db: Path, label: str) -> str:
    from brandguard.cases.leads import LeadStore

    store = LeadStore(db)
    try:
        return store.create_key("scanner", label=label)[0]
    finally:
        store.close()


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


def summary(client: "NormalClient") -> dict:
    """Status counts and 503 share of every answer; latency percentiles of the 200s; the slowest answer."""
    n, lat = sum(client.status.values()), client.latencies
    return {"requests": n, "status": dict(sorted(client.status.items())),
            "share_503": round(client.status.get("503", 0) / n, 4) if n else None,
            "p50_ms": round(percentile(lat, 50) * 1000, 1) if lat else None,
            "p99_ms": round(percentile(lat, 99) * 1000, 1) if lat else None,
            "max_ms": round(client.slowest * 1000, 1), "over_2s": sum(x > 2.0 for x in lat)}


class NormalClient(threading.Thread):
    """One client checking real photos back to back (its own thread and connection); like any
    well-behaved client it waits out Retry-After when refused."""

    def __init__(self, url: str, key: str, images: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.images = url, key, images
        self.stop = threading.Event()
        self.latencies: list[float] = []  # of the 200 answers
        self.slowest = 0.0  # of every answer, whatever its status
        self.status: dict[str, int] = {}

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60, headers={"Authorization": f"Bearer {self.key}"}) as c:
            i = 0
            while not self.stop.is_set():
                t0 = time.perf_counter()
                try:
                    r = c.post("/v1/check", content=self.images[i % len(self.images)],
                               headers={"Content-Type": "image/jpeg"})
                except httpx.HTTPError:
                    r = None
                seconds = time.perf_counter() - t0
                self.slowest = max(self.slowest, seconds)
                code = str(r.status_code) if r is not None else "transport_error"
                self.status[code] = self.status.get(code, 0) + 1
                if code == "200":
                    self.latencies.append(seconds)
                elif r is not None and r.headers.get("retry-after"):
                    self.stop.wait(float(r.headers["retry-after"]))
                i += 1


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.stop = threading.Event()
        self.samples: list[int] = []

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            try:
                self.samples.append(vm_kib(self.pid, "VmRSS"))
            except (OSError, RuntimeError):
                return


async def drip(url: str, key: str, interval: float, until: float, tally: dict, settle_s: float = 10.0) -> None:
    """A slow upload (1 byte per ``interval``); reconnects when cut, honouring Retry-After. At the
    end of the window it stops sending and waits up to ``settle_s`` for the server to cut it."""
    parts = urlsplit(url)
    head = (f"POST /v1/check HTTP/1.1\r\nHost: {parts.hostname}\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n").encode()
    while time.monotonic() < until:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        tally["opened"] += 1
        t0 = time.monotonic()
        status, retry_after = "still_open", 1.0
        try:
            writer.write(head)
            await writer.drain()
            while True:
                sending = time.monotonic() < until
                try:
                    line = await asyncio.wait_for(reader.readline(), interval if sending else settle_s)
                except asyncio.TimeoutError:
                    if not sending:
                        break  # not cut within settle_s of the last byte: reported as still_open
                    writer.write(b"\xff")
                    await writer.drain()
                    continue
                status = line.split()[1].decode() if len(line.split()) > 1 else "closed"
                rest = await asyncio.wait_for(reader.read(4096), 5)
                for h in rest.split(b"\r\n"):
                    if h.lower().startswith(b"retry-after:"):
                        retry_after = float(h.split(b":", 1)[1])
                tally["answer_s"].append(time.monotonic() - t0)
                break
        except (ConnectionError, asyncio.TimeoutError, OSError):
            status = "reset"
        finally:
            writer.close()
        tally["status"][status] = tally["status"].get(status, 0) + 1
        if status in ("429", "503"):
            await asyncio.sleep(retry_after)


async def batch_sender(url: str, key: str, files: list, until: float, tally: dict) -> None:
    """Batches of large PNGs back to back."""
    async with httpx.AsyncClient(base_url=url, timeout=120, headers={"Authorization": f"Bearer {key}"}) as c:
        while time.monotonic() < until:
            t0 = time.perf_counter()
            try:
                r = await c.post("/v1/check/batch", files=files)
                code = str(r.status_code)
            except httpx.HTTPError:
                r, code = None, "transport_error"
            tally["seconds"].append(time.perf_counter() - t0)
            tally["status"][code] = tally["status"].get(code, 0) + 1
            if r is not None and r.status_code == 200:
                for x in r.json()["results"]:
                    key_ = x.get("reason") or x["verdict"]
                    tally["results"][key_] = tally["results"].get(key_, 0) + 1
            elif r is not None and r.status_code in (429, 503):
                await asyncio.sleep(float(r.headers.get("retry-after", 1)))


async def attack(srv: hl.ServerProcess, args: argparse.Namespace, png: bytes, batch_key: str,
                 drip_key: str) -> tuple[dict, dict]:
    until = time.monotonic() + args.flood_s
    drips = {"opened": 0, "status": {}, "answer_s": []}
    batches = {"status": {}, "seconds": [], "results": {}}
    files = [("file", (f"large-{i}.png", png, "image/png")) for i in range(args.files)]
    await asyncio.gather(*[drip(srv.url, drip_key, args.drip_interval, until, drips) for _ in range(args.drips)],
                         *[batch_sender(srv.url, batch_key, files, until, batches)
                           for _ in range(args.batch_senders)])
    return drips, batches


def run(args: argparse.Namespace) -> dict:
    from brandguard.serve.services.decoding import declared_decoded_bytes

    t_start = time.perf_counter()
    paths = hl.photo_paths(args.photos, args.n_photos)
    n_refs = min(args.n_refs, len(paths) // 2)
    work = Path(tempfile.mkdtemp(prefix="bg-flood-"))
    try:
        bundle = args.bundle or hl.prepare_bundle(paths, work, n_refs, args.model_bundle)
        images = hl.query_images(paths, n_refs if args.bundle is None else 0)
        png = large_png(args.side)
        with hl.ServerProcess(Path(bundle), work, dict(SERVER)) as srv:
            db = work / "leads.sqlite"
            batch_key, drip_key = create_key(db, "flood-batches"), create_key(db, "flood-drips")
            ready = srv.readyz()
            warm = NormalClient(srv.url, srv.key, images)
            warm.start()
            time.sleep(2.0)
            warm.stop.set()
            warm.join()
            rss_after_warmup = srv.rss_kib
            base = NormalClient(srv.url, srv.key, images)
            base.start()
            time.sleep(args.baseline_s)
            base.stop.set()
            base.join()
            sampler = RssSampler(srv.proc.pid)
            sampler.start()
            normal = NormalClient(srv.url, srv.key, images)
            normal.start()
            drips, batches = asyncio.run(attack(srv, args, png, batch_key, drip_key))
            normal.stop.set()
            normal.join()
            sampler.stop.set()
            sampler.join()
            peak_kib = vm_kib(srv.proc.pid, "VmHWM")
            drained = srv.wait_idle(30)
            metrics = httpx.get(f"{srv.url}/metrics", timeout=5).text
        flood, baseline = summary(normal), summary(base)
        drip_answers = sorted(drips["answer_s"])
        return {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "server": {**SERVER, "inflight_limit": ready.get("inflight_limit"), "model": ready.get("model"),
                       "index_count": ready.get("index_count"), "defaults_otherwise": True},
            "attack": {"seconds": args.flood_s, "large_png": {"side": args.side, "bytes": len(png), "mode": "I;16",
                                                              "declared_decoded_bytes":
                                                                  declared_decoded_bytes(png, 40_000_000)},
                       "batch_senders": args.batch_senders, "files_per_batch": args.files, "drips": args.drips,
                       "drip_interval_s": args.drip_interval},
            "normal_client": {"baseline": baseline, "flood": flood,
                              "p99_ratio_flood_to_baseline": round(flood["p99_ms"] / baseline["p99_ms"], 2)
                              if flood["p99_ms"] and baseline["p99_ms"] else None},
            "batches": {"sent": sum(batches["status"].values()), "status": dict(sorted(batches["status"].items())),
                        "images": dict(sorted(batches["results"].items())),
                        "p50_s": round(percentile(batches["seconds"], 50), 2)
                        if batches["seconds"] else None},
            "drips": {"connections": drips["opened"], "status": dict(sorted(drips["status"].items())),
                      "median_s_to_answer": round(drip_answers[len(drip_answers) // 2], 2) if drip_answers else None},
            "server_rss_mib": {"after_warmup": round(rss_after_warmup / 1024), "peak_vmhwm": round(peak_kib / 1024),
                               "max_sampled_during_flood": round(max(sampler.samples, default=0) / 1024)},
            "counters": {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
                         if line.startswith(("brandguard_decode_budget_refused_total ",
                                             "brandguard_admission_rejected_total ",
                                             "brandguard_key_rejected_total "))},
            "checks": {"normal_all_200": set(normal.status) == {"200"},
                       "normal_max_under_2s": flood["max_ms"] < 2000,
                       "drips_cut": drips["status"].get("still_open", 0) == 0,
                       "drained_after_flood": drained},
            "seconds_total": round(time.perf_counter() - t_start, 1),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=hl.DEFAULT_PHOTOS, help="folder of real photos (JPEG/PNG)")
    ap.add_argument("--n-photos", type=int, default=60)
    ap.add_argument("--n-refs", type=int, default=30, help="photos indexed as references")
    ap.add_argument("--bundle", type=Path, default=None, help="serve this indexed bundle instead of building one")
    ap.add_argument("--model-bundle", type=Path, default=None, help="model to index with (default: shipped)")
    ap.add_argument("--side", type=int, default=6300, help="side of the large 16-bit PNGs")
    ap.add_argument("--files", type=int, default=16, help="large PNGs per batch")
    ap.add_argument("--batch-senders", type=int, default=2)
    ap.add_argument("--drips", type=int, default=40)
    ap.add_argument("--drip-interval", type=float, default=2.0, help="seconds between the drips' bytes")
    ap.add_argument("--baseline-s", type=float, default=5.0)
    ap.add_argument("--flood-s", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=Path("bench_out/flood.json"))
    args = ap.parse_args(argv)
    if args.baseline_s + args.flood_s > 60:
        ap.error("baseline-s + flood-s must stay within 60 s")
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    nc = result["normal_client"]
    print(f"normal client: baseline p50 {nc['baseline']['p50_ms']} ms p99 {nc['baseline']['p99_ms']} ms; "
          f"flood p50 {nc['flood']['p50_ms']} ms p99 {nc['flood']['p99_ms']} ms max {nc['flood']['max_ms']} ms, "
          f"503 share {nc['flood']['share_503']}, status {nc['flood']['status']}")
    print(f"server RSS MiB: {result['server_rss_mib']}; batches {result['batches']}; drips {result['drips']}")
    print(json.dumps(result["checks"]))
    print(f"wrote {args.out}")
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
