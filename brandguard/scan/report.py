"""Human-readable scan results: a terminal table and a self-contained HTML page of leads.

The HTML embeds small JPEG thumbnails (data URIs) of each flagged listing beside the reference
it matched, so the page can be mailed or archived as one file. Where the verdict carries
local-feature evidence, the listing thumbnail is drawn inside an SVG whose coordinates are the
listing's original pixels, with the reference's projected outline (or the matched box) on it.

A result row's ``image`` is whatever path its catalogue named: the report reads listing images
only under the scan's image root, and every file through the scan's reader (regular files,
size-limited), so a results file can never make the page embed ``/etc/shadow``.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Sequence

from PIL import Image

from brandguard.cases.explain import (as_dict, box, decision_rule, image_size, match_shapes, num, outline,
                                      thresholds_text)
from brandguard.errors import ImageDecodeError
from brandguard.inputs import read_image_file
from brandguard.vision.decode import DecodeLimits, decode_image

FLAGGED = ("copy", "knockoff")
_ORDER = {"copy": 0, "knockoff": 1, "inconclusive": 2, "clear": 3}
OUTLINE_COLOUR = "#ff00ff"  # magenta: rare in product photos and logos, visible on light and dark
NEAR_MISS_MARGIN = 0.1
NEAR_MISS_LIMIT = 12
THUMB_SIDE = 160  # px of the embedded thumbnails (their long side)
SHOW_SIDE = 170  # px the listing drawing is shown at (its long side)


def _thumbnail(path: str, side: int = THUMB_SIDE, root: str | None = None
               ) -> tuple[str | None, tuple[int, int] | None]:
    """A JPEG data URI of ``path`` no larger than ``side`` px and the image's displayed size in
    original pixels (EXIF rotation applied); (None, None) if it cannot be read, or lies
    outside ``root`` (None: any path)."""
    if not path:
        return None, None
    limits = DecodeLimits()
    try:
        decoded = decode_image(read_image_file(path, limits.max_bytes, root).data, target_side=side, limits=limits)
    except ImageDecodeError:
        return None, None
    img = Image.fromarray(decoded.rgb)
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), decoded.display_size


def thumbnail_data_uri(path: str, side: int = THUMB_SIDE, root: str | None = None) -> str | None:
    """A JPEG data URI of ``path`` no larger than ``side`` px, or None if it cannot be read
    (or lies outside ``root``)."""
    return _thumbnail(path, side, root)[0]


# --------------------------------------------------------------------------- evidence values
# Reading evidence (values, boxes, outlines, what to draw, the rule) is shared with the review
# page's lead view: brandguard.cases.explain.
_num, _box, _outline, _size, _dict = num, box, outline, image_size, as_dict


def _fmt(x: float) -> str:
    """A coordinate for SVG: at most two decimals, no trailing zeros."""
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _box_text(b: tuple[float, float, float, float]) -> str:
    return "[" + ", ".join(_fmt(v) for v in b) + "]"


def _transform_text(g: dict) -> str:
    """``scale 0.412, rotation 12°``: scale to 3 significant digits, omitted when absent or not positive."""
    parts = []
    scale = _num(g.get("scale"))
    if scale is not None and scale > 0:
        parts.append(f"scale {scale:.3g}")
    rot = _num(g.get("rotation_deg"))
    if rot is not None and parts:
        parts.append(f"rotation {rot:.0f}°")
    return ", ".join(parts)


def _geometry_note(g: dict | None) -> str:
    """One line of fast-path local-feature evidence: how many keypoints agree, where, and the transform."""
    if not isinstance(g, dict) or not g:
        return ""
    inliers, matches = _num(g.get("inliers")) or 0, _num(g.get("matches")) or 0
    note = f"<br>keypoints: <b>{int(inliers)}</b> consistent of {int(matches)} matched"
    box = _box(g.get("box"))
    if box:
        note += f" · matched box {html.escape(_box_text(box))}"
    transform = _transform_text(g)
    if transform:
        note += f" · {html.escape(transform)}"
    if g.get("mirrored") is True:
        note += " · mirrored"
    return note


def _thresholds_text(th: dict) -> str:
    """The thresholds the verdict was held against, deep (fused) or fast (similarity)."""
    return thresholds_text(th)


def _local_note(ev: dict) -> str:
    """Deep-path evidence: stage, inliers, fused probability against the thresholds, and the rule."""
    esc = html.escape
    local = _dict(ev.get("local"))
    geometry = _dict(ev.get("geometry"))
    lines = []
    first = []
    if isinstance(ev.get("stage"), str):
        first.append(f"stage <b>{esc(ev['stage'])}</b>")
    inliers = _num(local.get("inliers"))
    if inliers is not None:
        first.append(f"<b>{int(inliers)}</b> inliers" + (" · <b>mirrored</b>" if local.get("mirrored") is True else ""))
        share = _num(local.get("area_share"))
        if share is not None and share > 0:
            first.append(f"outline covers {share:.0%}")
        box = _box(local.get("box") or ev.get("match_box"))
        if box:
            first.append(f"box {esc(_box_text(box))}")
        transform = _transform_text(local)
        if transform:
            first.append(esc(transform))
    if first:
        lines.append(" · ".join(first))
    fused = _num(ev.get("fused_probability"))
    second = []
    if fused is not None:
        second.append(f"fused probability <b>{fused:.3f}</b>")
    g = _num(ev.get("global_score"))
    if g is not None and ev.get("stage") != "local":
        second.append(f"global {g:.3f}")
    th = _thresholds_text(_dict(ev.get("thresholds")))
    if th:
        second.append(f"thresholds: {esc(th)}")
    if second:
        lines.append(" · ".join(second))
    if geometry:
        lines.append(_geometry_note(geometry).removeprefix("<br>"))
    if isinstance(ev.get("decided_by"), str) and ev["decided_by"]:
        lines.append(f'decided by: <span class="rule">{esc(ev["decided_by"])}</span>')
    return "".join(f"<div>{line}</div>" for line in lines)


# --------------------------------------------------------------------------- drawing
def _match_title(ev: dict, ref_id: str, label: str) -> str:
    bits = [f"reference {ref_id}" if ref_id else "matched reference", label]
    if isinstance(ev.get("decided_by"), str) and ev["decided_by"]:
        bits.append(ev["decided_by"])
    return " · ".join(bits)


def listing_drawing(uri: str, size: tuple[float, float], ev: dict, ref_id: str = "",
                    show_side: int = SHOW_SIDE, brand: str | None = None) -> str:
    """An inline SVG in the listing's original pixels (viewBox ``0 0 W H``): the thumbnail stretched
    over it, and every shape of :func:`brandguard.cases.explain.match_shapes` (the reference's
    outline or the matched/region box, the boxes where ``brand``'s name was read) on top, each
    with a tooltip."""
    esc = html.escape
    w, h = size
    f = show_side / max(w, h)
    common = ('fill="none" vector-effect="non-scaling-stroke" stroke-linejoin="round"')
    drawn = ""
    for shape in match_shapes(ev, brand):
        title = f"<title>{esc(_match_title(ev, ref_id, shape.label))}</title>"
        cls = "match text" if shape.source == "text" else "match"
        dash = ' stroke-dasharray="6 3"' if shape.source == "text" else ""
        if shape.kind == "polygon":
            pts = " ".join(f"{_fmt(x)},{_fmt(y)}" for x, y in shape.points)
            drawn += (f'<polygon points="{pts}" {common} stroke="#000" stroke-opacity="0.55" stroke-width="5"/>'
                      f'<polygon class="{cls}" data-source="{shape.source}" points="{pts}" {common} '
                      f'stroke="{OUTLINE_COLOUR}" stroke-width="2.5"{dash}>{title}</polygon>')
        else:
            x0, y0, x1, y1 = shape.box
            attrs = f'x="{_fmt(x0)}" y="{_fmt(y0)}" width="{_fmt(x1 - x0)}" height="{_fmt(y1 - y0)}"'
            drawn += (f'<rect {attrs} {common} stroke="#000" stroke-opacity="0.55" stroke-width="5"/>'
                      f'<rect class="{cls}" data-source="{shape.source}" {attrs} {common} '
                      f'stroke="{OUTLINE_COLOUR}" stroke-width="2.5"{dash}>{title}</rect>')
    return (f'<svg class="listing" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'aria-label="listing{" with matched outline" if drawn else ""}" '
            f'viewBox="0 0 {_fmt(w)} {_fmt(h)}" width="{round(w * f)}" height="{round(h * f)}">'
            f'<image href="{uri}" x="0" y="0" width="{_fmt(w)}" height="{_fmt(h)}" preserveAspectRatio="none"/>'
            f"{drawn}</svg>")


# --------------------------------------------------------------------------- rows
def sort_rows(rows: Sequence[dict]) -> list[dict]:
    """Leads first by risk; then authorised-seller flags; then inconclusive; then clear."""
    def key(r: dict):
        group = 0 if r.get("lead") == "lead" else 1 if r.get("lead") == "authorized" else 2 + _ORDER.get(r["verdict"], 9)
        return (group, -(r.get("risk") or r.get("confidence") or 0.0), r["listing_id"])
    return sorted(rows, key=key)


def terminal_table(rows: Sequence[dict], limit: int = 60) -> str:
    """A plain aligned table: what was flagged and why."""
    header = ("listing", "verdict", "brand", "risk", "conf", "score", "matched reference / reason")
    lines = []
    for r in sort_rows(rows)[:limit]:
        why = r.get("top_reference_id") or "" if r["verdict"] != "inconclusive" else f"{r['reason']}"
        if r["verdict"] == "clear":
            why = f"best: {r.get('top_reference_id') or '-'}"
        risk = f"{r['risk']:.2f}" if r.get("risk") is not None else ("auth" if r.get("lead") == "authorized" else "-")
        lines.append((r["listing_id"], r["verdict"], r.get("brand") or "-", risk,
                      f"{r['confidence']:.2f}" if r.get("confidence") is not None else "-",
                      f"{r['score']:.3f}" if r.get("score") is not None else "-", why))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)] if lines else [len(h) for h in header]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    if len(rows) > limit:
        out.append(f"... {len(rows) - limit} more rows in results.parquet")
    return "\n".join(out)


def _evidence(r: dict) -> dict:
    try:
        ev = json.loads(r["evidence"]) if r.get("evidence") else {}
    except (TypeError, ValueError):
        return {}
    return ev if isinstance(ev, dict) else {}


def flag_threshold(ev: dict) -> float | None:
    """The threshold a row had to reach to be flagged: the fused probability's (deep) or knockoff's (fast)."""
    th = _dict(ev.get("thresholds"))
    flag = _num(th.get("flag_probability"))
    return flag if flag is not None else _num(th.get("knockoff"))


def near_misses(rows: Sequence[dict], margin: float = NEAR_MISS_MARGIN,
                limit: int = NEAR_MISS_LIMIT) -> list[tuple[dict, dict, float]]:
    """Clear rows whose score is within ``margin`` of their flag threshold: (row, evidence,
    threshold - score), closest first, at most ``limit``."""
    out = []
    for r in rows:
        if r.get("verdict") != "clear":
            continue
        score = _num(r.get("score"))
        ev = _evidence(r)
        th = flag_threshold(ev)
        if score is None or th is None:
            continue
        gap = th - score
        if abs(gap) <= margin + 1e-12:
            out.append((r, ev, gap))
    out.sort(key=lambda t: (abs(t[2]), str(t[0].get("listing_id"))))
    return out[:limit]


def _options(values: list[str]) -> str:
    return "".join(f"<option>{html.escape(v)}</option>" for v in values)


# Sorting and filtering the cards in the page itself (the page stays one self-contained file).
_SORT_FILTER_JS = """
(() => {
  const cards = document.getElementById("cards"), get = (id) => document.getElementById(id).value;
  const all = [...cards.querySelectorAll(".card")];
  function apply() {
    const key = get("sort"), v = get("f-verdict"), b = get("f-brand"), risk = parseFloat(get("f-risk"));
    const num = (c, k) => parseFloat(c.dataset[k]);
    const sorted = all.slice().sort((x, y) => key === "listing" ? x.dataset.listing.localeCompare(y.dataset.listing)
      : (num(y, key) - num(x, key)) || x.dataset.listing.localeCompare(y.dataset.listing));
    let shown = 0;
    for (const c of sorted) {
      const ok = (!v || c.dataset.verdict === v) && (!b || c.dataset.brand === b) && (risk < 0 || num(c, "risk") >= risk);
      c.hidden = !ok; shown += ok; cards.append(c);
    }
    document.getElementById("shown").textContent = shown + " of " + all.length + " shown";
  }
  ["sort", "f-verdict", "f-brand", "f-risk"].forEach((id) => document.getElementById(id).addEventListener("change", apply));
  document.getElementById("shown").textContent = all.length + " shown";
})();
"""


def write_html_report(rows: Sequence[dict], reference_paths: dict[str, str], dest: str | Path,
                      title: str = "brandguard scan", summary: dict | None = None,
                      image_root: str | None = None) -> Path:
    """Write a self-contained HTML page: one card per flagged listing, then the inconclusive,
    then the near misses (clear listings just under the flag threshold).

    Listing thumbnails are made only of images under ``image_root`` (the scan's, see
    ``scanner.scan_root``; None: any path); reference thumbnails come from the bundle."""
    esc = html.escape

    def img_tag(uri: str | None, alt: str) -> str:
        return f'<img src="{uri}" alt="{esc(alt)}">' if uri else f'<div class="missing">{esc(alt)}: no image</div>'

    cards = []
    for r in sort_rows(rows):
        if r["verdict"] == "clear":
            continue
        flagged = r["verdict"] in FLAGGED
        ev = _evidence(r)
        ref_id = r.get("top_reference_id") or ""
        listing_uri, natural = _thumbnail(r.get("image") or "", root=image_root)
        if flagged and listing_uri:
            size = _size(ev.get("image_size")) or natural
            listing_fig = (listing_drawing(listing_uri, size, ev, ref_id, brand=r.get("brand")) if size
                           else img_tag(listing_uri, "listing"))
        else:
            listing_fig = img_tag(listing_uri, "listing")
        ref_img = thumbnail_data_uri(reference_paths.get(ref_id, "")) if flagged else None
        if r["verdict"] == "inconclusive":
            detail = f"reason: <b>{esc(str(r.get('reason')))}</b> {esc(str(ev.get('detail', '')))}"
        else:
            conf, score = _num(r.get("confidence")), _num(r.get("score"))
            detail = (f"brand <b>{esc(str(r.get('brand')))}</b>"
                      + (f" · confidence {conf:.2f}" if conf is not None else "")
                      # a deep verdict's score is its fused probability, printed with the local evidence
                      + (f" · similarity {score:.3f}" if score is not None and "fused_probability" not in ev else "")
                      + f" · region {esc(str(ev.get('region', 'full')))}"
                      + (" · uncalibrated" if not ev.get("calibrated", False) else ""))
            if any(k in ev for k in ("stage", "local", "decided_by", "fused_probability")):
                detail += _local_note(ev)
            else:
                detail += _geometry_note(ev.get("geometry"))
                th = _thresholds_text(_dict(ev.get("thresholds")))
                if th:
                    detail += f"<br>thresholds: {esc(th)}"
                rule = decision_rule(r["verdict"], r.get("score"), ev)
                if rule:
                    detail += f'<br>decided by: <span class="rule">{esc(rule)}</span>'
            marks = [m for m in _dict(ev.get("text")).get("matches") or []
                     if isinstance(m, dict) and m.get("brand") == r.get("brand") and m.get("source") != "title"]
            if marks:
                detail += "<div>text read: " + ", ".join(
                    f'<b>{esc(str(m.get("text")))}</b> ({esc(str(m.get("kind")))})' for m in marks) + "</div>"
        risk_v, conf_v = _num(r.get("risk")), _num(r.get("confidence"))
        data = (f'data-verdict="{esc(r["verdict"])}" data-brand="{esc(str(r.get("brand") or ""))}" '
                f'data-lead="{esc(str(r.get("lead") or ""))}" data-risk="{risk_v if risk_v is not None else -1}" '
                f'data-confidence="{conf_v if conf_v is not None else -1}" data-listing="{esc(str(r["listing_id"]))}"')
        cards.append(
            f'<div class="card {esc(r["verdict"])}" {data}><div class="head"><span class="tag">{esc(r["verdict"])}</span> '
            + (f'<span class="risk">risk {r["risk"]:.2f}</span> ' if r.get("risk") is not None else "")
            + ('<span class="risk">authorised seller</span> ' if r.get("lead") == "authorized" else "")
            + f'listing <code>{esc(str(r["listing_id"]))}</code> seller <code>{esc(str(r.get("seller_id") or "-"))}</code> '
            f'price {esc(str(r.get("price") if r.get("price") is not None else "-"))}</div>'
            f'<div class="pair"><figure>{listing_fig}<figcaption>listing</figcaption></figure>'
            + (f'<figure>{img_tag(ref_img, "reference")}<figcaption>reference <code>{esc(ref_id)}</code>'
               f'</figcaption></figure>' if flagged else "")
            + f'</div><div class="detail">{detail}</div></div>'
        )

    misses = []
    for r, ev, gap in near_misses(rows):
        uri, natural = _thumbnail(r.get("image") or "", side=96, root=image_root)
        size = _size(ev.get("image_size")) or natural
        pic = (listing_drawing(uri, size, ev, r.get("top_reference_id") or "", show_side=96) if uri and size
               else '<div class="missing small">no image</div>')
        th, score = flag_threshold(ev), float(r["score"])
        where = "below" if gap >= 0 else "above"
        misses.append(
            f'<li class="near-miss" data-margin="{gap:.4f}">{pic}<div><code>{esc(str(r["listing_id"]))}</code>'
            f' · best <code>{esc(str(r.get("top_reference_id") or "-"))}</code><br>'
            f'score {score:.3f} vs flag {th:.3f}: <b>{abs(gap):.3f} {where}</b>'
            + (f'<br><span class="rule">{esc(ev["decided_by"])}</span>'
               if isinstance(ev.get("decided_by"), str) and ev["decided_by"] else "")
            + "</div></li>")
    near = (f'<h2>Near misses</h2><p class="note">Clear listings within {NEAR_MISS_MARGIN:g} of the flag '
            f'threshold, closest first (at most {NEAR_MISS_LIMIT}).</p><ol class="near">{"".join(misses)}</ol>'
            if misses else "")

    counts = summary.get("verdicts", {}) if summary else {}
    head = " · ".join(f"{esc(str(k))}: {esc(str(v))}" for k, v in sorted(counts.items()))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; background: #f6f6f6; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 1rem; }}
.card {{ background: white; border-radius: 8px; padding: .8rem; width: 380px; box-shadow: 0 1px 3px #0002;
         border-top: 5px solid #999; }}
.card.copy {{ border-top-color: #c62828; }} .card.knockoff {{ border-top-color: #ef6c00; }}
.card.inconclusive {{ border-top-color: #757575; }}
.tag {{ font-weight: bold; text-transform: uppercase; }}
.risk {{ background: #222; color: white; border-radius: 4px; padding: 0 .4rem; font-size: .85rem; }}
.pair {{ display: flex; gap: .5rem; margin: .5rem 0; align-items: flex-start; }}
figure {{ margin: 0; text-align: center; }} img {{ max-width: 170px; max-height: 170px; border: 1px solid #ddd; }}
svg.listing {{ border: 1px solid #ddd; display: block; }}
figcaption {{ font-size: .8rem; color: #555; }} .missing {{ width: 160px; height: 100px; background: #eee; }}
.missing.small {{ width: 96px; height: 64px; }}
.detail {{ font-size: .85rem; }} .detail > div {{ margin-top: .2rem; }}
.rule {{ font-family: ui-monospace, monospace; font-size: .8rem; }}
ol.near {{ list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: .6rem; }}
.near-miss {{ background: white; border-radius: 8px; padding: .5rem; display: flex; gap: .5rem; width: 380px;
              font-size: .85rem; box-shadow: 0 1px 3px #0002; border-left: 4px solid #9e9e9e; }}
.note {{ color: #555; font-size: .85rem; }}
.tools {{ margin: 0 0 1rem; font-size: .9rem; }} .tools select {{ margin-right: .8rem; }}
svg .match.text {{ stroke-dasharray: 6 3; }}
</style></head><body>
<h1>{esc(title)}</h1><p>{head}</p>
<div class="tools">sort <select id="sort"><option value="risk">risk</option><option value="confidence">confidence</option>
<option value="listing">listing id</option></select>
verdict <select id="f-verdict"><option value="">all</option>{_options(sorted({str(r["verdict"]) for r in rows
                                                                                if r["verdict"] != "clear"}))}</select>
brand <select id="f-brand"><option value="">all</option>{_options(sorted({str(r.get("brand")) for r in rows
                                                                         if r.get("brand")}))}</select>
risk ≥ <select id="f-risk"><option value="-1">any</option><option>0.3</option><option>0.5</option><option>0.7</option>
<option>0.9</option></select> <span id="shown"></span></div>
<div class="cards" id="cards">
{''.join(cards) or '<p>No leads: nothing was flagged.</p>'}
</div>{near}<script>{_SORT_FILTER_JS}</script></body></html>
"""
    dest = Path(dest)
    dest.write_text(page, encoding="utf-8")
    return dest
