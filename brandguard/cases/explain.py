"""What to draw on a listing and which rule to print: read once from a verdict's evidence.

The HTML scan report (``scan/report.py``) and the review page (through the service's lead view)
both show a flagged listing with the match drawn over it and the rule that decided. Both take
it from here, so a box the report draws is the box ``/review`` draws. Evidence is JSON that may
come from any version of the pipeline: every value is checked, and anything odd is left out
(a zero-size box or a non-positive scale is no evidence and is never shown).

Coordinates are the listing's original pixels (``evidence["image_size"]`` is its size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

# A region box covering this share of the photo says nothing a viewer can see.
WHOLE_IMAGE_SHARE = 0.98


def num(x: Any) -> float | None:
    """A finite float, or None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def as_dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def box(b: Any) -> tuple[float, float, float, float] | None:
    """``[x0, y0, x1, y1]`` with a positive area, else None (a zero-size box is no evidence)."""
    if not isinstance(b, (list, tuple)) or len(b) != 4:
        return None
    v = [num(x) for x in b]
    if any(x is None for x in v):
        return None
    x0, y0, x1, y1 = v
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def outline(o: Any) -> list[tuple[float, float]] | None:
    """At least three finite ``[x, y]`` points enclosing a positive area, else None."""
    if not isinstance(o, (list, tuple)) or len(o) < 3:
        return None
    pts = []
    for p in o:
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            return None
        x, y = num(p[0]), num(p[1])
        if x is None or y is None:
            return None
        pts.append((x, y))
    area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1])) / 2
    return pts if abs(area) > 0 else None


def image_size(s: Any) -> tuple[float, float] | None:
    if not isinstance(s, (list, tuple)) or len(s) != 2:
        return None
    w, h = num(s[0]), num(s[1])
    return (w, h) if w and h and w > 0 and h > 0 else None


@dataclass(frozen=True)
class Shape:
    """One thing drawn on the listing: ``polygon`` (points) or ``rect`` (box), where it comes
    from (``outline``, ``local_box``, ``match_box``, ``geometry_box``, ``region_box``, ``text``)
    and a label for its tooltip."""

    kind: str
    source: str
    label: str
    points: tuple[tuple[float, float], ...] = ()
    box: tuple[float, float, float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "source": self.source, "label": self.label}
        if self.kind == "polygon":
            d["points"] = [list(p) for p in self.points]
        else:
            d["box"] = list(self.box or ())
        return d


def inliers_text(ev: Mapping[str, Any]) -> str:
    """``45 inliers · mirrored`` from the local stage's match or the ORB check, "" without one."""
    local, geo = as_dict(ev.get("local")), as_dict(ev.get("geometry"))
    n = num(local.get("inliers"))
    if n is None:
        n = num(geo.get("inliers"))
    if n is None or n <= 0:
        return ""
    mirrored = local.get("mirrored") is True or geo.get("mirrored") is True
    return f"{int(n)} inliers" + (" · mirrored" if mirrored else "")


