"""Hostile HTTP clients against the real service (issue #16, service part). No mocks.

Connection-level behaviour (slow uploads, per-key limits, floods of large images) is tested
against real uvicorn servers on loopback: in this process (``serving``) or, where the server's
memory is measured, in a subprocess (``http_load.ServerProcess``). Every case here failed
before its fix: a lock-out, a 500 with a dropped connection, or a stall.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import select
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from test_serve import build_bundle, serving
from test_serve_load import hl
from tests_helpers import blob_image, encode

from brandguard.cases.leads import LeadStore


def png16(side: int = 6300) -> bytes:
    """A 16-bit greyscale PNG of ``side`` x ``side`` (~40 M pixels, under the pixel limit) in ~90 KB."""
    row = (np.arange(side, dtype=np.uint32) * 65535 // side).astype(np.uint16)
    arr = np.tile((row // 4096) * 4096, (side, 1))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


@pytest.fixture(scope="module")
def large_png() -> bytes:
    data = png16()
    with Image.open(io.BytesIO(data)) as im:
        assert (im.mode, im.size) == ("I;16", (6300, 6300)) and len(data) < 200_000
    return data


def new_keys(db: Path, role: str, n: int) -> list[str]:
    store = LeadStore(db)
    try:
        return [store.create_key(role)[0] for _ in range(n)]
    finally:
        store.close()


class Drip:
    """A raw HTTP/1.1 upload whose body trickles in ``chunk`` bytes every ``interval`` seconds.

    It stops sending as soon as the server answers (or after ``give_up_s``) and keeps the answer.
    """

    def __init__(self, url: str, path: str, token: str, *, length: int = 50_000, chunk: int = 1,
                 interval: float = 0.25, give_up_s: float = 30.0) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        head = (f"POST {path} HTTP/1.1\r\nHost: {parts.hostname}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: image/jpeg\r\nContent-Length: {length}\r\n\r\n")
        self.sock.sendall(head.encode())
        self.length, self.chunk, self.interval, self.give_up_s = length, chunk, interval, give_up_s
        self.sent = 0
        self.answer = b""
        self.answered_at: float | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + self.give_up_s
        try:
            while time.monotonic() < deadline and self.sent < self.length:
                readable, _, _ = select.select([self.sock], [], [], self.interval)
                if readable:
                    self._read_answer()
                    return
                self.sock.sendall(b"\xff" * self.chunk)
                self.sent += self.chunk
            self._read_answer()
        except (OSError, ValueError):  # ValueError: the test closed the socket (fd -1) mid-select
            pass
        finally:
            self.done.set()

    def _read_answer(self) -> None:
        self.answered_at = time.monotonic()
        self.sock.settimeout(5)
        while True:  # the server closes the connection after answering an unfinished upload
            data = self.sock.recv(65536)
            if not data:
                break
            self.answer += data

    @property
    def status(self) -> int | None:
        m = re.match(rb"HTTP/1\.[01] (\d{3})", self.answer)
        return int(m.group(1)) if m else None

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=10)


# --------------------------------------------------------------------------- one server for most cases
@pytest.fixture(scope="module")
def hostile(tiny_bundle, tmp_path_factory):
    """Small in-flight bound, short body timeouts, a per-key bound of 3, ops endpoints private."""
    with serving(tiny_bundle, tmp_path_factory.mktemp("hostile_http"), max_inflight=4, queue_size=8,
                 max_files=4, body_timeout_s=8.0, body_min_rate=64, body_rate_grace_s=5.0,
                 max_inflight_per_key=3, public_metrics=False) as s:
        yield s


def _check(served, key: str, image: bytes, **kw) -> httpx.Response:
    with httpx.Client(base_url=served.url, timeout=20, headers={"Authorization": f"Bearer {key}"}) as c:
        return c.post("/v1/check", content=image, **kw)


def test_slow_uploads_do_not_lock_out_checks_and_get_408(hostile):
    """Issue #16.4: drips used to hold the in-flight door (before auth, with no body timeout)."""
    drips = [Drip(hostile.url, "/v1/check", key, interval=0.25)
             for key in new_keys(hostile.settings.leads_db, "scanner", 6)]  # more drips than max_inflight (4)
    try:
        time.sleep(0.6)  # every drip is authenticated and inside its body by now
        assert all(d.sent > 0 and d.status is None for d in drips)
        r = _check(hostile, hostile.keys["scanner"], hostile.images["copy_acme"])
        answered = time.monotonic()
        assert r.status_code == 200 and r.json()["verdict"] == "copy", r.text
        ready = httpx.get(f"{hostile.url}/readyz", headers={"Authorization": f"Bearer {hostile.keys['admin']}"}).json()
        assert ready["inflight"] == 0  # the drips were never admitted
        for d in drips:
            assert d.done.wait(20), "a slow upload was never cut off"
        assert [d.status for d in drips] == [408] * len(drips)
        # the check was answered while every drip was still connected
        assert all(d.answered_at is not None and answered < d.answered_at for d in drips)
        assert all(b"bytes/s" in d.answer for d in drips)  # cut for being too slow, and told so
    finally:
        for d in drips:
            d.close()
    # and the service is fine afterwards
    assert _check(hostile, hostile.keys["scanner"], hostile.images["copy_bolt"]).status_code == 200


