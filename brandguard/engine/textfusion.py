"""Text marks fused with the visual verdict: what a brand name read in the photo (or in the
title) adds to, or changes in, the verdict of the global and local stages (rules below)."""

from __future__ import annotations

from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from typing import Any, Callable

from brandguard.engine.decide import ReferenceHit, Verdict
from brandguard.engine.textmarks import TextMatch

# ---------------------------------------------------------------------- fusion with the visual verdict
# A text match decides only from this recognition confidence on (calibrated on the val split's
# text-mark family, benchmarks/bench_text.py: the lowest score keeping the text signal's
# precision at 95%).
TEXT_MIN_SCORE = 0.5
# Confidence of a verdict that text alone decides: the recognition score times how telling the
# match is. A lookalike spelling is made to pass for the brand; the brand's own name is also
# written on genuine goods and resale listings (authorised sellers are the scanner's business).
LOOKALIKE_WEIGHT = 0.9
EXACT_WEIGHT = 0.7


def text_probability(m: TextMatch) -> float:
    return round(m.score * (LOOKALIKE_WEIGHT if m.kind == "lookalike" else EXACT_WEIGHT), 6)


@dataclass
class TextFindings:
    """What the text stage found for one listing: the lines read in the photo (when it ran),
    and the vocabulary's matches there and in the title."""

    read: bool = False
    why: str = ""
    lines: list[dict] = field(default_factory=list)
    image: list[TextMatch] = field(default_factory=list)
    title: list[TextMatch] = field(default_factory=list)
    error: str | None = None
    ms: float = 0.0

    def usable(self, min_score: float = TEXT_MIN_SCORE) -> list[TextMatch]:
        """Image matches confident enough to decide, strongest first (lookalike, then score)."""
        return sorted((m for m in self.image if m.score >= min_score),
                      key=lambda m: (m.kind != "lookalike", -m.score, m.brand))

    def evidence(self) -> dict:
        d: dict[str, Any] = {"read": self.read}
        if self.why:
            d["why"] = self.why
        if self.error:
            d["error"] = self.error
        if self.read:
            d["lines"] = self.lines
            d["ms"] = round(self.ms, 2)
        d["matches"] = [m.to_dict() for m in (*self.image, *self.title)]
        return d


