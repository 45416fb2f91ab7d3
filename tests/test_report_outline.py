"""The HTML scan report draws local-feature evidence on the listing: an SVG in the listing's
original pixels (viewBox ``0 0 W H``) with the thumbnail stretched over it and the reference's
projected outline (or the matched box) on top; the rule that decided is printed verbatim,
escaped; clear listings just under the flag threshold are listed as near misses.

Rows are built by hand in the shape of ``brandguard/scan/scanner.py``'s ``verdict_row``. The page is
parsed, then rendered in headless Chromium, and the outline's colour is looked for in the
screenshot where the outline should be.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from test_serve_browser import browser  # noqa: F401 - the headless Chromium fixture

from brandguard.scan.report import NEAR_MISS_LIMIT, OUTLINE_COLOUR, near_misses, write_html_report

W, H = 640, 480
OUTLINE = [[180.5, 120.0], [470.0, 140.5], [450.0, 380.0], [160.0, 350.5]]
DECIDED = "fused probability 0.93 >= 0.71; 45 inliers >= 15, outline covers 64% of the photo >= 25% -> copy"
EVIL_ID = "<script>alert('x')</script>&L1"
DEEP_THRESHOLDS = {"flag_probability": 0.71, "copy_inliers": 15, "copy_area": 0.25, "global_copy": 0.85}
FAST_THRESHOLDS = {"copy": 0.9, "knockoff": 0.62}


def make_image(path: Path, size=(W, H), seed: int = 0) -> Path:
    """A grey photo with a few dark shapes (no magenta anywhere)."""
    img = Image.new("RGB", size, (200, 205, 210))
    d = ImageDraw.Draw(img)
    d.rectangle([size[0] * 0.3, size[1] * 0.3, size[0] * 0.7, size[1] * 0.7], fill=(40, 60 + seed * 10, 90))
    d.ellipse([size[0] * 0.05, size[1] * 0.05, size[0] * 0.25, size[1] * 0.3], fill=(230, 180, 40))
    img.save(path, "JPEG", quality=90)
    return path


def row(listing_id: str, image: Path | None, verdict: str, score: float | None, evidence: dict,
        brand: str | None = "acme", ref: str | None = "acme/logo", **extra) -> dict:
    """A results row as ``verdict_row`` writes it (plus what ranking adds)."""
    return {"image_bytes": 1, "image_mtime_ns": 1, "image_sha256": "0" * 64, "listing_id": listing_id,
            "seller_id": "s-1", "title": "t", "price": 9.5, "image": str(image) if image else None,
            "verdict": verdict, "brand": brand if verdict in ("copy", "knockoff") else None,
            "confidence": 0.9 if verdict != "inconclusive" else None, "score": score,
            "reason": "unreadable_image" if verdict == "inconclusive" else None,
            "top_reference_id": ref, "top_references": json.dumps([]),
            "evidence": json.dumps(evidence, sort_keys=True), "model_sha256": "f" * 64, **extra}


def deep_evidence(**over) -> dict:
    ev = {"image_size": [W, H], "stage": "global+local", "fused_probability": 0.93, "global_score": 0.61,
          "thresholds": DEEP_THRESHOLDS, "calibrated": True, "region": "full",
          "local": {"inliers": 45, "votes": 80, "inlier_ratio": 0.56, "coverage": 0.3, "mirrored": False,
                    "instances": 1, "outline": OUTLINE, "box": [160, 120, 470, 380], "area_share": 0.64,
                    "scale": 0.4123, "rotation_deg": 4.2},
          "match_box": [160, 120, 470, 380], "decided_by": DECIDED}
    ev.update(over)
    return ev


class Svgs(HTMLParser):
    """Collects every inline SVG with its <image>, <polygon> and <rect> children (attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.svgs: list[dict] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg":
            self.svgs.append({"attrs": a, "image": None, "polygons": [], "rects": [], "titles": []})
        elif self.svgs and "svg" in self.stack:
            cur = self.svgs[-1]
            if tag == "image":
                cur["image"] = a
            elif tag == "polygon":
                cur["polygons"].append(a)
            elif tag == "rect":
                cur["rects"].append(a)
        if tag not in ("image", "img", "br", "meta"):
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "title" and "svg" in self.stack:
            self.svgs[-1]["titles"].append(data)


def points(attr: str) -> list[list[float]]:
    return [[float(v) for v in p.split(",")] for p in attr.split()]


@pytest.fixture
def report(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    listing = make_image(imgs / "listing.jpg")
    ref = make_image(imgs / "ref.jpg", size=(300, 300), seed=3)
    other = make_image(imgs / "other.jpg", size=(400, 300), seed=1)
    rows = [
        row(EVIL_ID, listing, "copy", 0.93, deep_evidence(), risk=0.95, lead="lead"),
        # Fast path with a degenerate box and scale: neither is printed; nothing is drawn.
        row("FAST-zero", other, "knockoff", 0.7, {
            "image_size": [400, 300], "thresholds": FAST_THRESHOLDS, "region": "full", "calibrated": True,
            "geometry": {"inliers": 3, "matches": 9, "box": [120, 40, 120, 200], "scale": 0.0,
                         "rotation_deg": 0.0, "mirrored": False}}, risk=0.5, lead="lead"),
        # Fast path with a real box and a small scale: the box is drawn as a rect, scale to 3 digits.
        row("FAST-box", other, "knockoff", 0.72, {
            "image_size": [400, 300], "thresholds": FAST_THRESHOLDS, "region": "full", "calibrated": True,
            "geometry": {"inliers": 12, "matches": 30, "box": [40, 30, 200, 150], "scale": 0.01234,
                         "rotation_deg": 12.0, "mirrored": True}}, risk=0.4, lead="lead"),
        row("BAD", None, "inconclusive", None, {"detail": "no such file"}, ref=None),
        # Clear rows: two near misses (fast 0.02 under, deep 0.06 under) and two that are not.
        row("NEAR-deep", other, "clear", 0.65, deep_evidence(
            fused_probability=0.65, decided_by="fused probability 0.65 < 0.71 -> clear")),
        row("NEAR-fast", other, "clear", 0.60, {"image_size": [400, 300], "thresholds": FAST_THRESHOLDS}),
        row("FAR-deep", other, "clear", 0.40, deep_evidence(fused_probability=0.4)),
        row("NO-thresholds", other, "clear", 0.70, {"note": "no references indexed"}),
    ]
    page = write_html_report(rows, {"acme/logo": str(ref)}, tmp_path / "report.html", title="outline <test>",
                             summary={"verdicts": {"copy": 1, "knockoff": 2, "clear": 4, "inconclusive": 1}})
    return page, page.read_text(encoding="utf-8")


def test_outline_polygon_is_drawn_in_original_pixels(report):
    _, text = report
    parser = Svgs()
    parser.feed(text)
    drawn = [s for s in parser.svgs if s["polygons"]]
    assert len(drawn) == 2  # the copy card, and the deep near miss that carries an outline
    card = drawn[0]
    assert card["attrs"]["viewbox"] == f"0 0 {W} {H}"
    # Shown at 170 px on the long side, the original aspect ratio kept.
    assert (card["attrs"]["width"], card["attrs"]["height"]) == ("170", str(round(H * 170 / W)))
    image = card["image"]
    assert image["href"].startswith("data:image/jpeg;base64,")
    assert (image["x"], image["y"], image["width"], image["height"]) == ("0", "0", str(W), str(H))
    assert image["preserveaspectratio"] == "none"
    match = [p for p in card["polygons"] if p.get("class") == "match"]
    assert len(match) == 1
    assert points(match[0]["points"]) == OUTLINE
    assert match[0]["stroke"] == OUTLINE_COLOUR
    assert card["titles"] and "45 inliers" in card["titles"][0] and DECIDED in card["titles"][0]


def test_fast_box_is_a_rect_and_degenerate_evidence_is_not_printed(report):
    _, text = report
    parser = Svgs()
    parser.feed(text)
    rects = [s for s in parser.svgs if s["rects"]]
    assert len(rects) == 1
    r = [x for x in rects[0]["rects"] if x.get("class") == "match"][0]
    assert rects[0]["attrs"]["viewbox"] == "0 0 400 300"
    assert (r["x"], r["y"], r["width"], r["height"]) == ("40", "30", "160", "120")
    assert "matched box [40, 30, 200, 150]" in text
    assert "scale 0.0123" in text and "mirrored" in text
    # The zero-width box [120, 40, 120, 200] and the zero scale of FAST-zero appear nowhere.
    assert "120, 40, 120, 200" not in text and "[120, 40, 120, 200]" not in text
    assert "scale 0.00" not in text and "scale 0," not in text
    zero_card = re.search(r"FAST-zero</code>.*?</div></div>", text, re.S).group(0)
    assert "keypoints: <b>3</b> consistent of 9 matched" in zero_card
    assert "matched box" not in zero_card and "scale" not in zero_card and "<rect" not in zero_card


def test_decided_by_and_ids_are_escaped(report):
    _, text = report
    assert "<script>alert" not in text and "alert('x')" not in text
    assert text.count("<script>") == 1  # the page's own sort/filter script, nothing from the data
    assert html.escape(EVIL_ID) in text
    assert html.escape(DECIDED) in text and DECIDED not in text  # verbatim, escaped (">=" and "->")
    assert "<title>outline &lt;test&gt;</title>" in text
    card = re.search(re.escape(html.escape(EVIL_ID)) + r".*?</div></div>", text, re.S).group(0)
    assert "stage <b>global+local</b>" in card and "<b>45</b> inliers" in card
    assert "fused probability <b>0.930</b>" in card
    assert "flag ≥ 0.71" in card and "≥ 15 inliers covering ≥ 25%" in card and "global ≥ 0.85" in card
    assert "scale 0.412" in card and "box [160, 120, 470, 380]" in card


def test_near_misses_are_listed_closest_first(report):
    _, text = report
    section = text[text.index("<h2>Near misses</h2>"):]
    ids = re.findall(r'<li class="near-miss" data-margin="([-0-9.]+)">.*?<code>([^<]*)</code>', section, re.S)
    assert [i for _, i in ids] == ["NEAR-fast", "NEAR-deep"]
    assert [float(m) for m, _ in ids] == pytest.approx([0.02, 0.06])
    assert "0.020 below" in section and "0.060 below" in section
    assert "FAR-deep" not in text and "NO-thresholds" not in text
    # Cards come first; the near-miss section comes after them and holds no cards.
    assert text.index('class="card copy"') < text.index("Near misses") and 'class="card' not in section


def test_near_misses_keep_at_most_twelve():
    ev = json.dumps({"thresholds": FAST_THRESHOLDS})
    rows = [{"listing_id": f"n{i:02d}", "verdict": "clear", "score": 0.62 - i * 0.005, "evidence": ev}
            for i in range(20)]
    rows.append({"listing_id": "flagged", "verdict": "knockoff", "score": 0.63, "evidence": ev})
    got = near_misses(rows)
    assert len(got) == NEAR_MISS_LIMIT == 12
    assert [r["listing_id"] for r, _, _ in got] == [f"n{i:02d}" for i in range(12)]


# --------------------------------------------------------------------------- in a browser
def _is_outline_colour(px) -> bool:
    r, g, b = px[:3]
    return r > 200 and b > 200 and g < 90


def test_outline_shows_in_a_browser_screenshot(report, browser, tmp_path):
    cdp = browser
    page, _ = report
    cdp.send("Page.navigate", url=page.resolve().as_uri())
    cdp.wait_for("document.readyState === 'complete' && document.querySelector('svg.listing')", what="report")
    # Where the browser put the copy card's drawing (the first card, at the top of the page).
    # Its content box (inside the border) is the viewBox, in CSS px of the page.
    box = cdp.eval("""(() => { const s = document.querySelector('svg.listing'), r = s.getBoundingClientRect();
        return {x: r.x + s.clientLeft + window.scrollX, y: r.y + s.clientTop + window.scrollY,
                w: s.clientWidth, h: s.clientHeight}; })()""")
    shot = cdp.screenshot(tmp_path / "report.png")
    if os.environ.get("BRANDGUARD_SCREENSHOT_DIR"):
        out = Path(os.environ["BRANDGUARD_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, out / "report_outline.png")

    assert box["w"] == pytest.approx(170, abs=1) and box["h"] == pytest.approx(round(H * 170 / W), abs=1)
    img = Image.open(shot).convert("RGB")
    sx, sy = box["w"] / W, box["h"] / H

    def near_colour(x: float, y: float, r: int = 3) -> bool:
        px, py = box["x"] + x * sx, box["y"] + y * sy
        return any(_is_outline_colour(img.getpixel((int(round(px)) + dx, int(round(py)) + dy)))
                   for dx in range(-r, r + 1) for dy in range(-r, r + 1))

    # Every edge's midpoint and every corner of the outline is drawn in the outline colour ...
    for (x0, y0), (x1, y1) in zip(OUTLINE, OUTLINE[1:] + OUTLINE[:1]):
        assert near_colour((x0 + x1) / 2, (y0 + y1) / 2), f"no outline near edge ({x0},{y0})-({x1},{y1})"
        assert near_colour(x0, y0)
    # ... and not inside it, nor in the photo's corners (the listing itself has no magenta).
    cx, cy = sum(p[0] for p in OUTLINE) / 4, sum(p[1] for p in OUTLINE) / 4
    for x, y in [(cx, cy), (20, 20), (W - 20, H - 20)]:
        assert not near_colour(x, y, r=6)


# --------------------------------------------------------------------------- region and text-mark boxes
def test_region_and_text_mark_boxes_are_drawn_with_the_rule_and_the_page_sorts(tmp_path):
    """A flagged row's matched grid region and the boxes where the brand's name was read in the
    photo are drawn (the whole-image region of a full-image match is not); a fast verdict prints
    the rule that decided it; the cards carry what the page's sort and filters read."""
    listing = make_image(tmp_path / "listing.jpg")
    text_ev = {"image_size": [W, H], "thresholds": FAST_THRESHOLDS, "region": "full", "region_box": [0, 0, W, H],
               "stage": "text", "decided_by": "visual: clear; text: lookalike wordmark -> knockoff",
               "text": {"read": True, "matches": [
                   {"brand": "acme", "term": "acme", "text": "ACNE", "kind": "lookalike", "rule": "one edit",
                    "source": "image", "score": 0.9, "box": [100, 50, 300, 110]},
                   {"brand": "acme", "term": "acme", "text": "acme", "kind": "exact", "rule": "title",
                    "source": "title", "score": 1.0},
                   {"brand": "bolt", "term": "bolt", "text": "BOLT", "kind": "exact", "rule": "x",
                    "source": "image", "score": 0.9, "box": [10, 10, 60, 40]}]}}
    rows = [row("REGION", listing, "copy", 0.97, {"image_size": [W, H], "thresholds": FAST_THRESHOLDS,
                                                  "region": "top_left", "region_box": [0, 0, 384, 288]},
                risk=0.4, lead="lead"),
            row("TEXT", listing, "knockoff", 0.9, text_ev, risk=0.8, lead="lead"),
            row("WHOLE", listing, "copy", 0.95, {"image_size": [W, H], "thresholds": FAST_THRESHOLDS,
                                                 "region": "full", "region_box": [0, 0, W, H]}, risk=0.2,
                lead="lead", brand="bolt")]
    text = write_html_report(rows, {}, tmp_path / "r.html").read_text(encoding="utf-8")
    parser = Svgs()
    parser.feed(text)
    by_id = dict(zip(re.findall(r'data-listing="([^"]+)"', text), [s for s in parser.svgs if "listing" in
                                                                  s["attrs"].get("class", "")]))
    region = [r for r in by_id["REGION"]["rects"] if "match" in r.get("class", "")]
    assert [(r["data-source"], r["x"], r["y"], r["width"], r["height"]) for r in region] == \
        [("region_box", "0", "0", "384", "288")]
    marks = [r for r in by_id["TEXT"]["rects"] if "match" in r.get("class", "")]
    # acme's name read in the photo: drawn; the title's mention and bolt's name in the photo: not
    assert [(r["data-source"], r["x"], r["y"], r["width"], r["height"]) for r in marks] == \
        [("text", "100", "50", "200", "60")]
    assert not [r for r in by_id["WHOLE"]["rects"] if "match" in r.get("class", "")]
    assert "similarity 0.970 ≥ copy 0.90 → copy" in text  # the fast path's rule, in words
    assert "text read: <b>ACNE</b> (lookalike)" in text
    # sort and filter: the cards carry risk/brand/verdict, the page has the controls
    assert re.findall(r'data-listing="([^"]+)"', text) == ["TEXT", "REGION", "WHOLE"]  # by risk
    assert 'data-risk="0.8"' in text and 'data-brand="bolt"' in text
    assert all(f'id="{i}"' in text for i in ("sort", "f-verdict", "f-brand", "f-risk"))


def test_degenerate_shapes_are_never_drawn():
    from brandguard.cases.explain import decision_rule, match_shapes

    ev = {"image_size": [100, 80], "local": {"outline": [[10, 10], [50, 10], [90, 10]], "box": [5, 5, 5, 40]},
          "match_box": [0, 0, float("nan"), 3], "geometry": {"box": [20, 20, 10, 30], "scale": 0.0},
          "region": "centre", "region_box": [25, 20, 75, 60]}
    shapes = match_shapes(ev, "acme")  # a flat outline, zero-width and NaN boxes: the region is what is left
    assert [(s.source, s.box) for s in shapes] == [("region_box", (25.0, 20.0, 75.0, 60.0))]
    assert match_shapes({"image_size": [100, 80]}, "acme") == []
    assert decision_rule("knockoff", 0.7, {"thresholds": {"copy": 0.9, "knockoff": 0.6}}) == \
        "similarity 0.700 ≥ knockoff 0.60 (< copy 0.90) → knockoff"
    assert decision_rule("copy", 0.95, {"decided_by": "geometric verification"}) == "geometric verification"


def test_an_outline_fit_names_its_stretch():
    """A mark placed by the shape stage's affine pass says how stretched the fit was; a
    similarity fit (stretch 1) says nothing of it."""
    from brandguard.cases.explain import match_shapes

    quad = [[10, 10], [60, 12], [58, 40], [9, 38]]
    (s,) = match_shapes({"image_size": [100, 80], "shape": {"outline": quad, "iou": 0.84, "stretch": 1.86}}, "acme")
    assert s.kind == "polygon" and "IoU 0.84" in s.label and "stretched 1.86×" in s.label, s.label
    (plain,) = match_shapes({"image_size": [100, 80], "shape": {"outline": quad, "iou": 0.8, "stretch": 1.0,
                                                                 "mirrored": True}}, "acme")
    assert "mirrored" in plain.label and "stretched" not in plain.label
