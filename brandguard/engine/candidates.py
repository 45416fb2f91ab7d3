"""The candidates of one listing in a deep depth: every reference with global or local evidence,
with that evidence, ready for the fusion (``engine/fusion.py``) and the decision."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from brandguard.engine.decide import ReferenceHit
from brandguard.engine.fusion import PairEvidence, with_gaps
from brandguard.errors import ImageDecodeError
from brandguard.vision.agreement import REFERENCE_THUMB_SIDE, Agreement, agreement, thumbnail
from brandguard.vision.decode import DecodeLimits, decode_image
from brandguard.vision.local import LocalFeatures
from brandguard.vision.local_match import LocalMatch
from brandguard.vision.shapes import ShapeMatch


# A geometric match whose reference, laid over the listing, correlates below this both in grey
# levels and in edges (NCC of each) is set aside: on the val split 0.5% of true matches and 5% of
# false ones fall there. Edges count too because a mark pasted without its canvas (the photo
# shows through the reference's white) keeps its edges (grey 0.18, edges 0.35 in the tests),
# while a clean photo flagged from 5 weak inliers had -0.13 and -0.09.
CONTRADICTED_NCC = 0.2


@dataclass(frozen=True)
class Candidate:
    """One reference for one listing: its hit, the fused score's inputs, the geometric match
    (None: global evidence only), the dense agreement (None: not measured) and where the
    reference's mark outline fits (None: the shape stage found no placement)."""

    hit: ReferenceHit
    evidence: PairEvidence
    match: LocalMatch | None = None
    agreement: Agreement | None = None
    shape: ShapeMatch | None = None


class ReferenceThumbs:
    """Grey thumbnails of reference images, decoded on first use and kept (least recently used
    out first): a scan meets the same few thousand references over and over."""

    def __init__(self, path_of: Callable[[str], Path | None], limits: DecodeLimits, capacity: int = 4096) -> None:
        self.path_of = path_of
        self.limits = limits
        self.capacity = capacity
        self._cache: OrderedDict[tuple[str, str], np.ndarray | None] = OrderedDict()

    def get(self, reference_id: str) -> np.ndarray | None:
        """The reference's thumbnail, None when its image is not at hand or does not decode.

        Keyed by id and file: a reference removed and registered again under the same id with
        another image is not judged by the old one's pixels."""
        path = self.path_of(reference_id)
        if path is None:
            return None
        key = (reference_id, str(path))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        try:
            rgb = decode_image(path, target_side=REFERENCE_THUMB_SIDE, limits=self.limits).rgb
            thumb = thumbnail(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), REFERENCE_THUMB_SIDE)
        except ImageDecodeError:
            thumb = None
        self._cache[key] = thumb
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return thumb

    def __len__(self) -> int:
        return len(self._cache)



def _agreement(index, reference_id: str, row: int, listing: LocalFeatures | None,  # noqa: ANN001
               thumbs: ReferenceThumbs | None, outline, negative: bool = False) -> Agreement | None:  # noqa: ANN001
    """The reference (its negative for a match made by inverted descriptors) laid over the
    listing along ``outline`` (None: a thumbnail is missing)."""
    sizes = index.local.sizes if index.local is not None else {}
    if listing is None or listing.thumb is None or thumbs is None or row not in sizes:
        return None
    ref = thumbs.get(reference_id)
    if ref is None:
        return None
    return agreement(listing.thumb, listing.image_size, ref, tuple(sizes[row]), outline, negative)


def _dense(agr: Agreement) -> dict:
    return dict(dense=True, ncc=agr.ncc, grad_ncc=agr.grad_ncc, agree_share=agr.agree_share,
                agree_frac=agr.agree_frac, textured_frac=agr.textured_frac, inside_share=agr.inside_share)


def deep_candidates(index, hits: list[ReferenceHit], matches: list[LocalMatch],  # noqa: ANN001
                    listing: LocalFeatures | None = None, thumbs: ReferenceThumbs | None = None,
                    shapes: dict[int, ShapeMatch] | None = None) -> list[Candidate]:
    """Every reference with global, local or shape evidence for one listing, with that evidence.

    A reference found only by the local stage gets, as its global score, the lowest global
    top-k score minus a margin (its true score is lower than that), flagged as absent. With the
    listing's thumbnail and the references' (``thumbs``), each geometric match is also checked
    densely (:func:`brandguard.vision.agreement.agreement`), and one the pixels contradict
    (grey and edge NCC < ``CONTRADICTED_NCC``) is not evidence. ``shapes`` (reference row ->
    placement of its mark, ``vision/shapes.py``) adds the shape evidence, and the references
    found by their outline alone."""
    records = index.records_by_rows([m.ref_row for m in matches])
    floor = (hits[-1].score if hits else 0.0) - 0.05
    cands: dict[str, Candidate] = {h.reference_id: Candidate(h, PairEvidence(h.score, False)) for h in hits}
    for m in matches:
        r = records.get(m.ref_row)
        if r is None:
            continue
        prev = cands.get(r.reference_id)
        g, absent = (prev.evidence.global_score, False) if prev else (floor, True)
        hit = prev.hit if prev else ReferenceHit.of(r, floor)
        agr = _agreement(index, r.reference_id, m.ref_row, listing, thumbs, m.outline, m.inverted)
        if agr is not None and max(agr.ncc, agr.grad_ncc) < CONTRADICTED_NCC:
            continue  # the pixels where the keypoints put the reference do not look like it
        dense = {} if agr is None else _dense(agr)
        cands[r.reference_id] = Candidate(hit, PairEvidence(g, absent, m.inliers, m.inlier_ratio, m.coverage,
                                                            m.mirrored, m.votes, m.area_share, m.instances,
                                                            outline_share=m.outline_share, **dense), m, agr)
    if shapes:
        srecords = index.records_by_rows(list(shapes))
        for row, sm in shapes.items():
            r = srecords.get(row)
            if r is None:
                continue
            prev = cands.get(r.reference_id)
            if prev is None:
                prev = Candidate(ReferenceHit.of(r, floor), PairEvidence(floor, True))
            ev = replace(prev.evidence, shape=True, shape_iou=sm.iou, shape_part_iou=sm.part_iou,
                         shape_mirrored=sm.mirrored, shape_area=sm.area_share, shape_complexity=sm.complexity,
                         shape_parts=sm.parts, shape_stretch=sm.stretch)
            agr = prev.agreement
            if agr is None and prev.match is None:  # the pixels under the placed mark, as for a match
                agr = _agreement(index, r.reference_id, row, listing, thumbs, sm.outline)
                if agr is not None and max(agr.ncc, agr.grad_ncc) < CONTRADICTED_NCC:
                    continue
                if agr is not None:
                    ev = replace(ev, **_dense(agr))
            cands[r.reference_id] = replace(prev, evidence=ev, shape=sm, agreement=agr)
    values = list(cands.values())
    gapped = with_gaps([c.evidence for c in values])
    return [replace(c, evidence=e) for c, e in zip(values, gapped)]