def fuse_text(verdict: Verdict, findings: TextFindings | None,
              representative: Callable[[str], ReferenceHit | None] | None = None,
              min_score: float = TEXT_MIN_SCORE) -> Verdict:
    """The verdict with the text evidence fused in (``evidence["text"]``), by these rules:

    1. the visual stages flag brand B and the photo shows B's name or a lookalike of it: the
       verdict stands, its confidence and B's best reference score become the noisy-OR of the
       visual and the text probability;
    2. the visual stages find nothing and the photo shows a registered brand's name or a
       lookalike of it: ``knockoff`` for that brand (a lookalike before an exact name), with the
       text probability as confidence; B's best candidate reference (or, when the visual stages
       had none of B's, B's first registered reference, from ``representative(brand)``) leads
       ``top`` with that score;
    3. the visual stages call it a ``knockoff`` of brand C and the photo names brand B: the
       stronger of the two decides (the text probability against the visual confidence); a
       visual ``copy`` always stands;
    4. otherwise (no text, text of an unregistered brand, text below ``min_score``, a title
       alone) the verdict stands; the text is evidence only. Text never makes a ``copy``.
    """
    if findings is None or verdict.verdict == "inconclusive":
        return verdict
    ev = dict(verdict.evidence)
    tev = findings.evidence()
    usable = findings.usable(min_score)
    if verdict.verdict in ("copy", "knockoff"):
        same = [m for m in usable if m.brand == verdict.brand]
        if not same:
            if usable and verdict.verdict == "knockoff" and text_probability(usable[0]) > verdict.confidence:
                m = usable[0]
                p = text_probability(m)
                tev["rule"] = (f"{m.rule}, score {m.score:.2f}: text probability {p:.2f} for {m.brand!r} > the "
                               f"visual knockoff's confidence {verdict.confidence:.2f} for {verdict.brand!r} "
                               f"-> knockoff of {m.brand!r}")
                tev["decided"] = m.to_dict()
                tev["visual"] = {"verdict": verdict.verdict, "brand": verdict.brand,
                                 "confidence": verdict.confidence}
                ev["text"] = tev
                ev["decided_by"] = f"{ev.get('decided_by', '')}; overruled by text: {m.kind} wordmark -> knockoff"
                ev["stage"] = "text"
                for k in ("local", "match_box", "geometry"):  # about the other brand's reference
                    ev.pop(k, None)
                top, score = _raise_brand(verdict.top, m.brand, p, None, representative)
                return Verdict("knockoff", brand=m.brand, confidence=round(p, 4), score=score, top=top, evidence=ev)
            if usable:
                tev["rule"] = (f"text names {usable[0].brand!r}, the visual stages flag {verdict.brand!r} "
                               f"({verdict.verdict}, confidence {verdict.confidence:.2f}): the visual verdict stands")
            ev["text"] = tev
            return dc_replace(verdict, evidence=ev)
        m = same[0]
        p = text_probability(m)
        conf = round(1.0 - (1.0 - verdict.confidence) * (1.0 - p), 4)
        tev["rule"] = (f"{m.rule} ({m.kind}, score {m.score:.2f}): supports the {verdict.verdict} of "
                       f"{verdict.brand!r}; confidence {verdict.confidence:.2f} -> {conf:.2f}")
        tev["decided"] = m.to_dict()
        ev["text"] = tev
        top, score = _raise_brand(verdict.top, verdict.brand, p, verdict.score, representative)
        return dc_replace(verdict, confidence=conf, top=top, score=score, evidence=ev)
    if not usable:
        if findings.image and not usable:
            tev["rule"] = f"text matches below the recognition score {min_score:.2f}: evidence only"
        elif findings.title:
            tev["rule"] = "a brand named in the title only: evidence (and routing), no verdict"
        ev["text"] = tev
        return dc_replace(verdict, evidence=ev)
    m = usable[0]
    p = text_probability(m)
    tev["rule"] = (f"{m.rule}, score {m.score:.2f} >= {min_score:.2f}; no visual match -> knockoff of "
                   f"{m.brand!r} with confidence {p:.2f}")
    tev["decided"] = m.to_dict()
    ev["text"] = tev
    ev["decided_by"] = f"{ev.get('decided_by', 'visual: clear')}; text: {m.kind} wordmark -> knockoff"
    ev["stage"] = "text"
    top, score = _raise_brand(verdict.top, m.brand, p, None, representative)
    return Verdict("knockoff", brand=m.brand, confidence=round(p, 4), score=score, top=top, evidence=ev)


def _raise_brand(top: tuple[ReferenceHit, ...], brand: str, p: float, score: float | None,
                 representative: Callable[[str], ReferenceHit | None] | None
                 ) -> tuple[tuple[ReferenceHit, ...], float]:
    """``top`` with ``brand``'s best reference scored noisy-OR(its score, p) and leading; when
    ``brand`` has none there, its representative reference (if any) leads with score p."""
    top = list(top)
    j = next((k for k, h in enumerate(top) if h.brand == brand), None)
    if j is not None:
        h = top.pop(j)
        new = round(1.0 - (1.0 - max(0.0, min(1.0, h.score))) * (1.0 - p), 6)
        top.insert(0, ReferenceHit(h.reference_id, h.brand, h.sku, h.kind, new))
    else:
        rep = representative(brand) if representative is not None else None
        if rep is not None:
            top.insert(0, ReferenceHit(rep.reference_id, rep.brand, rep.sku, rep.kind, round(p, 6)))
    top.sort(key=lambda h: (h.brand != brand, -h.score))
    return tuple(top), (top[0].score if top and top[0].brand == brand else (score if score is not None else p))