def test_body_that_never_finishes_gets_408(hostile):
    """Fast enough for the minimum rate (200 B/s >= 64 B/s) but not done within body_timeout_s."""
    (key,) = new_keys(hostile.settings.leads_db, "scanner", 1)
    d = Drip(hostile.url, "/v1/check", key, length=200_000, chunk=50, interval=0.25)
    try:
        assert d.done.wait(30)
        assert d.status == 408
        assert b"within 8" in d.answer
    finally:
        d.close()


def test_per_key_concurrency_limit_answers_429(hostile):
    key, other = new_keys(hostile.settings.leads_db, "scanner", 2)
    drips = [Drip(hostile.url, "/v1/check", key, interval=0.25) for _ in range(3)]  # the key's 3 slots
    try:
        time.sleep(0.6)
        r = _check(hostile, key, hostile.images["copy_acme"])
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, r.text
        assert r.json()["error"] == "too_many_requests" and "3" in r.json()["detail"]
        assert _check(hostile, other, hostile.images["copy_acme"]).status_code == 200  # other keys are not held
    finally:
        for d in drips:
            d.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the slots are given back once the drips are gone
        if (r := _check(hostile, key, hostile.images["copy_acme"])).status_code == 200:
            break
        time.sleep(0.2)
    assert r.status_code == 200


# --------------------------------------------------------------------------- field validation
def _batch(served, listings: str, files: int = 1) -> httpx.Response:
    with served.client("scanner") as c:
        return c.post("/v1/check/batch", files=[("file", (f"{i}.jpg", served.images["copy_acme"], "image/jpeg"))
                                                for i in range(files)], data={"listings": listings})


@pytest.mark.parametrize("name,listings,field", [
    ("nested 1500 deep", "[" * 1500 + "]" * 1500, "listings"),
    ("nested inside a field", '[{"listing_id": ' + "[" * 1500 + "]" * 1500 + "}]", "listings"),
    ("1 followed by 400 zeros", '[{"listing_id": "P-1", "price": 1' + "0" * 400 + "}]", "listings[0].price"),
    ("4401 digits", '[{"listing_id": "P-2", "price": ' + "7" * 4401 + "}]", "listings"),
    ("lone surrogate on a flagged image", '[{"listing_id": "\\ud800"}]', "listings"),
    ("surrogate in seller_id", '[{"listing_id": "S-1", "seller_id": "a\\udfff"}]', "listings"),
    ("negative price", '[{"listing_id": "P-3", "price": -1}]', "listings[0].price"),
    ("absurd price", '[{"listing_id": "P-4", "price": 1e300}]', "listings[0].price"),
    ("long listing id", json.dumps([{"listing_id": "x" * 600}]), "listings[0].listing_id"),
    ("unknown depth", '[{"depth": "deepest"}]', "listings[0].depth"),
    ("not a list", '{"listing_id": "a"}', "listings"),
])
def test_batch_listings_are_validated_never_500(hostile, name, listings, field):
    """Issue #16.5: RecursionError, OverflowError, ValueError and UnicodeEncodeError were 500s."""
    r = _batch(hostile, listings)
    assert r.status_code == 400, (name, r.status_code, r.text[:300])
    body = r.json()
    assert body["error"] == "bad_request" and body["detail"].startswith(field), (name, body["detail"][:200])


