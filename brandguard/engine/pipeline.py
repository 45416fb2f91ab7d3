"""One factory that returns the model with its matching preprocessing, index and thresholds.

``Pipeline.from_bundle(path)`` is the only way inference code gets a model: the bundle is
verified, preprocessing comes from its card, the index (if any) must have been built with
that very model. Data flows one way: decode → preprocess → embed → search → decide.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from brandguard.errors import ImageDecodeError, InputError, ReferenceIndexError
from brandguard.vision.bundle import Bundle, default_bundle_path
from brandguard.engine.decide import Calibration, ReferenceHit, Verdict, candidate, decide
from brandguard.vision.decode import DecodeLimits, decode_image
from brandguard.vision.embedder import Embedder
from brandguard.vision.prepare import PreparedImage, prepare_image
from brandguard.vision.preprocess import normalise_batch, resize_for_model
from brandguard.vision.regions import Box
from brandguard.engine.background import Background
from brandguard.vision.verify import NO_GEOMETRY, Geometry, Verifier, to_work_gray
from brandguard.vision.local import LocalConfig, LocalFeatures, describe_source
from brandguard.vision.local_match import LocalMatch, MatchOptions, match_references
from brandguard.vision.shapes import ShapeMatch, ShapeTable, match_shapes
from brandguard.engine.candidates import Candidate, ReferenceThumbs, deep_candidates
from brandguard.engine.deepdecide import decide_visual
from brandguard.engine.textfusion import TextFindings, fuse_text
from brandguard.engine.routing import DepthOptions, ListingHints, glance, route
from brandguard.index.local_store import DEFAULT_NEIGHBOURS
from brandguard.engine.textmarks import Vocabulary
from brandguard.vision.text import TextConfig, TextReader

NEIGHBOURS = DEFAULT_NEIGHBOURS


class Pipeline:
    """A verified bundle ready to judge images. Build with :meth:`from_bundle`."""

    def __init__(self, bundle: Bundle, embedder: Embedder, index, calibration: Calibration,
                 region_mode: str, limits: DecodeLimits, top_k: int,
                 depth: DepthOptions = DepthOptions(), threads: int = 1) -> None:
        self.bundle = bundle
        self.card = bundle.card
        self.embedder = embedder
        self.index = index
        self.calibration = calibration
        self.region_mode = region_mode
        self.limits = limits
        self.top_k = top_k
        self.verifier = Verifier(min_inliers=calibration.min_inliers)
        self.background = Background.load(bundle.path, bundle.card)
        self.local_config = LocalConfig.from_card(bundle.card.local_features)
        self.extractor = self.local_config.make(threads) if self.local_config is not None else None
        self.depth = depth
        self.match_options = MatchOptions()
        self.depth_counts: Counter[str] = Counter()  # listings per route, for reports
        self.reference_thumbs = ReferenceThumbs(self.reference_path, limits)
        # ---- text marks (#18): OCR graphs are loaded (and re-hashed) on first use
        self.text_config = TextConfig.from_card(bundle.card.text_marks)
        self.threads = threads
        self._text_reader: TextReader | None = None
        self._text_lock = threading.Lock()
        self._shapes: tuple[tuple, ShapeTable] | None = None  # (index state, marks) of the shape stage
        self._vocabularies: dict[tuple[int, str | None], Vocabulary] = {}
        self.text_counts: Counter[str] = Counter()  # listings whose photo was read, and why
        self.audit = random.Random(depth.seed)  # auto depth's audit draws (routing.route)
        if depth.depth != "fast" and self.extractor is None:
            raise InputError(f"depth {depth.depth!r} needs local features, but the bundle's card has no "
                             "local_features: use --depth fast or a bundle with a local stage")

    @classmethod
    def from_bundle(cls, path: str | os.PathLike[str] | None = None, *, threads: int = 1, device: str = "cpu",
                    region_mode: str = "full", require_index: bool = False,
                    limits: DecodeLimits = DecodeLimits(), top_k: int = 5,
                    depth: DepthOptions | str = DepthOptions()) -> "Pipeline":
        """Load and verify a bundle (the shipped default when ``path`` is None).

        The index is loaded when the bundle has one; ``require_index`` makes its absence an error.
        ``threads`` bounds every native pool the pipeline uses: ONNX Runtime, FAISS's OpenMP and
        the BLAS behind numpy and FAISS (the score background's matrix product). Left at its
        default, OpenBLAS keeps one spinning thread per core after each call: in a scan that
        doubled the main process's CPU (1.47 vs 0.74 ms per listing), taken from the decode workers.
        """
        from threadpoolctl import threadpool_limits

        from brandguard.index.manifest import MANIFEST_FILE
        from brandguard.index.store import ReferenceIndex

        threadpool_limits(limits=threads, user_api="blas")  # process-wide, like FAISS's omp setting
        if isinstance(depth, str):
            depth = DepthOptions(depth)
        bundle = Bundle.load(path if path is not None else default_bundle_path())
        if depth.depth != "fast" and not bundle.card.local_features:
            depth = DepthOptions("fast") if depth == DepthOptions() else depth  # a default the bundle cannot do
        embedder = Embedder(bundle, threads=threads, device=device)
        index = None
        if require_index or (bundle.path / MANIFEST_FILE).exists():
            index = ReferenceIndex.load(bundle.path, bundle.card, threads=threads,
                                        local_spec=local_spec_of(bundle.card.local_features))
        return cls(bundle, embedder, index, Calibration.load(bundle.path), region_mode, limits, top_k,
                   depth, threads)

    # ------------------------------------------------------------------ stages
    def prepare(self, source: bytes | str | os.PathLike[str], local: bool = False,
                depth: DepthOptions | None = None) -> PreparedImage:
        """Decode and crop; ``local`` also describes the image's keypoints in the same decode and,
        in thorough depth with the text stage (``depth``, default the pipeline's), reads its text;
        in auto depth the keypoint glance that routes it is taken in the same decode (what a
        scan's decode workers do)."""
        spec = (self.extractor, self.local_config.query_side) if local and self.extractor is not None else None
        reader = self.text_reader() if spec is not None and self.reads_text_while_preparing(depth) else None
        glance = self.extractor if spec is None and self.takes_glance(depth) else None
        return prepare_image(source, self.card, self.region_mode, self.limits, local=spec, text=reader,
                             glance=glance)

    def reads_text_while_preparing(self, depth: DepthOptions | None = None) -> bool:
        """Thorough depth reads every photo's text, so it is read where the photo is decoded
        (spread over a scan's decode workers); auto reads only the photos it routes, here."""
        depth = depth or self.depth
        return (depth.depth == "thorough" and depth.text and self.text_config is not None
                and self.index is not None and self.has_local_stage())

    def takes_glance(self, depth: DepthOptions | None = None) -> bool:
        """Auto depth glances at every listing's keypoints (``GLANCE_SIDE``) to route it; the
        glance is taken where the photo is decoded (a scan's decode workers)."""
        depth = depth or self.depth
        return depth.depth == "auto" and self.index is not None and self.has_local_stage()

    def embed_crops(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """R x S x S x 3 uint8 crops -> R x D unit vectors, in batches."""
        out = [self.embedder.embed(normalise_batch(crops[i:i + batch_size], self.card))
               for i in range(0, len(crops), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.card.embedding_dim), np.float32)

    def search_merged(self, items: Sequence[PreparedImage], vectors: np.ndarray,
                      brand: str | None = None) -> list[tuple[list[ReferenceHit], dict]]:
        """Search every crop, merge per reference (best crop wins), best first, top_k kept.
        ``brand`` searches that brand's references only.

        With a background in the bundle, scores are normalised: cosine minus the crop's
        background similarity (see ``brandguard/engine/background.py``); the raw cosine stays in evidence.
        """
        if self.index is None:
            raise InputError("this bundle has no reference index: build one with `brandguard index`")
        per_crop = self.index.search(vectors, k=self.top_k, brand=brand)
        offsets = self.background.offsets(vectors) if self.background is not None and len(vectors) else None
        out, pos = [], 0
        for item in items:
            n = len(item.boxes)
            best: dict[str, tuple[ReferenceHit, Box, float]] = {}
            for c, (box, hits) in enumerate(zip(item.boxes, per_crop[pos:pos + n])):
                off = float(offsets[pos + c]) if offsets is not None else 0.0
                for m in hits:
                    score = m.score - off
                    cur = best.get(m.reference_id)
                    if cur is None or score > cur[0].score:
                        best[m.reference_id] = (ReferenceHit.of(m.record, score), box, m.score)
            pos += n
            ranked = sorted(best.values(), key=lambda hb: (-hb[0].score, hb[0].reference_id))[: self.top_k]
            size = item.original_size if item.original_size[0] else item.size
            evidence = {"region": ranked[0][1].name, "region_box": item.to_original(ranked[0][1]),
                        "image_size": list(size)} if ranked else {"image_size": list(size)}
            if ranked and self.background is not None:
                evidence["cosine"] = round(ranked[0][2], 6)
                evidence["background_normalised"] = True
            if item.notes:
                evidence["decode_notes"] = list(item.notes)
            out.append(([h for h, _, _ in ranked], evidence))
        return out

    def judge(self, items: Sequence[PreparedImage | ImageDecodeError],
              sources: Sequence[bytes | str | os.PathLike[str] | None] | None = None,
              hints: Sequence[ListingHints | None] | None = None,
              depth: DepthOptions | None = None, brand: str | None = None) -> list[Verdict]:
        """Verdicts for already-decoded items; decode errors become ``inconclusive``.

        ``brand`` scopes the whole judgement to one brand's references (both stages search
        only them): what a brand's own check sees, with nothing computed from other brands.

        Every item gets the global stage. Items the depth routes deep (see :class:`DepthOptions`)
        also get the local stage: their keypoints (computed by the decode worker, or here from
        ``sources``) are searched in the descriptor index in one batch, verified with RANSAC,
        and fused with the global score into one calibrated probability per reference. In a
        deep depth the items auto leaves on the global stage are fused too (no local evidence);
        in every depth, what the fast stage flags (its thresholds, its ORB check of the best
        candidate, given ``sources``) stays flagged.
        """
        depth = depth or self.depth
        good = [it for it in items if isinstance(it, PreparedImage)]
        crops = np.concatenate([it.crops for it in good]) if good else None
        vectors = self.embed_crops(crops) if crops is not None else np.zeros((0, self.card.embedding_dim), np.float32)
        merged = iter(self.search_merged(good, vectors, brand)) if good else iter(())
        results: dict[int, tuple[list[ReferenceHit], dict]] = {}
        for i, it in enumerate(items):
            if isinstance(it, PreparedImage):
                results[i] = next(merged)
        routes = route(self, depth, items, results, hints, brand, sources)
        feats: dict[int, LocalFeatures] = {}
        for i, why in routes.items():
            it = items[i]
            if it.local is not None:
                feats[i] = it.local
            elif sources is not None and sources[i] is not None:
                try:
                    feats[i] = describe_source(self.extractor, sources[i], self.local_config.query_side,
                                               self.limits, mirror=True, shapes=True)
                except ImageDecodeError as exc:
                    results[i][1]["local_error"] = exc.reason
            else:
                results[i][1]["local_error"] = "no image bytes for the local stage"
        local = self.match_local(feats, brand)
        shaped = self.match_shapes(feats, brand)
        texts = self.text_marks(items, sources, hints, depth, routes, brand)  # (#18)
        verdicts = []
        for i, it in enumerate(items):
            if isinstance(it, ImageDecodeError):
                verdicts.append(Verdict.inconclusive(it.reason, it.detail))
                continue
            hits, ev = results[i]
            ev["depth"] = {"requested": depth.depth, "local": i in feats, "why": routes.get(i, "")}
            if i in feats:
                self.depth_counts["total"] += 1
                self.depth_counts[routes[i]] += 1
            if depth.depth != "fast" and self.has_local_stage():
                # One scale and one rule for every listing of a deep scan: items auto left on the
                # global stage are fused with no local evidence.
                verdicts.append(self.decide_deep(hits, ev, local.get(i, []),
                                                 sources[i] if sources is not None else None, texts.get(i),
                                                 feats.get(i), shaped.get(i)))
                continue
            verdicts.append(self.decide_fast(hits, ev, sources[i] if sources is not None else None))
        return verdicts

    def decide_fast(self, hits: list[ReferenceHit], ev: dict,
                    source: bytes | str | os.PathLike[str] | None = None) -> Verdict:
        """The global stage's verdict: thresholds on the global score, and the ORB check of the
        best candidate (from the verify floor on, when the image bytes are at hand)."""
        geometry = None
        best = candidate(hits, self.calibration)
        if best is not None and source is not None and best.score >= self.calibration.verify_from(best.brand):
            geometry = self.verify(source, best.reference_id)
        return decide(hits, self.calibration, ev, geometry)

    # ------------------------------------------------------------------ local stage
    def glance(self, items: dict[int, PreparedImage], sources: Sequence | None = None,
               scope: str | None = None) -> set[int]:
        """Items auto's keypoint glance sends through the local stage (``routing.glance``)."""
        return glance(self, items, sources, scope)

    def has_local_stage(self) -> bool:
        """True when this bundle can run the local stage: an extractor and a descriptor index."""
        return self.extractor is not None and self.index is not None and self.index.local is not None

    def match_local(self, feats: dict[int, LocalFeatures], brand: str | None = None) -> dict[int, list[LocalMatch]]:
        """Geometric matches per item: one batched kNN search for every item's descriptors
        (``brand``: among that brand's references only)."""
        if not feats:
            return {}
        rows = {k: self._with_inverted(f.query_rows()) for k, f in feats.items()}
        q = np.concatenate([r[0] for r in rows.values()])
        only = self.index.brand_rows(brand) if brand is not None else None
        return self.fit_local(feats, rows, self.index.local.search(q, NEIGHBOURS, only_rows=only))

    def fit_local(self, feats: dict[int, LocalFeatures], rows: dict, hits) -> dict[int, list[LocalMatch]]:  # noqa: ANN001
        """The geometric step of :meth:`match_local`: each item's slice of the batched
        neighbours (``hits``, in the order of ``rows``) voted and fitted."""
        local = self.index.local
        codes = self.index.brand_codes()
        counts = local.counts()
        out, pos = {}, 0
        for k, (d, pts, mirrored, inverted) in rows.items():
            n = len(d)
            sl = slice(pos, pos + n)
            ref_rows = hits.ref_rows[sl]
            out[k] = match_references(pts, mirrored, feats[k].image_size, hits.distances[sl], ref_rows,
                                      hits.points[sl], codes[np.minimum(ref_rows, len(codes) - 1)],
                                      local.sizes, counts, self.match_options, inverted)
            pos += n
        return out

    def _with_inverted(self, rows: tuple[np.ndarray, np.ndarray, np.ndarray]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A listing's query rows plus their contrast-inverted twins (same points and mirror
        flags), and which rows are twins."""
        d, pts, mirrored = rows
        inv = self.extractor.invert(d) if self.match_options.inverted and len(d) else None
        if inv is None:
            return d, pts, mirrored, np.zeros(len(d), bool)
        return (np.concatenate([d, inv]), np.concatenate([pts, pts]), np.concatenate([mirrored, mirrored]),
                np.repeat([False, True], len(d)))

    def match_shapes(self, feats: dict[int, LocalFeatures], brand: str | None = None
                     ) -> dict[int, dict[int, ShapeMatch]]:
        """Per item, where the indexed marks' outlines fit its colour parts (reference row ->
        placement; ``brand``: that brand's marks only). Empty for an index without shapes."""
        table = self.shape_table()
        if table is None or not len(table):
            return {}
        only = self.index.brand_rows(brand) if brand is not None else None
        return {k: match_shapes(f.shapes, table, only_rows=only) for k, f in feats.items() if f.shapes is not None}

    def shape_table(self) -> ShapeTable | None:
        """The indexed marks' shapes, rebuilt from the descriptor index when it changed (with
        the brands, so that a shape several brands share is left out of the shortlists, and the
        product photos, which the affine pass does not stretch)."""
        local = self.index.local if self.index is not None else None
        if local is None:
            return None
        key = (self.index.manifest.generation, id(local), local.marks_version, len(local.marks))
        if self._shapes is None or self._shapes[0] != key:
            try:
                table = ShapeTable.from_marks(local.marks, self.index.brand_codes(), self.index.kind_rows("product"))
                table.shared()  # the one costly step (~5 ms a shape), paid here rather than mid-listing
                table.affine()
                self._shapes = (key, table)
            except ValueError as exc:
                raise ReferenceIndexError(f"the descriptor index's mark shapes are damaged ({exc}); "
                                          "rebuild it with `brandguard index`") from exc
        return self._shapes[1]

    def deep_candidates(self, hits: list[ReferenceHit], matches: list[LocalMatch],
                        listing: LocalFeatures | None = None,
                        shapes: dict[int, ShapeMatch] | None = None) -> list[Candidate]:
        """Every reference with global, local or shape evidence for one listing (``engine/candidates.py``)."""
        return deep_candidates(self.index, hits, matches, listing, self.reference_thumbs, shapes)

    # ------------------------------------------------------------------ text marks (#18)
    def text_reader(self) -> TextReader:
        """The OCR reader of the bundle's ``text_marks`` (made, and its graphs re-hashed, on first
        use; the service's decode threads may ask at once, so the first is made under a lock)."""
        if self.text_config is None:
            raise InputError("this bundle's card has no text_marks: no text stage")
        with self._text_lock:
            if self._text_reader is None:
                self._text_reader = self.text_config.make(threads=self.threads)
        return self._text_reader

    def vocabulary(self, scope: str | None = None) -> Vocabulary:
        """The live brands' vocabulary (``scope``: that brand's only), cached per index generation."""
        if self.index is None:
            return Vocabulary.build({}, [])
        key = (self.index.generation, scope)
        if key not in self._vocabularies:
            if len(self._vocabularies) > 64:
                self._vocabularies.clear()
            brands = [scope] if scope is not None else self.index.brands()
            self._vocabularies[key] = Vocabulary.build(self.index.vocabulary(), brands)
        return self._vocabularies[key]

    def text_marks(self, items: Sequence, sources: Sequence | None, hints: Sequence[ListingHints | None] | None,
                   depth: DepthOptions, routes: dict[int, str], scope: str | None = None) -> dict[int, TextFindings]:
        """The text stage of a deep depth: titles matched for every decoded item; photos read
        (one batch) for the items that go through the local stage (all of them in thorough)."""
        if (depth.depth == "fast" or not depth.text or self.text_config is None or self.index is None
                or not self.has_local_stage()):
            return {}
        vocab = self.vocabulary(scope)
        out: dict[int, TextFindings] = {}
        for i, it in enumerate(items):
            if not isinstance(it, PreparedImage):
                continue
            h = hints[i] if hints is not None else None
            f = TextFindings()
            if h is not None and h.title:
                f.title = vocab.match(h.title, source="title")
            out[i] = f
        todo, images = [], []
        for i, why in routes.items():
            src = sources[i] if sources is not None else None
            read = items[i].text if isinstance(items[i], PreparedImage) else None
            if read is not None:  # read where it was decoded
                if read.error is not None:
                    out[i].error = read.error
                else:
                    self._text_found(out[i], read.lines, read.ms, routes[i], vocab)
                continue
            if src is None:
                out[i].error = "no image bytes for the text stage"
                continue
            try:
                d = decode_image(src, target_side=self.text_reader().decode_side, limits=self.limits)
            except ImageDecodeError as exc:
                out[i].error = exc.reason
                continue
            todo.append(i)
            images.append((d.rgb, d.display_size))
        if not todo:
            return out
        reader = self.text_reader()
        t0 = time.perf_counter()
        lines = reader.read(images)
        ms = (time.perf_counter() - t0) * 1000.0 / len(todo)
        for i, ls in zip(todo, lines):
            self._text_found(out[i], ls, ms, routes[i], vocab)
        return out

    def _text_found(self, f: TextFindings, lines, ms: float, why: str, vocab: Vocabulary) -> None:  # noqa: ANN001
        """A photo's lines into its findings: the brand names and lookalikes among them."""
        f.read, f.why, f.ms = True, why, ms
        f.lines = [ln.to_dict() for ln in lines]
        for ln in lines:
            f.image += vocab.match(ln.text, source="image", score=ln.score, merged=True,
                                   box=tuple(ln.box), quad=ln.quad)
        self.text_counts["total"] += 1
        self.text_counts[why] += 1

    def decide_deep(self, hits: list[ReferenceHit], ev: dict, matches: list[LocalMatch],
                    source: bytes | str | os.PathLike[str] | None = None,
                    text: TextFindings | None = None, listing: LocalFeatures | None = None,
                    shapes: dict[int, ShapeMatch] | None = None) -> Verdict:
        """The visual verdict (:meth:`decide_visual`) with the text stage's findings fused in
        (``brandguard.engine.textmarks.fuse_text``: its rules are there)."""
        verdict = self.decide_visual(hits, ev, matches, source, listing, shapes)
        return fuse_text(verdict, text, self.representative) if text is not None else verdict

    def representative(self, brand: str) -> ReferenceHit | None:
        """A brand's first registered reference: what a lead decided by text alone shows beside the photo."""
        recs = self.index.records(brand) if self.index is not None else []
        if not recs:
            return None
        r = recs[0]
        return ReferenceHit(r.reference_id, r.brand, r.sku, r.kind, 0.0)

    # ------------------------------------------------------------------ fused visual verdict
    def decide_visual(self, hits: list[ReferenceHit], ev: dict, matches: list[LocalMatch],
                      source: bytes | str | os.PathLike[str] | None = None,
                      listing: LocalFeatures | None = None,
                      shapes: dict[int, ShapeMatch] | None = None) -> Verdict:
        """Fuse global hits, local matches and shape placements into one probability per
        reference, then decide (``engine/deepdecide.py``)."""
        return decide_visual(self, hits, ev, matches, source, listing, shapes)

    def verify(self, source: bytes | str | os.PathLike[str], reference_id: str) -> Geometry:
        """Local-feature evidence of ``source`` against one indexed reference (no match: 0 inliers)."""
        return self.verify_many(source, [reference_id])[0]

    def verify_many(self, source: bytes | str | os.PathLike[str], reference_ids: Sequence[str]) -> list[Geometry]:
        """Evidence against several references, decoding and describing the query once
        (and not at all when none of the references has a stored image)."""
        ref_paths = [self.reference_path(rid) for rid in reference_ids]
        if all(p is None for p in ref_paths):
            return [NO_GEOMETRY] * len(reference_ids)
        try:
            # A DCT-downscaled decode (>= 300 px short side) is plenty for ORB at WORK_SIDE.
            query = decode_image(source, target_side=300, limits=self.limits)
        except ImageDecodeError:
            return [NO_GEOMETRY] * len(reference_ids)
        gray, factor = to_work_gray(query.rgb)
        features = self.verifier.features(gray)
        # boxes come back in the reduced decode's pixels; evidence uses the original's
        sx, sy = query.display_size[0] / query.size[0], query.display_size[1] / query.size[1]
        out = []
        for rid, ref_path in zip(reference_ids, ref_paths):
            if ref_path is None:
                out.append(NO_GEOMETRY)
                continue
            try:
                g = self.verifier.verify(gray, factor, rid, lambda p=ref_path: decode_image(
                    p, target_side=300, limits=self.limits).rgb, query_features=features)
            except ImageDecodeError:
                out.append(NO_GEOMETRY)
                continue
            if g.box is not None:
                x0, y0, x1, y1 = g.box
                g = replace(g, box=(round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)))
            out.append(g)
        return out

    def source_path(self, source: str) -> str:
        """A reference's stored ``source`` as a usable path: relative ones live inside the bundle."""
        if not source or Path(source).is_absolute():
            return source
        return str(self.bundle.path / source)

    def reference_path(self, reference_id: str) -> Path | None:
        """Where a reference's image lives: stored inside the bundle, or its original path
        (looked up in the index, so any live reference can be verified, searched here or not)."""
        rec = self.index.record(reference_id) if self.index is not None else None
        src = rec.source if rec is not None else ""
        if not src:
            return None
        p = Path(self.source_path(src))
        return p if p.is_file() else None

    def check(self, sources: Sequence[bytes | str | os.PathLike[str]], hints: Sequence[ListingHints | None] | None = None,
              depth: DepthOptions | None = None, brand: str | None = None) -> list[Verdict]:
        """Judge images given as paths or bytes (``brand``: against that brand's references
        only). Never raises for a bad image."""
        depth = depth or self.depth
        items: list[PreparedImage | ImageDecodeError] = []
        for s in sources:
            try:
                items.append(self.prepare(s, local=depth.depth == "thorough" and self.has_local_stage(), depth=depth))
            except ImageDecodeError as exc:
                items.append(exc)
        return self.judge(items, sources, hints, depth, brand)

    def embed_sources(self, sources: Sequence[bytes | str | os.PathLike[str]],
                      batch_size: int = 64) -> tuple[np.ndarray, list[ImageDecodeError | None]]:
        """Whole-image embeddings (N x D; zero rows where decoding failed) and per-item errors."""
        vecs = np.zeros((len(sources), self.card.embedding_dim), np.float32)
        errors: list[ImageDecodeError | None] = [None] * len(sources)
        pending: list[tuple[int, np.ndarray]] = []

        def flush() -> None:
            if pending:
                idx = [i for i, _ in pending]
                vecs[idx] = self.embed_crops(np.stack([c for _, c in pending]))
                pending.clear()

        for i, s in enumerate(sources):
            try:
                decoded = decode_image(s, target_side=self.card.input_size, limits=self.limits)
                pending.append((i, resize_for_model(decoded.rgb, self.card)))
            except ImageDecodeError as exc:
                errors[i] = exc
            if len(pending) >= batch_size:
                flush()
        flush()
        return vecs, errors

    def describe(self) -> dict:
        """Model and index versions, for reports and the service's /readyz."""
        d = {"model": self.card.name, "model_version": self.card.version, "model_sha256": self.card.sha256,
             "embedding_dim": self.card.embedding_dim, "input_size": self.card.input_size,
             "providers": list(self.embedder.info.providers), "region_mode": self.region_mode,
             "calibration": self.calibration.method}
        if self.index is not None:
            d.update(index_factory=self.index.manifest.factory, index_count=len(self.index),
                     index_sha256=self.index.manifest.index_sha256)
            if self.index.local is not None:
                d.update(local_factory=self.index.local.factory, local_descriptors=len(self.index.local),
                         mark_shapes=len(self.index.local.marks))
        d.update(depth=self.depth.depth, local_features=self.local_config.extractor if self.local_config else None,
                 deep_calibration=self.calibration.deep.method if self.calibration.deep else None)
        return d


def local_spec_of(card_local: dict):  # noqa: ANN201
    """The index's LocalSpec for a card's local_features (None: no local stage)."""
    from brandguard.index.manifest import LocalSpec

    cfg = LocalConfig.from_card(card_local)
    if cfg is None:
        return None
    dim = 64 if cfg.extractor == "xfeat" else 128
    return LocalSpec(cfg.extractor, dim, cfg.spec_sha256())
