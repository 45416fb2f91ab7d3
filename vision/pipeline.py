"""One factory that returns the model with its matching preprocessing, index and thresholds.

``Pipeline.from_bundle(path)`` is the only way inference code gets a model: the bundle is
verified, preprocessing comes from its card, the index (if any) must have been built with
that very model. Data flows one way: decode → preprocess → embed → search → decide.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from brandguard.errors import ImageDecodeError, InputError
from brandguard.vision.bundle import Bundle, default_bundle_path
from brandguard.vision.decide import Calibration, ReferenceHit, Verdict, candidate, decide
from brandguard.vision.decode import DecodeLimits, decode_image
from brandguard.vision.embedder import Embedder
from brandguard.vision.prepare import PreparedImage, prepare_image
from brandguard.vision.preprocess import normalise_batch, resize_for_model
from brandguard.vision.regions import Box
from brandguard.vision.background import Background
from brandguard.vision.verify import NO_GEOMETRY, Geometry, Verifier, to_work_gray


class Pipeline:
    """A verified bundle ready to judge images. Build with :meth:`from_bundle`."""

    def __init__(self, bundle: Bundle, embedder: Embedder, index, calibration: Calibration,
                 region_mode: str, limits: DecodeLimits, top_k: int) -> None:
        self.bundle = bundle
        self.card = bundle.card
        self.embedder = embedder
        self.index = index
        self.calibration = calibration
        self.region_mode = region_mode
        self.limits = limits
        self.top_k = top_k
        self.verifier = Verifier(min_inliers=calibration.min_inliers)
        self._sources: dict[str, str] = {}
        self.background = Background.load(bundle.path, bundle.card)

    @classmethod
    def from_bundle(cls, path: str | os.PathLike[str] | None = None, *, threads: int = 1, device: str = "cpu",
                    region_mode: str = "full", require_index: bool = False,
                    limits: DecodeLimits = DecodeLimits(), top_k: int = 5) -> "Pipeline":
        """Load and verify a bundle (the shipped default when ``path`` is None).

        The index is loaded when the bundle has one; ``require_index`` makes its absence an error.
        ``threads`` bounds every native pool the pipeline uses: ONNX Runtime, FAISS's OpenMP and
        the BLAS behind numpy and FAISS (the score background's matrix product). Left at its
        default, OpenBLAS keeps one spinning thread per core after each call: in a scan that
        doubled the main process's CPU (1.47 vs 0.74 ms per listing), taken from the decode workers.
        """
        from threadpoolctl import threadpool_limits

        from brandguard.index.store import MANIFEST_FILE, ReferenceIndex

        threadpool_limits(limits=threads, user_api="blas")  # process-wide, like FAISS's omp setting
        bundle = Bundle.load(path if path is not None else default_bundle_path())
        embedder = Embedder(bundle, threads=threads, device=device)
        index = None
        if require_index or (bundle.path / MANIFEST_FILE).exists():
            index = ReferenceIndex.load(bundle.path, bundle.card, threads=threads)
        return cls(bundle, embedder, index, Calibration.load(bundle.path), region_mode, limits, top_k)

    # ------------------------------------------------------------------ stages
    def prepare(self, source: bytes | str | os.PathLike[str]) -> PreparedImage:
        return prepare_image(source, self.card, self.region_mode, self.limits)

    def embed_crops(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """R x S x S x 3 uint8 crops -> R x D unit vectors, in batches."""
        out = [self.embedder.embed(normalise_batch(crops[i:i + batch_size], self.card))
               for i in range(0, len(crops), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.card.embedding_dim), np.float32)

    def search_merged(self, items: Sequence[PreparedImage], vectors: np.ndarray) -> list[tuple[list[ReferenceHit], dict]]:
        """Search every crop, merge per reference (best crop wins), best first, top_k kept.

        With a background in the bundle, scores are normalised: cosine minus the crop's
        background similarity (see ``vision/background.py``); the raw cosine stays in evidence.
        """
        if self.index is None:
            raise InputError("this bundle has no reference index: build one with `brandguard index`")
        per_crop = self.index.search(vectors, k=self.top_k)
        offsets = self.background.offsets(vectors) if self.background is not None and len(vectors) else None
        out, pos = [], 0
        for item in items:
            n = len(item.boxes)
            best: dict[str, tuple[ReferenceHit, Box, float]] = {}
            for c, (box, hits) in enumerate(zip(item.boxes, per_crop[pos:pos + n])):
                off = float(offsets[pos + c]) if offsets is not None else 0.0
                for m in hits:
                    self._sources[m.reference_id] = m.source
                    score = m.score - off
                    cur = best.get(m.reference_id)
                    if cur is None or score > cur[0].score:
                        best[m.reference_id] = (ReferenceHit(m.reference_id, m.brand, m.sku, m.kind, score), box,
                                                m.score)
            pos += n
            ranked = sorted(best.values(), key=lambda hb: (-hb[0].score, hb[0].reference_id))[: self.top_k]
            evidence = {"region": ranked[0][1].name, "region_box": ranked[0][1].as_list(),
                        "image_size": list(item.size)} if ranked else {"image_size": list(item.size)}
            if ranked and self.background is not None:
                evidence["cosine"] = round(ranked[0][2], 6)
                evidence["background_normalised"] = True
            if item.notes:
                evidence["decode_notes"] = list(item.notes)
            out.append(([h for h, _, _ in ranked], evidence))
        return out

    def judge(self, items: Sequence[PreparedImage | ImageDecodeError],
              sources: Sequence[bytes | str | os.PathLike[str] | None] | None = None) -> list[Verdict]:
        """Verdicts for already-decoded items; decode errors become ``inconclusive``.

        With ``sources`` (the original bytes or paths, parallel to ``items``), candidates above
        the knockoff threshold are verified with local features against their best reference:
        only those images are decoded again at matching resolution, so clean listings cost nothing.
        """
        good = [it for it in items if isinstance(it, PreparedImage)]
        crops = np.concatenate([it.crops for it in good]) if good else None
        vectors = self.embed_crops(crops) if crops is not None else np.zeros((0, self.card.embedding_dim), np.float32)
        merged = iter(self.search_merged(good, vectors)) if good else iter(())
        verdicts = []
        for i, it in enumerate(items):
            if isinstance(it, ImageDecodeError):
                verdicts.append(Verdict.inconclusive(it.reason, it.detail))
                continue
            hits, ev = next(merged)
            geometry = None
            best = candidate(hits, self.calibration)
            if best is not None and sources is not None and sources[i] is not None:
                if best.score >= self.calibration.verify_from(best.brand):
                    geometry = self.verify(sources[i], best.reference_id)
            verdicts.append(decide(hits, self.calibration, ev, geometry))
        return verdicts

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
        out = []
        for rid, ref_path in zip(reference_ids, ref_paths):
            if ref_path is None:
                out.append(NO_GEOMETRY)
                continue
            try:
                out.append(self.verifier.verify(gray, factor, rid, lambda p=ref_path: decode_image(
                    p, target_side=300, limits=self.limits).rgb, query_features=features))
            except ImageDecodeError:
                out.append(NO_GEOMETRY)
        return out

    def source_path(self, source: str) -> str:
        """A reference's stored ``source`` as a usable path: relative ones live inside the bundle."""
        if not source or Path(source).is_absolute():
            return source
        return str(self.bundle.path / source)

    def reference_path(self, reference_id: str) -> Path | None:
        """Where a reference's image lives: stored inside the bundle, or its original path."""
        src = self._sources.get(reference_id)
        if not src:
            return None
        p = Path(self.source_path(src))
        return p if p.is_file() else None

    def check(self, sources: Sequence[bytes | str | os.PathLike[str]]) -> list[Verdict]:
        """Judge images given as paths or bytes. Never raises for a bad image."""
        items: list[PreparedImage | ImageDecodeError] = []
        for s in sources:
            try:
                items.append(self.prepare(s))
            except ImageDecodeError as exc:
                items.append(exc)
        return self.judge(items, sources)

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
        return d


def bundle_dir(path: str | os.PathLike[str] | None) -> Path:
    return Path(path) if path is not None else default_bundle_path()