def match_shapes(ev: Mapping[str, Any], brand: str | None) -> list[Shape]:
    """What to draw: the visual match (the reference's projected outline, else the first box of
    the local match, the fused match, the ORB check or the winning grid region), then every
    box where ``brand``'s name (or a lookalike) was read in the photo."""
    ev = as_dict(ev)
    out: list[Shape] = []
    size = image_size(ev.get("image_size"))
    local, geo = as_dict(ev.get("local")), as_dict(ev.get("geometry"))
    visual = inliers_text(ev) or "matched"
    poly = outline(local.get("outline"))
    shape = as_dict(ev.get("shape"))
    if not poly and outline(shape.get("outline")):  # found by its outline (vision/shapes.py)
        poly = outline(shape.get("outline"))
        iou = num(shape.get("iou"))
        stretch = num(shape.get("stretch"))
        visual = "the mark's outline fits" + (f" (IoU {iou:.2f})" if iou is not None else "") + (
            " · mirrored" if shape.get("mirrored") is True else "") + (
            f" · stretched {stretch:.2f}×" if stretch is not None and stretch >= 1.05 else "")
    if poly:
        out.append(Shape("polygon", "outline", f"reference outline · {visual}", points=tuple(poly)))
    else:
        for source, candidate in (("local_box", local.get("box")), ("match_box", ev.get("match_box")),
                                  ("geometry_box", geo.get("box")), ("region_box", ev.get("region_box"))):
            b = box(candidate)
            if b is None:
                continue
            if source == "region_box":
                whole = size is not None and (b[2] - b[0]) * (b[3] - b[1]) >= WHOLE_IMAGE_SHARE * size[0] * size[1]
                if whole or ev.get("region") in (None, "full"):
                    continue
                out.append(Shape("rect", source, f"region {ev.get('region')} matched the reference", box=b))
            else:
                out.append(Shape("rect", source, f"matched box · {visual}", box=b))
            break
    text = as_dict(ev.get("text"))
    for m in text.get("matches") or []:
        if not isinstance(m, dict) or (brand is not None and m.get("brand") != brand) or m.get("source") == "title":
            continue
        label = f"text {m.get('text')!r} read in the photo: {m.get('kind', 'match')} of {m.get('brand')!r}"
        quad = outline(m.get("quad"))
        b = box(m.get("box"))
        if quad:
            out.append(Shape("polygon", "text", label, points=tuple(quad)))
        elif b:
            out.append(Shape("rect", "text", label, box=b))
    return out


def drawing(ev: Mapping[str, Any], brand: str | None) -> dict[str, Any] | None:
    """``{"image_size": [w, h], "shapes": [...]}`` for a viewer to lay over the listing, or None
    when there is nothing to draw (no shape, or no size to place it by)."""
    size = image_size(as_dict(ev).get("image_size"))
    shapes = match_shapes(ev, brand)
    if size is None or not shapes:
        return None
    return {"image_size": list(size), "shapes": [s.to_dict() for s in shapes]}


def decision_rule(verdict: str | None, score: Any, ev: Mapping[str, Any]) -> str:
    """The rule that decided, in words: the pipeline's own (``decided_by``) when it wrote one,
    else the fast path's thresholds against the similarity (``similarity 0.95 ≥ copy 0.80 → copy``)."""
    ev = as_dict(ev)
    rule = ev.get("decided_by")
    if isinstance(rule, str) and rule:
        return rule
    th = as_dict(ev.get("thresholds"))
    s, copy, knock = num(score), num(th.get("copy")), num(th.get("knockoff"))
    if s is None or copy is None or knock is None:
        return ""
    if verdict == "copy" and s >= copy:
        return f"similarity {s:.3f} ≥ copy {copy:.2f} → copy"
    if verdict == "knockoff":
        return f"similarity {s:.3f} ≥ knockoff {knock:.2f} (< copy {copy:.2f}) → knockoff"
    if verdict == "clear":
        return f"similarity {s:.3f} < knockoff {knock:.2f} → clear"
    return ""


def thresholds_text(th: Mapping[str, Any]) -> str:
    """The thresholds a verdict was held against, deep (fused) or fast (similarity)."""
    th = as_dict(th)
    parts = []
    flag = num(th.get("flag_probability"))
    if flag is not None:
        parts.append(f"flag ≥ {flag:.2f}")
    ci, ca = num(th.get("copy_inliers")), num(th.get("copy_area"))
    if ci is not None and ca is not None:
        parts.append(f"copy: ≥ {int(ci)} inliers covering ≥ {ca:.0%}")
    gc = num(th.get("global_copy"))
    if gc is not None:
        parts.append(f"or global ≥ {gc:.2f}")
    c, k = num(th.get("copy")), num(th.get("knockoff"))
    if c is not None:
        parts.append(f"copy ≥ {c:.3f}")
    if k is not None:
        parts.append(f"knockoff ≥ {k:.3f}")
    return " · ".join(parts)
