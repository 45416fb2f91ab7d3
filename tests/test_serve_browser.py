"""The review page in a real browser: headless Chromium driven over the DevTools protocol.

The server is the real app under uvicorn on loopback (as in test_serve.py); Chromium loads
``/review``, a key is typed into the page, "Load leads" is clicked with real mouse events, the
card is inspected in the DOM, a feedback button is clicked, and the change is then checked
through the API and in the SQLite database. A screenshot of the page is saved in the test's
tmp dir (and copied to ``$BRANDGUARD_SCREENSHOT_DIR`` when set, to look at it).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from brandguard.cases.leads import LeadStore
from test_serve import serving

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def chromium_binary() -> str | None:
    env = os.environ.get("BRANDGUARD_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return next((p for p in map(shutil.which, CHROMIUM_CANDIDATES) if p), None)


class CDP:
    """A minimal DevTools-protocol client: one page target, commands answered in order, events skipped."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        # No Origin header is sent, so Chromium accepts the connection without --remote-allow-origins.
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(ws_url, max_size=64 * 1024 * 1024, open_timeout=10))
        self._ids = itertools.count(1)

    def send(self, method: str, timeout: float = 15.0, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer to {method} within {timeout}s")
            reply = json.loads(self.ws.recv(timeout=remaining))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def eval(self, expression: str) -> Any:
        """Evaluate JS in the page (promises awaited); returns the value, raises on a JS exception."""
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error in {expression[:80]!r}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15.0, what: str = "") -> Any:
        """Poll a JS expression until it is truthy in JS (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.eval(f"!!({expression})")
            if value:
                return value
            time.sleep(0.05)
        page = self.eval("document.body ? document.body.innerText.slice(0, 800) : ''")
        raise AssertionError(f"timed out waiting for {what or expression}; the page shows:\n{page}")

    def click(self, selector_js: str) -> None:
        """A real mouse click (press + release) at the centre of the element ``selector_js`` returns."""
        rect = self.eval(f"(() => {{ const e = {selector_js}; e.scrollIntoView({{block: 'center'}}); "
                         f"const r = e.getBoundingClientRect(); return {{x: r.x + r.width / 2, y: r.y + r.height / 2}}; }})()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=rect["x"], y=rect["y"], button="left", clickCount=1)

    def type_into(self, selector_js: str, text: str) -> None:
        """Focus an input and type ``text`` as keyboard input (the page sees real input events)."""
        self.click(selector_js)
        self.send("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self._stack.close()


# No name resolves but the loopback address: a page that needs the internet fails to load its files.
OFFLINE_ARGS = ("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",)


def launch_chromium(binary: str, profile: Path, extra_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen, CDP]:
    """Start headless Chromium with a fresh profile and connect to its first page target."""
    proc = subprocess.Popen(
        [binary, *extra_args, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--window-size=1280,900",
         f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port_file = profile / "DevToolsActivePort"  # Chromium writes the port it picked here (no port race)
    deadline = time.monotonic() + 30
    while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"chromium did not start: {proc.stderr.read().decode(errors='replace')[-2000:]}")
        time.sleep(0.05)
    port = int(port_file.read_text().splitlines()[0])
    import httpx

    for _ in range(100):
        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json() if t["type"] == "page"]
        if pages:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("chromium has no page target")
    return proc, CDP(pages[0]["webSocketDebuggerUrl"])


@contextlib.contextmanager
def _chromium(tmp_path: Path, extra_args: tuple[str, ...] = ()):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary (install Debian's chromium, or set BRANDGUARD_CHROMIUM)")
    profile = Path(tempfile.mkdtemp(prefix="bg-chromium-", dir=tmp_path))
    proc, cdp = launch_chromium(binary, profile, extra_args)
    try:
        cdp.send("Page.enable")
        cdp.send("Runtime.enable")
        cdp.send("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        yield cdp
    finally:
        cdp.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser(tmp_path):
    with _chromium(tmp_path) as cdp:
        yield cdp


@pytest.fixture
def offline_browser(tmp_path):
    """Chromium that can reach 127.0.0.1 and nothing else (no CDN, no DNS)."""
    with _chromium(tmp_path, OFFLINE_ARGS) as cdp:
        yield cdp


def test_review_page_shows_lead_and_records_feedback(browser, tiny_bundle, tmp_path):
    with serving(tiny_bundle, tmp_path / "srv") as s:
        with s.client("scanner") as c:
            r = c.post("/v1/check", files={"file": ("l.jpg", s.images["copy_acme"], "image/jpeg")},
                       data={"listing_id": "WEB-1", "seller_id": "s-77", "price": "9.5"})
            lead_id = r.json()["lead_id"]
            c.post("/v1/check", content=s.images["copy_bolt"], params={"listing_id": "WEB-bolt"})
        assert lead_id

        cdp = browser
        cdp.send("Page.navigate", url=f"{s.url}/review")
        cdp.wait_for("document.readyState === 'complete' && !!document.getElementById('load')", what="page load")
        cdp.type_into("document.getElementById('key')", s.keys["brand:acme"])
        assert cdp.eval("document.getElementById('key').value") == s.keys["brand:acme"]
        cdp.click("document.getElementById('load')")

        card = f"document.querySelector('article.card[data-lead-id=\"{lead_id}\"]')"
        cdp.wait_for(card, what="the lead card")
        # Both images fetched with the key and decoded by the browser (blob: URLs).
        cdp.wait_for(f"[...{card}.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)",
                     what="listing and reference images")
        info = cdp.eval(f"""(() => {{
            const c = {card};
            const imgs = [...c.querySelectorAll('img')].map(i => {{
                const r = i.getBoundingClientRect();
                return {{alt: i.alt, src: i.src.slice(0, 5), x: r.x, y: r.y, w: i.naturalWidth, h: i.naturalHeight}};
            }});
            return {{imgs, badge: c.querySelector('.badge').textContent, text: c.innerText,
                    evidence: c.querySelector('.evidence') ? c.querySelector('.evidence').innerText : null,
                    buttons: [...c.querySelectorAll('.actions button')].map(b => b.dataset.action),
                    cards: document.querySelectorAll('article.card').length,
                    status: document.getElementById('status').textContent}};
        }})()""")
        listing, reference = info["imgs"]
        assert listing["alt"] == "listing WEB-1" and reference["alt"] == "reference acme/logo"
        assert listing["src"] == reference["src"] == "blob:"
        assert listing["x"] < reference["x"] and abs(listing["y"] - reference["y"]) < 2  # side by side
        assert (reference["w"], reference["h"]) == (320, 240)
        assert info["badge"] == "copy"
        assert "confidence" in info["text"] and "%" in info["text"] and "seller s-77" in info["text"]
        assert info["evidence"] and "similarity" in info["evidence"] and "acme/logo" in info["evidence"]
        assert "bolt/logo" not in info["evidence"]  # other brands' reference ids are not shown to acme
        assert "download evidence.zip" in info["evidence"]
        assert info["buttons"] == ["confirmed_counterfeit", "genuine", "dismissed", "test_buy", "sent"]
        assert info["cards"] == 1 and "for acme" in info["status"]  # bolt's lead is not shown to acme

        shot = cdp.screenshot(tmp_path / "review.png")
        assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("BRANDGUARD_SCREENSHOT_DIR"):
            out = Path(os.environ["BRANDGUARD_SCREENSHOT_DIR"])
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, out / "review.png")

        cdp.type_into(f"{card}.querySelector('.actions input')", "notice sent from the browser")
        cdp.click(f"{card}.querySelector('.actions button[data-action=sent]')")
        cdp.wait_for(f"{card} && {card}.querySelector('.pill').textContent === 'sent'", what="status pill 'sent'")
        assert cdp.eval(f"[...{card}.querySelectorAll('.actions button')].map(b => b.dataset.action)") == \
            ["confirmed_counterfeit", "genuine", "dismissed", "test_buy", "undo"]

        with s.client("brand:acme") as c:
            lead = c.get(f"/v1/leads/{lead_id}").json()
        assert lead["status"] == "sent"
        assert lead["history"][-1]["note"] == "notice sent from the browser"
        assert lead["history"][-1]["who"].startswith("brand:acme/")
        store = LeadStore(s.settings.leads_db)
        try:
            assert store.get_lead(lead_id).status == "sent"
            assert [(h.from_status, h.status) for h in store.history(lead_id)] == [("new", "sent")]
        finally:
            store.close()


def test_review_page_draws_local_match_outline_over_the_listing(browser, tiny_bundle, tmp_path):
    """A lead whose stored evidence has a local outline (original pixels) shows it over the listing
    image as an SVG, with the inliers and the deciding rule beside it."""
    from PIL import Image

    from brandguard.cases.leads import LeadInput

    outline = [[60.5, 40.0], [240.0, 55.0], [230.0, 190.5], [50.0, 170.0]]
    decided = "fused probability 0.93 >= 0.71; 45 inliers >= 15, outline covers 64% of the photo >= 25% -> copy"
    with serving(tiny_bundle, tmp_path / "srv") as s:
        with s.client("scanner") as c:
            lead_id = c.post("/v1/check", files={"file": ("l.jpg", s.images["copy_acme"], "image/jpeg")},
                             data={"listing_id": "WEB-outline"}).json()["lead_id"]
        assert lead_id
        store = LeadStore(s.settings.leads_db)
        try:  # the same lead, rescanned by the deep path: its evidence now carries the local match
            lead = store.get_lead(lead_id)
            verdict = dict(lead.evidence)
            verdict["evidence"] = {**verdict.get("evidence", {}), "image_size": [290, 220], "stage": "global+local",
                                   "fused_probability": 0.93, "decided_by": decided,
                                   "thresholds": {"flag_probability": 0.71, "copy_inliers": 15, "copy_area": 0.25,
                                                  "global_copy": 0.85},
                                   "local": {"inliers": 45, "votes": 70, "mirrored": False, "outline": outline,
                                             "box": [50, 40, 240, 190], "area_share": 0.64},
                                   "match_box": [50, 40, 240, 190]}
            store.upsert_lead(LeadInput(listing_id=lead.listing_id, brand=lead.brand, verdict=lead.verdict,
                                        confidence=lead.confidence, score=lead.score, reference_id=lead.reference_id,
                                        evidence=verdict, model_sha256=lead.model_sha256))
        finally:
            store.close()

        cdp = browser
        cdp.send("Page.navigate", url=f"{s.url}/review")
        cdp.wait_for("document.readyState === 'complete' && !!document.getElementById('load')", what="page load")
        cdp.type_into("document.getElementById('key')", s.keys["brand:acme"])
        cdp.click("document.getElementById('load')")
        card = f"document.querySelector('article.card[data-lead-id=\"{lead_id}\"]')"
        cdp.wait_for(f"{card} && [...{card}.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)",
                     what="the lead card and its images")
        info = cdp.eval(f"""(() => {{
            const c = {card}, img = c.querySelector('.shot img'), svg = c.querySelector('.shot svg.overlay');
            const m = svg && svg.querySelector('.match');
            const ir = img.getBoundingClientRect(), sr = svg ? svg.getBoundingClientRect() : null;
            return {{viewBox: svg && svg.getAttribute('viewBox'), tag: m && m.tagName, points: m && m.getAttribute('points'),
                    stroke: m && m.getAttribute('stroke'), title: m && m.querySelector('title').textContent,
                    note: c.querySelector('.match-note') ? c.querySelector('.match-note').innerText : null,
                    evidence: c.querySelector('.evidence').innerText,
                    img: {{x: ir.x + scrollX, y: ir.y + scrollY, w: ir.width, h: ir.height}},
                    svg: sr && {{x: sr.x + scrollX, y: sr.y + scrollY, w: sr.width, h: sr.height}}}};
        }})()""")
        assert info["viewBox"] == "0 0 290 220" and info["tag"] == "polygon"
        assert [[float(v) for v in p.split(",")] for p in info["points"].split()] == outline
        assert info["stroke"] == "#ff00ff" and "45 inliers" in info["title"] and decided in info["title"]
        assert info["note"] and "45 inliers" in info["note"] and decided in info["note"]
        assert "global+local" in info["evidence"] and "flag ≥ 0.71" in info["evidence"]
        assert all(abs(info["img"][k] - info["svg"][k]) < 1 for k in ("x", "y", "w", "h"))  # laid over the image

        # Where the outline must be on screen: object-fit: contain maps the 290x220 photo into the img box.
        img = info["img"]
        f = min(img["w"] / 290, img["h"] / 220)
        ox, oy = img["x"] + (img["w"] - 290 * f) / 2, img["y"] + (img["h"] - 220 * f) / 2
        shot = cdp.screenshot(tmp_path / "review_outline.png")
        if os.environ.get("BRANDGUARD_SCREENSHOT_DIR"):
            out = Path(os.environ["BRANDGUARD_SCREENSHOT_DIR"])
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, out / "review_outline.png")
        pic = Image.open(shot).convert("RGB")

        def magenta_near(x: float, y: float, r: int = 3) -> bool:
            px, py = int(round(ox + x * f)), int(round(oy + y * f))
            return any((lambda p: p[0] > 200 and p[2] > 200 and p[1] < 90)(pic.getpixel((px + dx, py + dy)))
                       for dx in range(-r, r + 1) for dy in range(-r, r + 1))

        for (x0, y0), (x1, y1) in zip(outline, outline[1:] + outline[:1]):
            assert magenta_near((x0 + x1) / 2, (y0 + y1) / 2), f"no outline near edge ({x0},{y0})-({x1},{y1})"
        assert not magenta_near(145, 115, r=6)  # inside the outline: the photo, not the stroke


def _key(cdp: CDP, key: str) -> None:
    """A real key press (down + up) as the page's keyboard shortcuts receive it."""
    code = ord(key.upper())
    cdp.send("Input.dispatchKeyEvent", type="keyDown", key=key, text=key, code=f"Key{key.upper()}",
             windowsVirtualKeyCode=code, nativeVirtualKeyCode=code)
    cdp.send("Input.dispatchKeyEvent", type="keyUp", key=key, code=f"Key{key.upper()}",
             windowsVirtualKeyCode=code, nativeVirtualKeyCode=code)