def test_batch_listings_count_must_match_files(hostile):
    r = _batch(hostile, json.dumps([{"listing_id": "a"}] * 5), files=2)
    assert r.status_code == 400 and "2 objects" in r.json()["detail"]


def _multipart(fields: dict[str, bytes], image: bytes, charset: str) -> tuple[bytes, str]:
    """A hand-made multipart body: httpx refuses to encode lone surrogates, a hostile client does not."""
    boundary = "hostileboundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'.encode() + v + b"\r\n"
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
                 f"Content-Type: image/jpeg\r\n\r\n".encode() + image + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}; charset={charset}"


@pytest.mark.parametrize("path", ["/v1/check", "/v1/complaints"])
def test_form_fields_are_validated_never_500(hostile, path):
    """The same fields as form fields: a charset that decodes to lone surrogates, huge numbers."""
    role = "scanner" if path == "/v1/check" else "brand:acme"
    with hostile.client(role) as c:
        body, ctype = _multipart({"listing_id": b"\\ud800"}, hostile.images["copy_acme"], "unicode_escape")
        r = c.post(path, content=body, headers={"Content-Type": ctype})
        assert r.status_code == 400 and r.json()["detail"].startswith("listing_id"), r.text[:300]
        for price in (b"1" + b"0" * 400, b"7" * 4401, b"nan", b"-3"):
            body, ctype = _multipart({"listing_id": b"F-1", "price": price}, hostile.images["copy_acme"], "utf-8")
            r = c.post(path, content=body, headers={"Content-Type": ctype})
            assert r.status_code == 400 and r.json()["detail"].startswith("price"), (price[:10], r.text[:300])
        r = c.post(path, content=hostile.images["copy_acme"], params={"listing_id": "Q-1", "price": "1e400"})
        assert r.status_code == 400 and r.json()["detail"].startswith("price")


