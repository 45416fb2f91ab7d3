"""HTTP load test of ``brandguard serve``: latency and throughput, then overload and recovery.

Runs the real service in a separate process on 127.0.0.1 (``python -m brandguard.serve``) and
drives it from this process with an async httpx client, with real JPEG photos:

1. closed loop at 1, 8 and 32 concurrent clients, a fixed number of requests each:
   p50 / p99 latency and images/s;
2. overload: open-loop arrivals at ~2x the best measured throughput for a few seconds; the
   service's admission bound turns the excess into 503 + Retry-After, and every request must
   still be answered (counted as 200, 503, other, or transport error);
3. recovery: once in-flight work drains, a light closed loop must be answered 200 again.

The server's RSS (``/proc/<pid>/status`` VmRSS) is sampled after each phase. Results go to a
JSON file (``--out bench_out/http.json``) and a table on stdout.

    python benchmarks/http_load.py --out bench_out/http.json
    python benchmarks/http_load.py --bundle my_bundle --requests 200 --threads 1
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import httpx

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PHOTOS = REPO.parent / "shared" / "data" / "clothing-photos" / "test"


# ----------------------------------------------------------------------------- server process
def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """``python -m brandguard.serve`` on loopback, with its own leads database and a scanner key."""

    bundle: Path
    workdir: Path
    options: dict[str, object] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    url: str = ""
    key: str = ""

    def __enter__(self) -> "ServerProcess":
        from brandguard.cases.leads import LeadStore

        db = self.workdir / "leads.sqlite"
        store = LeadStore(db)
        try:
            self.key = store.create_key("scanner", label="http_load")[0]
        finally:
            store.close()
        port = free_port()
        args = [sys.executable, "-m", "brandguard.serve", "--bundle", str(self.bundle), "--port", str(port),
                "--leads-db", str(db), "--no-access-log", "--log-level", "warning"]
        # One scanner key drives all the load here: the per-key bound (429) is lifted so that what is
        # measured is the service's own admission (503); pass max_inflight_per_key to measure it instead.
        for k, v in {"max_inflight_per_key": 1_000_000, **self.options}.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        self.log = self.workdir / "server.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=out)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("server did not become ready in 90 s")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def rss_kib(self) -> int:
        assert self.proc is not None
        return rss_kib(self.proc.pid)

    def readyz(self) -> dict:
        return httpx.get(f"{self.url}/readyz", timeout=5).json()

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Wait (bounded) until no image is in flight on the server."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                r = self.readyz()
                if r.get("inflight", 0) == 0 and r.get("queue_depth", 0) == 0 and r.get("at_door", 0) == 0:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        return False


# ----------------------------------------------------------------------------- measurements
@dataclass
class PhaseResult:
    name: str
    concurrency: int | None
    offered_rate: float | None
    requests: int
    seconds: float
    status: dict[str, int]
    transport_errors: int
    p50_ms: float | None
    p99_ms: float | None
    images_per_s: float
    retry_after_on_all_503: bool
    server_rss_kib: int | None = None

    @property
    def ok(self) -> int:
        return self.status.get("200", 0)


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


class _Tally:
    def __init__(self) -> None:
        self.status: dict[str, int] = {}
        self.latency_ok: list[float] = []
        self.transport_errors = 0
        self.missing_retry_after = 0

    def record(self, response: httpx.Response | None, seconds: float) -> None:
        if response is None:
            self.transport_errors += 1
            return
        code = str(response.status_code)
        self.status[code] = self.status.get(code, 0) + 1
        if response.status_code == 200:
            self.latency_ok.append(seconds)
        elif response.status_code == 503 and not response.headers.get("retry-after"):
            self.missing_retry_after += 1

    def result(self, name: str, concurrency: int | None, rate: float | None, n: int, seconds: float) -> PhaseResult:
        ok = self.status.get("200", 0)
        return PhaseResult(name, concurrency, rate, n, round(seconds, 3), dict(sorted(self.status.items())),
                           self.transport_errors,
                           None if not self.latency_ok else round(_percentile(self.latency_ok, 50) * 1000, 2),
                           None if not self.latency_ok else round(_percentile(self.latency_ok, 99) * 1000, 2),
                           round(ok / seconds, 1) if seconds > 0 else 0.0, self.missing_retry_after == 0)


async def _post(client: httpx.AsyncClient, image: bytes, tally: _Tally) -> None:
    t0 = time.perf_counter()
    try:
        r = await client.post("/v1/check", content=image, headers={"Content-Type": "image/jpeg"})
    except httpx.HTTPError:
        r = None
    tally.record(r, time.perf_counter() - t0)


def _client(url: str, key: str, connections: int, timeout_s: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s,
                             limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))


async def closed_loop(url: str, key: str, images: Sequence[bytes], concurrency: int, n: int,
                      name: str | None = None, timeout_s: float = 60.0) -> PhaseResult:
    """``concurrency`` clients, each sending its next request when the previous is answered; ``n`` in all."""
    tally = _Tally()
    counter = iter(range(n))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:  # shared iterator: the n requests are split among the workers
            await _post(client, images[i % len(images)], tally)

    async with _client(url, key, concurrency, timeout_s) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
    return tally.result(name or f"closed-{concurrency}", concurrency, None, n, seconds)


def _open_loop_worker(args: tuple) -> dict:
    """One load-generator process: its share of the arrivals; returns its raw tally."""
    url, key, images, rate, seconds, offset = args
    tally = _Tally()

    async def go() -> float:
        async with _client(url, key, 1000, 60.0) as client:
            t0 = time.perf_counter() + offset
            tasks, n = [], max(1, int(rate * seconds))
            for i in range(n):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(_post(client, images[i % len(images)], tally)))
            await asyncio.gather(*tasks)
            return n

    n = asyncio.run(go())
    return {"n": n, "status": tally.status, "latency_ok": tally.latency_ok,
            "transport_errors": tally.transport_errors, "missing_retry_after": tally.missing_retry_after}


def open_loop_procs(url: str, key: str, images: Sequence[bytes], rate: float, seconds: float, procs: int,
                    name: str = "overload") -> PhaseResult:
    """Open-loop arrivals from ``procs`` processes (one Python client cannot offer a high rate on a busy box)."""
    from concurrent.futures import ProcessPoolExecutor

    per = rate / procs
    t0 = time.perf_counter()
    with ProcessPoolExecutor(procs) as pool:
        parts = list(pool.map(_open_loop_worker, [(url, key, list(images), per, seconds, k / rate)
                                                  for k in range(procs)]))
    elapsed = time.perf_counter() - t0
    tally = _Tally()
    for part in parts:
        for code, v in part["status"].items():
            tally.status[code] = tally.status.get(code, 0) + v
        tally.latency_ok += part["latency_ok"]
        tally.transport_errors += part["transport_errors"]
        tally.missing_retry_after += part["missing_retry_after"]
    return tally.result(name, None, round(rate, 1), sum(p["n"] for p in parts), elapsed)


async def burst(url: str, key: str, images: Sequence[bytes], n: int, timeout_s: float = 60.0) -> PhaseResult:
    """``n`` requests at once (the harshest overload)."""
    tally = _Tally()
    async with _client(url, key, n, timeout_s) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(_post(client, images[i % len(images)], tally) for i in range(n)))
        elapsed = time.perf_counter() - t0
    return tally.result("burst", n, None, n, elapsed)


# ----------------------------------------------------------------------------- data
def _jpeg(img, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def photo_paths(photos: Path | None, limit: int) -> list[Path]:
    if photos is None or not photos.is_dir():
        raise SystemExit(f"photos folder {photos} not found: pass --photos DIR of JPEG/PNG photos")
    paths = sorted(p for p in photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    if len(paths) < 8:
        raise SystemExit(f"{photos} holds {len(paths)} photos; need at least 8")
    return paths[:limit]


def prepare_bundle(paths: list[Path], workdir: Path, n_refs: int, model_bundle: Path | None) -> Path:
    """Index ``n_refs`` photos as references (brand = their folder) with the shipped model."""
    from brandguard.cli.main import main as cli_main

    refs = workdir / "refs"
    for p in paths[:n_refs]:
        dest = refs / (p.parent.name or "brand") / f"{p.stem}{p.suffix.lower()}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dest)
    out = workdir / "bundle"
    argv = ["index", str(refs), "--out", str(out)] + (["--bundle", str(model_bundle)] if model_bundle else [])
    if cli_main(argv) != 0:
        raise SystemExit("indexing the references failed")
    return out


def query_images(paths: list[Path], n_refs: int, seed: int = 7) -> list[bytes]:
    """Real JPEGs: re-encoded crops of references (copies) and photos that are not indexed."""
    from PIL import Image

    rng = random.Random(seed)
    out = []
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im = im.convert("RGB")
            if i < n_refs:  # a seller's copy: cropped, rescaled, recompressed
                w, h = im.size
                box = (int(w * rng.uniform(0, 0.1)), int(h * rng.uniform(0, 0.1)),
                       int(w * rng.uniform(0.9, 1)), int(h * rng.uniform(0.9, 1)))
                im = im.crop(box)
            out.append(_jpeg(im, quality=rng.choice((70, 80, 90))))
    rng.shuffle(out)
    return out


# ----------------------------------------------------------------------------- the run
def run(args: argparse.Namespace) -> dict:
    paths = photo_paths(args.photos, args.n_photos)
    n_refs = min(args.n_refs, len(paths) // 2)
    work = Path(tempfile.mkdtemp(prefix="bg-http-load-"))
    try:
        bundle = args.bundle or prepare_bundle(paths, work, n_refs, args.model_bundle)
        images = query_images(paths, n_refs if args.bundle is None else 0)
        opts = dict(threads=args.threads, max_batch=args.max_batch, queue_size=args.queue_size,
                    batch_window_ms=args.batch_window_ms, decode_threads=args.decode_threads)
        if args.max_inflight:
            opts["max_inflight"] = args.max_inflight
        phases: list[PhaseResult] = []
        with ServerProcess(Path(bundle), work, opts) as srv:
            ready = srv.readyz()
            asyncio.run(closed_loop(srv.url, srv.key, images, 4, args.warmup, "warmup"))
            rss_start = srv.rss_kib
            for c in args.concurrency:
                res = asyncio.run(closed_loop(srv.url, srv.key, images, c, args.requests))
                res.server_rss_kib = srv.rss_kib
                phases.append(res)
                print(f"  {res.name}: {res.images_per_s} img/s, p50 {res.p50_ms} ms, p99 {res.p99_ms} ms",
                      file=sys.stderr)
            capacity = max(p.images_per_s for p in phases)
            over = open_loop_procs(srv.url, srv.key, images, args.overload_factor * capacity,
                                   args.overload_seconds, args.overload_procs)
            over.server_rss_kib = srv.rss_kib
            phases.append(over)
            drained = srv.wait_idle()
            rec = asyncio.run(closed_loop(srv.url, srv.key, images, args.recovery_clients, args.recovery_requests,
                                          "recovery"))
            rec.server_rss_kib = srv.rss_kib
            phases.append(rec)
            metrics = httpx.get(f"{srv.url}/metrics", timeout=5).text
        answered = all(p.transport_errors == 0 for p in phases)
        other = {k: v for p in phases for k, v in p.status.items() if k not in ("200", "503")}
        return {
            "server": {"threads": args.threads, "max_batch": args.max_batch, "queue_size": args.queue_size,
                       "inflight_limit": ready.get("inflight_limit"), "batch_window_ms": args.batch_window_ms,
                       "decode_threads": args.decode_threads, "model": ready.get("model"),
                       "providers": ready.get("providers"), "index_count": ready.get("index_count")},
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "images": {"count": len(images), "mean_bytes": int(sum(map(len, images)) / len(images))},
            "capacity_images_per_s": capacity,
            "phases": [{**asdict(p)} for p in phases],
            "checks": {
                "every_request_answered": answered,
                "overload_got_503": over.status.get("503", 0) > 0,
                "retry_after_on_every_503": all(p.retry_after_on_all_503 for p in phases),
                "no_status_other_than_200_503": not other,
                "drained_after_overload": drained,
                "recovered_all_200": rec.ok == rec.requests,
            },
            "server_rss_kib": {"after_warmup": rss_start, "end": phases[-1].server_rss_kib},
            "batches": {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
                        if line.startswith(("brandguard_batches_total ", "brandguard_batch_images_total ",
                                            "brandguard_admission_rejected_total "))},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(result: dict) -> str:
    rows = [f"{'phase':<12} {'clients':>7} {'rate/s':>7} {'reqs':>6} {'200':>6} {'503':>6} {'other':>6} "
            f"{'p50 ms':>8} {'p99 ms':>8} {'img/s':>7} {'RSS MiB':>8}"]
    for p in result["phases"]:
        other = sum(v for k, v in p["status"].items() if k not in ("200", "503")) + p["transport_errors"]
        rows.append(f"{p['name']:<12} {p['concurrency'] or '-':>7} {p['offered_rate'] or '-':>7} {p['requests']:>6} "
                    f"{p['status'].get('200', 0):>6} {p['status'].get('503', 0):>6} {other:>6} "
                    f"{p['p50_ms'] if p['p50_ms'] is not None else '-':>8} "
                    f"{p['p99_ms'] if p['p99_ms'] is not None else '-':>8} {p['images_per_s']:>7} "
                    f"{(p['server_rss_kib'] or 0) / 1024:>8.1f}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of real photos (JPEG/PNG)")
    ap.add_argument("--n-photos", type=int, default=200, help="photos used (half as references at most)")
    ap.add_argument("--n-refs", type=int, default=60, help="photos indexed as references")
    ap.add_argument("--bundle", type=Path, default=None, help="serve this indexed bundle instead of building one")
    ap.add_argument("--model-bundle", type=Path, default=None, help="model to index with (default: shipped)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=400, help="requests per closed-loop phase")
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--overload-factor", type=float, default=2.0)
    ap.add_argument("--overload-seconds", type=float, default=5.0)
    ap.add_argument("--overload-procs", type=int, default=3, help="load-generator processes for the overload")
    ap.add_argument("--recovery-clients", type=int, default=4)
    ap.add_argument("--recovery-requests", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1, help="server ONNX Runtime / FAISS threads")
    ap.add_argument("--decode-threads", type=int, default=2)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--queue-size", type=int, default=32,
                    help="small on purpose (a fraction of a second of work): overload must be shed")
    ap.add_argument("--max-inflight", type=int, default=None, help="admission bound; default queue_size")
    ap.add_argument("--batch-window-ms", type=float, default=2.0)
    ap.add_argument("--out", type=Path, default=Path("bench_out/http.json"))
    args = ap.parse_args(argv)
    if max(args.concurrency) > (args.max_inflight or args.queue_size):
        print("note: more clients than the admission bound; closed-loop phases will see 503s", file=sys.stderr)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(json.dumps(result["checks"]))
    print(f"wrote {args.out}")
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