def test_reviewer_works_scan_made_leads_with_keyboard_undo_and_bulk(browser, tiny_bundle, tmp_path):
    """Leads made by ``brandguard scan --leads-db`` (not by the service): the listing image and the
    matched region's box are shown; the reviewer confirms one with the keyboard, undoes it, then
    dismisses two others at once; the database has every step in the history."""
    from PIL import Image

    from brandguard.cli.main import EXIT_OK, main
    from tests_helpers import blob_image, encode, save

    with serving(tiny_bundle, tmp_path / "srv") as s:
        cat = tmp_path / "cat"
        canvas = blob_image(900, 400, 534)
        canvas[0:240, 0:320] = blob_image(100)  # acme's reference in the top-left corner of a bigger photo
        save(canvas, cat / "grid.jpg", quality=90)
        rows = [{"listing_id": "SCAN-grid", "image": "grid.jpg", "seller_id": "s-1", "price": 9}]
        for i in (1, 2):
            (cat / f"c{i}.jpg").write_bytes(encode(blob_image(100)[4 * i:236, 6 * i:310], "JPEG", quality=70))
            rows.append({"listing_id": f"SCAN-{i}", "image": f"c{i}.jpg"})
        (cat / "cat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        assert main(["scan", str(cat / "cat.jsonl"), "--bundle", str(s.bundle), "--out", str(tmp_path / "out"),
                     "--workers", "0", "--no-progress", "--quiet", "--no-report", "--regions", "grid",
                     "--leads-db", str(s.settings.leads_db)]) == EXIT_OK
        store = LeadStore(s.settings.leads_db)
        try:
            ids = {x.listing_id: x.id for x in store.list_leads()}
        finally:
            store.close()
        assert set(ids) == {"SCAN-grid", "SCAN-1", "SCAN-2"}

        cdp = browser
        cdp.send("Page.navigate", url=f"{s.url}/review")
        cdp.wait_for("document.readyState === 'complete' && !!document.getElementById('load')", what="page load")
        cdp.type_into("document.getElementById('key')", s.keys["brand:acme"])
        cdp.click("document.getElementById('load')")
        card = f"document.querySelector('article.card[data-lead-id=\"{ids['SCAN-grid']}\"]')"
        cdp.wait_for(f"{card} && [...{card}.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)",
                     what="the scan-made lead with its listing and reference images")
        info = cdp.eval(f"""(() => {{
            const c = {card}, svg = c.querySelector('.shot svg.overlay'), m = svg && svg.querySelector('.match');
            const img = c.querySelector('.shot img'), r = img.getBoundingClientRect();
            return {{imgs: [...c.querySelectorAll('img')].map(i => [i.alt, i.naturalWidth, i.src.slice(0, 5)]),
                    viewBox: svg && svg.getAttribute('viewBox'), tag: m && m.tagName, source: m && m.dataset.source,
                    box: m && ['x', 'y', 'width', 'height'].map(k => Number(m.getAttribute(k))),
                    evidence: c.querySelector('.evidence').innerText, note: c.querySelector('.match-note').innerText,
                    img: {{x: r.x + scrollX, y: r.y + scrollY, w: r.width, h: r.height}}}};
        }})()""")
        (listing_alt, listing_w, listing_src), (ref_alt, ref_w, _) = info["imgs"]
        assert listing_alt == "listing SCAN-grid" and listing_w > 0 and listing_src == "blob:"  # no more 404
        assert ref_alt == "reference acme/logo" and ref_w == 320
        assert info["viewBox"] == "0 0 534 400" and (info["tag"], info["source"]) == ("rect", "region_box")
        assert info["box"] == [0, 0, 319, 240]
        assert "copy ≥ 0.8 · knockoff ≥ 0.6" in info["evidence"]  # the thresholds, and the rule that decided:
        assert "similarity 1.000 ≥ copy 0.80 → copy" in info["evidence"]
        assert "risk" in info["evidence"] and "top matches" in info["evidence"]
        assert "similarity" in info["note"] and "→ copy" in info["note"]

        # the box is on screen where the region is (object-fit: contain maps 534x400 into the img box)
        shot = cdp.screenshot(tmp_path / "review_scan_lead.png")
        if os.environ.get("BRANDGUARD_SCREENSHOT_DIR"):
            out = Path(os.environ["BRANDGUARD_SCREENSHOT_DIR"])
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, out / "review_scan_lead.png")
        pic = Image.open(shot).convert("RGB")
        img = info["img"]
        f = min(img["w"] / 534, img["h"] / 400)
        ox, oy = img["x"] + (img["w"] - 534 * f) / 2, img["y"] + (img["h"] - 400 * f) / 2

        def magenta_near(x: float, y: float, r: int = 3) -> bool:
            px, py = int(round(ox + x * f)), int(round(oy + y * f))
            return any((lambda p: p[0] > 200 and p[2] > 200 and p[1] < 90)(pic.getpixel((px + dx, py + dy)))
                       for dx in range(-r, r + 1) for dy in range(-r, r + 1))

        assert magenta_near(319, 120) and magenta_near(160, 240)  # right and bottom edges of the region box
        assert not magenta_near(420, 320, r=6)  # outside it: the photo

        # keyboard: focus the card, "c" confirms it as a counterfeit, "u" takes that back
        cdp.click(f"{card}.querySelector('.evidence h2')")
        cdp.wait_for(f"{card}.classList.contains('focused')", what="the focused card")
        _key(cdp, "c")
        cdp.wait_for(f"{card} && {card}.querySelector('.pill').textContent === 'confirmed_counterfeit'",
                     what="status confirmed_counterfeit")
        assert cdp.eval(f"[...{card}.querySelectorAll('.actions button')].map(b => b.dataset.action)") == ["undo"]
        _key(cdp, "u")
        cdp.wait_for(f"{card} && {card}.querySelector('.pill').textContent === 'new'", what="status new again")
        assert "undo: confirmed_counterfeit → new" in cdp.eval(f"{card}.querySelector('.history').innerText")

        # bulk: tick the two other cards, dismiss both with one click
        for lid in ("SCAN-1", "SCAN-2"):
            cdp.click(f"document.querySelector('article.card[data-lead-id=\"{ids[lid]}\"] .pick')")
        cdp.wait_for("document.getElementById('selected-count').textContent === '2 selected'", what="2 selected")
        cdp.click("document.querySelector('#bulk-actions button[data-action=dismissed]')")
        cdp.wait_for(" && ".join(f"document.querySelector('article.card[data-lead-id=\"{ids[lid]}\"] .pill')"
                                 f".textContent === 'dismissed'" for lid in ("SCAN-1", "SCAN-2")),
                     what="both dismissed")
        assert cdp.eval("document.getElementById('bulk-msg').textContent") == "dismissed: 2 updated"

        store = LeadStore(s.settings.leads_db)
        try:
            grid = [(h.kind, h.from_status, h.status) for h in store.history(ids["SCAN-grid"])]
            assert grid == [("decision", "new", "confirmed_counterfeit"), ("undo", "confirmed_counterfeit", "new")]
            assert store.get_lead(ids["SCAN-grid"]).status == "new"
            for lid in ("SCAN-1", "SCAN-2"):
                assert store.get_lead(ids[lid]).status == "dismissed"
                assert [(h.from_status, h.status) for h in store.history(ids[lid])] == [("new", "dismissed")]
        finally:
            store.close()


