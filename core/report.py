"""Human-readable scan results: a terminal table and a self-contained HTML page of leads.

The HTML embeds small JPEG thumbnails (data URIs) of each flagged listing beside the reference
it matched, so the page can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Sequence

from PIL import Image

from brandguard.errors import ImageDecodeError
from brandguard.vision.decode import decode_image

FLAGGED = ("copy", "knockoff")
_ORDER = {"copy": 0, "knockoff": 1, "inconclusive": 2, "clear": 3}


def thumbnail_data_uri(path: str, side: int = 160) -> str | None:
    """A JPEG data URI of ``path`` no larger than ``side`` px, or None if it cannot be read."""
    if not path or not Path(path).is_file():
        return None
    try:
        decoded = decode_image(path, target_side=side)
    except ImageDecodeError:
        return None
    img = Image.fromarray(decoded.rgb)
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _geometry_note(g: dict | None) -> str:
    """One line of local-feature evidence: how many keypoints agree, where, and the transform."""
    if not g:
        return ""
    note = f"<br>keypoints: <b>{int(g.get('inliers', 0))}</b> consistent of {int(g.get('matches', 0))} matched"
    if g.get("box"):
        note += f" · matched box {html.escape(str(g['box']))}"
    if g.get("scale") is not None:
        note += f" · scale {g['scale']:.2f}, rotation {g.get('rotation_deg', 0):.0f}°"
    if g.get("mirrored"):
        note += " · mirrored"
    return note


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


def write_html_report(rows: Sequence[dict], reference_paths: dict[str, str], dest: str | Path,
                      title: str = "brandguard scan", summary: dict | None = None) -> Path:
    """Write a self-contained HTML page: one card per flagged listing, then the inconclusive."""
    esc = html.escape
    cards = []
    for r in sort_rows(rows):
        if r["verdict"] == "clear":
            continue
        listing_img = thumbnail_data_uri(r.get("image") or "")
        ref_id = r.get("top_reference_id") or ""
        ref_img = thumbnail_data_uri(reference_paths.get(ref_id, "")) if r["verdict"] in FLAGGED else None
        ev = json.loads(r["evidence"]) if r.get("evidence") else {}

        def img_tag(uri: str | None, alt: str) -> str:
            return f'<img src="{uri}" alt="{esc(alt)}">' if uri else f'<div class="missing">{esc(alt)}: no image</div>'

        detail = (f"reason: <b>{esc(str(r.get('reason')))}</b> {esc(str(ev.get('detail', '')))}"
                  if r["verdict"] == "inconclusive" else
                  f"brand <b>{esc(str(r.get('brand')))}</b> · confidence {r['confidence']:.2f} · "
                  f"similarity {r['score']:.3f} · region {esc(str(ev.get('region', 'full')))}"
                  f"{_geometry_note(ev.get('geometry'))}"
                  f"{' · uncalibrated' if not ev.get('calibrated', False) else ''}")
        cards.append(
            f'<div class="card {esc(r["verdict"])}"><div class="head"><span class="tag">{esc(r["verdict"])}</span> '
            + (f'<span class="risk">risk {r["risk"]:.2f}</span> ' if r.get("risk") is not None else "")
            + ('<span class="risk">authorised seller</span> ' if r.get("lead") == "authorized" else "")
            + f'listing <code>{esc(r["listing_id"])}</code> seller <code>{esc(str(r.get("seller_id") or "-"))}</code> '
            f'price {esc(str(r.get("price") if r.get("price") is not None else "-"))}</div>'
            f'<div class="pair"><figure>{img_tag(listing_img, "listing")}<figcaption>listing</figcaption></figure>'
            + (f'<figure>{img_tag(ref_img, "reference")}<figcaption>reference <code>{esc(ref_id)}</code>'
               f'</figcaption></figure>' if r["verdict"] in FLAGGED else "")
            + f'</div><div class="detail">{detail}</div></div>'
        )
    counts = summary.get("verdicts", {}) if summary else {}
    head = " · ".join(f"{esc(k)}: {v}" for k, v in sorted(counts.items()))
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
.pair {{ display: flex; gap: .5rem; margin: .5rem 0; }}
figure {{ margin: 0; text-align: center; }} img {{ max-width: 170px; max-height: 170px; border: 1px solid #ddd; }}
figcaption {{ font-size: .8rem; color: #555; }} .missing {{ width: 160px; height: 100px; background: #eee; }}
.detail {{ font-size: .85rem; }}
</style></head><body>
<h1>{esc(title)}</h1><p>{head}</p><div class="cards">
{''.join(cards) or '<p>No leads: nothing was flagged.</p>'}
</div></body></html>
"""
    dest = Path(dest)
    dest.write_text(page, encoding="utf-8")
    return dest