def test_json_bodies_refuse_lone_surrogates(hostile):
    lead = _check(hostile, hostile.keys["scanner"], hostile.images["copy_acme"],
                  params={"listing_id": "J-1"}).json()["lead_id"]
    with hostile.client("brand:acme") as c:
        r = c.post(f"/v1/leads/{lead}/feedback", content=b'{"status": "sent", "note": "x\\ud800"}',
                   headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500 and "note" in r.text, r.text[:300]


def test_json_body_over_the_limit_is_413_naming_it(hostile):
    """Issue #16.6: it was 400 'There was an error parsing the body'."""
    big = json.dumps({"status": "sent", "note": "x" * 70_000}).encode()
    with hostile.client("brand:acme") as c:
        r = c.post("/v1/leads/1/feedback", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large", r.text[:300]
        assert str(hostile.settings.max_json_bytes) in r.json()["detail"]

        def chunks():  # no Content-Length: the cap applies while the body streams
            for i in range(0, len(big), 8192):
                yield big[i:i + 8192]

        r = c.post("/v1/leads/1/feedback", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and str(hostile.settings.max_json_bytes) in r.json()["detail"]


# --------------------------------------------------------------------------- ops endpoints
OPS_PATHS = ("/metrics", "/openapi.json", "/docs")


def test_ops_endpoints_need_an_admin_key_when_not_public(hostile):
    with hostile.client() as c:
        for path in OPS_PATHS:
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers={"Authorization": f"Bearer {hostile.keys['scanner']}"}).status_code == 403
            assert c.get(path, headers={"Authorization": f"Bearer {hostile.keys['admin']}"}).status_code == 200
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}  # no hashes, no counts
        full = c.get("/readyz", headers={"Authorization": f"Bearer {hostile.keys['admin']}"}).json()
        assert len(full["model_sha256"]) == 64 and full["index_count"] == 4
        metrics = c.get("/metrics", headers={"Authorization": f"Bearer {hostile.keys['admin']}"}).text
        assert "brandguard_model_info{" in metrics


def test_ops_endpoints_are_public_when_configured(tiny_bundle, tmp_path):
    with serving(tiny_bundle, tmp_path, public_metrics=True) as s, s.client() as c:
        for path in OPS_PATHS:
            assert c.get(path).status_code == 200, path
        assert "model_sha256" in c.get("/readyz").json()


def test_public_metrics_default_follows_the_bind_address():
    from brandguard.serve.__main__ import add_arguments, build_settings

    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def settings(*argv: str):
        return build_settings(parser.parse_args(["--bundle", "/nonexistent", *argv]))

    assert settings().public_metrics is None  # loopback (the default host): public
    assert settings("--host", "::1").public_metrics is None
    assert settings("--host", "0.0.0.0").public_metrics is False
    assert settings("--host", "10.1.2.3").public_metrics is False
    assert settings("--host", "0.0.0.0", "--public-metrics").public_metrics is True
    assert settings("--no-public-metrics").public_metrics is False


# --------------------------------------------------------------------------- large decodes
def test_request_timeout_covers_decoding(tiny_bundle, tmp_path, large_png):
    """Four 40 M-pixel 16-bit PNGs decode one after another in the large-image lane (about 0.25 s
    each on an idle core, more on a busy one): the 0.3 s request timeout answers 504 before
    decoding ends, whatever the machine's load."""
    with serving(tiny_bundle, tmp_path, request_timeout_s=0.3, large_decode_threads=1) as s, \
            s.client("scanner") as c:
        t0 = time.perf_counter()
        r = c.post("/v1/check/batch", files=[("file", (f"{i}.png", large_png, "image/png")) for i in range(4)])
        slow = time.perf_counter() - t0
        assert r.status_code == 504 and r.json()["error"] == "inference_timeout", r.text[:300]
        t0 = time.perf_counter()
        ok = c.post("/v1/check", content=s.images["copy_acme"])
        assert ok.status_code in (200, 504)  # 0.3 s is tight on a loaded machine: a 504 is allowed, nothing else
    print(f"504 after {slow:.2f}s")


def test_images_refused_by_the_decode_budget_free_their_in_flight_slots(tiny_bundle, tmp_path, large_png):
    """A batch of 4 large PNGs with room in its budget for one: while that one decodes, the 3 refused
    ones no longer hold the in-flight bound (4), so another client's 3 images are admitted."""
    with serving(tiny_bundle, tmp_path, max_inflight=4, max_files=4, queue_size=8,
                 decode_budget_bytes=256 * 1024 * 1024) as s, s.client("scanner") as c:
        result: dict = {}

        def send_large() -> None:
            with s.client("scanner") as big:
                result["r"] = big.post("/v1/check/batch", files=[("file", (f"{i}.png", large_png, "image/png"))
                                                                 for i in range(4)])

        sender = threading.Thread(target=send_large)
        sender.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and httpx.get(f"{s.url}/readyz").json().get("large_decodes", 0) == 0:
            time.sleep(0.02)  # the budget has been applied and the large decode runs
        r = c.post("/v1/check/batch", files=[("file", (f"{b}.jpg", s.images[f"copy_{b}"], "image/jpeg"))
                                             for b in ("acme", "bolt", "cora")])
        still_decoding = sender.is_alive()
        sender.join()
    assert r.status_code == 200, r.text[:300]
    assert [x["brand"] for x in r.json()["results"]] == ["acme", "bolt", "cora"]
    assert still_decoding  # the large batch was in flight the whole time
    assert [x.get("reason") for x in result["r"].json()["results"]].count("decode_budget") == 3


def _vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def test_batch_of_large_16bit_pngs_neither_stalls_checks_nor_blows_memory(tiny_bundle, tmp_path, large_png):
    """Issue #16.1: 16 of them in one batch peaked at 5.9 GB and stalled ordinary checks 31-56 s."""
    bundle = build_bundle(tiny_bundle, tmp_path)
    normal = encode(blob_image(100)[10:230, 15:305], "JPEG", quality=70)
    opts = dict(threads=1, max_batch=16, queue_size=32, max_files=16, decode_threads=2)
    with hl.ServerProcess(bundle, tmp_path, opts) as srv, \
            httpx.Client(base_url=srv.url, timeout=60, headers={"Authorization": f"Bearer {srv.key}"}) as c:
        for _ in range(5):  # warm up
            assert c.post("/v1/check", content=normal).status_code == 200
        base_kib = _vm_kib(srv.proc.pid, "VmRSS")
        flood: dict = {}

        def send_batch() -> None:
            r = httpx.post(f"{srv.url}/v1/check/batch", headers={"Authorization": f"Bearer {srv.key}"}, timeout=120,
                           files=[("file", (f"{i}.png", large_png, "image/png")) for i in range(16)])
            flood["response"] = r

        sender = threading.Thread(target=send_batch)
        sender.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and srv.readyz().get("inflight", 0) == 0 and sender.is_alive():
            time.sleep(0.05)  # until the batch is admitted and decoding
        latencies = []
        while sender.is_alive() or len(latencies) < 3:
            t0 = time.perf_counter()
            r = c.post("/v1/check", content=normal)
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 200 and r.json()["verdict"] == "copy", r.text[:300]
            time.sleep(0.05)
        sender.join()
        peak_kib = _vm_kib(srv.proc.pid, "VmHWM")
    r = flood["response"]
    assert r.status_code == 200, r.text[:300]
    reasons = [x.get("reason") for x in r.json()["results"]]
    refused = reasons.count("decode_budget")
    print(f"normal check latencies during the flood (s): {[round(x, 3) for x in latencies]}; "
          f"server RSS before {base_kib // 1024} MiB, peak {peak_kib // 1024} MiB; refused {refused}/16")
    assert max(latencies) < 2.0, latencies  # the bound
    # The issue saw 5.9 GB. Large decodes run one at a time in their own lane (and the decoder's 16-bit path
    # works in strips): ~0.1-0.2 GiB here. Before both fixes two float64 decodes at once took ~2.2 GiB.
    assert peak_kib - base_kib < 1024 * 1024, (base_kib, peak_kib)
    assert 0 < refused < 16, reasons  # some were decoded, the rest refused from their headers


# ---------------------------------------------------------------- brands against each other (#16, 2 and 3)
def test_a_brand_cannot_take_over_another_brands_detections(tiny_bundle, tmp_path):
    """bolt registers acme's public logo (re-saved as JPEG q95) as its own: the reference is
    held for an admin (202), acme's verdict and the scanner's lead stay acme's; only an admin's
    approval makes it live, and every step is in the audit log."""
    with serving(tiny_bundle, tmp_path, max_upload_bytes=2_000_000) as s:
        stolen = encode(blob_image(100), "JPEG", quality=95)
        listing = s.images["copy_acme"]
        with s.client("scanner") as scanner, s.client("brand:acme") as acme, s.client("brand:bolt") as bolt, \
                s.client("admin") as admin:
            before = scanner.post("/v1/check", content=listing, params={"listing_id": "L1"}).json()
            acme_before = acme.post("/v1/check", content=listing).json()
            assert before["brand"] == "acme" and before["verdict"] in ("copy", "knockoff") and before["lead_id"]
            r = bolt.post("/v1/references", files={"file": ("s.jpg", stolen, "image/jpeg")},
                          data={"reference_id": "bolt/stolen-logo_clean-jpeg"})
            assert r.status_code == 202, r.text
            held = r.json()
            assert held["status"] == "held" and "acme" not in json.dumps(held)  # no other brand's ids leak
            refs = admin.get("/v1/references", params={"brand": "bolt"}).json()["references"]
            assert "bolt/stolen-logo_clean-jpeg" not in {x["reference_id"] for x in refs}

            after = scanner.post("/v1/check", content=listing, params={"listing_id": "L1"}).json()
            acme_after = acme.post("/v1/check", content=listing).json()
            assert (after["verdict"], after["brand"], after["lead_id"]) == \
                   (before["verdict"], before["brand"], before["lead_id"])
            assert (acme_after["verdict"], acme_after["brand"]) == (acme_before["verdict"], acme_before["brand"])
            leads = admin.get("/v1/leads").json()["leads"]
            assert [(x["listing_id"], x["brand"]) for x in leads] == [("L1", "acme")]

            # bolt sees its held reference without acme's ids; only an admin decides
            mine = bolt.get("/v1/references/held").json()["held"]
            assert [h["reference_id"] for h in mine] == ["bolt/stolen-logo_clean-jpeg"] and mine[0]["conflicts"] == 1
            assert acme.get("/v1/references/held").json()["held"] == []
            assert bolt.post(f"/v1/references/held/{held['held_id']}/approve").status_code == 403
            full = admin.get("/v1/references/held").json()["held"]
            assert full[0]["conflicts"][0]["brand"] == "acme"
            r = admin.post(f"/v1/references/held/{held['held_id']}/reject", params={"note": "acme's logo"})
            assert r.status_code == 200 and r.json()["status"] == "rejected"
            assert admin.post(f"/v1/references/held/{held['held_id']}/approve").status_code == 400
            assert admin.post("/v1/references/held/nope/approve").status_code == 404
            audit = admin.get("/v1/references/audit").json()["entries"]
            assert [e["action"] for e in audit][:2] == ["reject", "hold"]
            assert audit[1]["actor"].startswith("brand:bolt key ") and bolt.get("/v1/references/audit").status_code == 403
            # a reference that copies nobody goes live at once (201), audited as an add
            own = encode(blob_image(555), "PNG")
            r = bolt.post("/v1/references", files={"file": ("o.png", own, "image/png")},
                          data={"reference_id": "bolt/own"})
            assert r.status_code == 201 and r.json()["status"] == "live"
            assert admin.get("/v1/references/audit").json()["entries"][0]["action"] == "add"

            # An admin approves bolt's copy of the very listing image (say, a co-branding licence):
            # unscoped checks now find bolt's reference first, but acme's own check is computed over
            # acme's references only, so acme still sees its detection.
            r = bolt.post("/v1/references", files={"file": ("l.jpg", listing, "image/jpeg")},
                          data={"reference_id": "bolt/licensed"})
            assert r.status_code == 202
            assert admin.post(f"/v1/references/held/{r.json()['held_id']}/approve").json()["status"] == "approved"
            assert admin.post("/v1/check", content=listing).json()["brand"] == "bolt"
            mine = acme.post("/v1/check", content=listing).json()
            assert mine["brand"] == "acme" and mine["verdict"] in ("copy", "knockoff")
            assert all(h["brand"] == "acme" for h in mine["top"])


def test_a_brand_keys_check_is_computed_over_its_own_references_only(hostile):
    """With acme's key, a listing that copies cora's logo is clear with nothing of cora's in the
    answer: no score, region, candidate or evidence derived from another brand's references."""
    with hostile.client("brand:acme") as acme, hostile.client("admin") as admin:
        full = admin.post("/v1/check", content=hostile.images["copy_cora"]).json()
        assert full["brand"] == "cora" and full["score"] is not None
        mine = acme.post("/v1/check", content=hostile.images["copy_cora"]).json()
        assert mine["verdict"] == "clear" and mine["brand"] is None
        text = json.dumps(mine)
        assert "cora" not in text and f"{full['score']:.4f}"[:6] not in text
        assert all(h["brand"] == "acme" for h in mine["top"])
        own = acme.post("/v1/check", content=hostile.images["copy_acme"]).json()
        assert own["brand"] == "acme" and own["verdict"] in ("copy", "knockoff")