def test_docs_render_with_no_network(offline_browser, tiny_bundle, tmp_path):
    """/docs and /redoc in a browser that can reach nothing but the service: Swagger UI and ReDoc
    come from the installed package, and "Authorize" offers both key headers."""
    cdp = offline_browser
    with serving(tiny_bundle, tmp_path / "srv") as s:
        cdp.send("Page.navigate", url=f"{s.url}/docs")
        cdp.wait_for("document.querySelector('.swagger-ui .info .title') && "
                     "document.querySelectorAll('.swagger-ui .opblock').length > 10", what="Swagger UI's DOM")
        assert "brandguard" in cdp.eval("document.querySelector('.swagger-ui .info .title').innerText")
        urls = cdp.eval("performance.getEntriesByType('resource').map(e => e.name)")
        assert urls and all(u.startswith(s.url) for u in urls), urls  # every file from the service itself
        assert cdp.eval("fetch('https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css')"
                        ".then(() => 'reached', () => 'blocked')") == "blocked"  # the browser is offline indeed
        cdp.click("document.querySelector('.swagger-ui .btn.authorize')")
        cdp.wait_for("document.querySelectorAll('.swagger-ui .auth-container').length >= 2", what="the Authorize dialog")
        dialog = cdp.eval("document.querySelector('.swagger-ui .dialog-ux').innerText")
        assert "X-API-Key" in dialog and "bearer" in dialog.lower()

        cdp.send("Page.navigate", url=f"{s.url}/redoc")
        cdp.wait_for("document.querySelector('.api-content') && document.querySelector('.api-info h1')",
                     timeout=30, what="ReDoc's DOM")
        assert "brandguard" in cdp.eval("document.querySelector('.api-info h1').innerText")
