"""How deep a listing goes: the depth options a scan or check asks for, what a catalogue row says
besides its image (brand hint, title), the plain name matching that routes ``auto`` depth
when the text stage is off, and the routing itself (:func:`route`, with auto's keypoint
:func:`glance`)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from brandguard.errors import ImageDecodeError, InputError
from brandguard.index.local_store import DEFAULT_NEIGHBOURS
from brandguard.vision.local import GLANCE_PROBE_SHARE, GLANCE_SIDE, LocalFeatures, describe_source

if TYPE_CHECKING:
    from brandguard.engine.pipeline import Pipeline

DEPTHS = ("fast", "thorough", "auto")
DEFAULT_DEPTH = "auto"


@dataclass(frozen=True)
class DepthOptions:
    """Which listings go through the local stage.

    ``fast``: none (global embedding and the keypoint check of its best candidate).
    ``thorough``: every listing. ``auto``: listings that a cheap signal points at: the best
    global score reaches the calibrated gate, a brand hint or a title names a registered
    brand, the keypoint glance fits a registered image (``Pipeline.glance``), or a random
    audit draw (``audit_share``) picks it.

    ``text``: in ``thorough`` and ``auto`` depth, brand names written in the photo are read
    (OCR) on the listings that go through the local stage, and matched with the title against
    the brands' vocabulary (README, "Text marks"); False turns the text stage off.
    """

    depth: str = DEFAULT_DEPTH
    audit_share: float = 0.0
    seed: int = 0
    text: bool = True

    def __post_init__(self) -> None:
        if self.depth not in DEPTHS:
            raise InputError(f"depth must be one of {', '.join(DEPTHS)}, got {self.depth!r}")
        if not 0.0 <= self.audit_share <= 1.0:
            raise InputError(f"audit share must be in [0, 1], got {self.audit_share}")


@dataclass(frozen=True)
class ListingHints:
    """What a catalogue row says besides the image (routes ``auto`` depth)."""

    brand_hint: str = ""
    title: str = ""


def fold_name(text: str) -> str:
    """Brand names compare folded: case, width, accents and punctuation removed."""
    t = unicodedata.normalize("NFKD", text).casefold()
    return re.sub(r"[\W_]+", "", "".join(c for c in t if not unicodedata.combining(c)))


def title_names_brand(title: str, brands: dict[str, str]) -> bool:
    """True when a registered brand's folded name appears as a whole word run in the title."""
    words = [fold_name(w) for w in re.split(r"\s+", title) if fold_name(w)]
    joined = {"".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, min(len(words), i + 3) + 1)}
    return any(b in joined for b in brands if len(b) >= 3)


def route(pipe: "Pipeline", depth: DepthOptions, items: Sequence, results: dict,
          hints: Sequence[ListingHints | None] | None, scope: str | None = None,
          sources: Sequence | None = None) -> dict[int, str]:
    """Which decoded items go through the local stage, and why. In auto depth, in order: the
    global score reaches the gate, a brand hint or the title names a brand, the keypoint glance
    fits a reference (:func:`glance`), a random audit draw."""
    if depth.depth == "fast" or not pipe.has_local_stage():
        return {}
    if depth.depth == "thorough":
        return {i: "thorough" for i in results}
    deep = pipe.calibration.deep
    gate = deep.auto_gate if deep is not None else pipe.calibration.knockoff
    brands = None
    routes = {}
    for i, (hits, _ev) in results.items():
        h = hints[i] if hints is not None else None
        if hits and hits[0].score >= gate:
            routes[i] = "global score"
        elif h is not None and (h.brand_hint or h.title):
            brands = brands if brands is not None else {fold_name(b): b for b in (
                [scope] if scope is not None else pipe.index.brands())}
            if h.brand_hint and fold_name(h.brand_hint) in brands:
                routes[i] = "brand hint"
            elif h.title and depth.text and pipe.text_config is not None:
                # (#18) the title through the vocabulary: names, aliases, Chinese names, lookalikes
                found = pipe.vocabulary(scope).match(h.title)
                if found:
                    routes[i] = ("title names a brand" if any(m.kind == "exact" for m in found)
                                 else "title has a lookalike brand name")
            elif h.title and title_names_brand(h.title, brands):
                routes[i] = "title names a brand"
    for i in glance(pipe, {i: items[i] for i in results if i not in routes}, sources, scope):
        routes[i] = "keypoint glance"
    for i in results:
        if i not in routes and depth.audit_share > 0 and pipe.audit.random() < depth.audit_share:
            routes[i] = "audit"
    return routes


def glance(pipe: "Pipeline", items: dict, sources: Sequence | None = None, scope: str | None = None) -> set[int]:
    """Items whose quick keypoints (``GLANCE_SIDE``, straight and mirror, no contrast-inverted
    twins) fit some reference geometrically, searched in one batch at ``GLANCE_PROBE_SHARE``
    of the IVF probes: the cheap local signal that sends a listing through the local stage.

    A small mark in a photo barely moves the global embedding, so the global gate alone sent
    a third of the marks in photos that thorough finds through the local stage; the glance
    sends about three quarters, and on photos without a registered mark it fits nothing.
    Keypoints come from the decode (``PreparedImage.glance``) or are taken here from
    ``sources``; an item with neither, or whose bytes no longer decode, is not glanced at."""
    feats: dict[int, LocalFeatures] = {}
    for i, it in items.items():
        if it.glance is not None:
            feats[i] = it.glance
        elif sources is not None and sources[i] is not None:
            try:
                feats[i] = describe_source(pipe.extractor, sources[i], GLANCE_SIDE, pipe.limits, mirror=True)
            except ImageDecodeError:
                continue
    feats = {i: f for i, f in feats.items() if len(f)}
    if not feats:
        return set()
    pipe.depth_counts["glanced"] += len(feats)
    rows = {}
    for i, f in feats.items():  # (descriptors, points, mirrored, inverted): no contrast-inverted twins
        d, pts, mirrored = f.query_rows()
        rows[i] = (d, pts, mirrored, np.zeros(len(d), bool))
    only = pipe.index.brand_rows(scope) if scope is not None else None
    hits = pipe.index.local.search(np.concatenate([r[0] for r in rows.values()]), DEFAULT_NEIGHBOURS,
                                   only_rows=only, probe_share=GLANCE_PROBE_SHARE)
    return {i for i, found in pipe.fit_local(feats, rows, hits).items() if found}
