"""DISC21 predictions from a bundle: the engine behind ``brandguard eval`` and the benchmarks.

References are embedded whole (they are the clean, registered images); queries go through the
same region search as the scanner (``--regions grid`` adds the multi-scale crops), so the
benchmark measures what production does.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brandguard.errors import ImageDecodeError
from brandguard.evaluation.metrics import Prediction
from brandguard.inputs import folder_kinds, list_images
from brandguard.index.store import ReferenceIndex, ReferenceRecord
from brandguard.vision.local import describe_reference
from brandguard.engine.pipeline import Pipeline, local_spec_of
from brandguard.vision.prepare import PreparedImage


@dataclass
class PredictionRun:
    predictions: list[Prediction]
    query_ids: list[str]
    n_references: int
    unreadable_queries: list[str] = field(default_factory=list)
    unreadable_references: list[str] = field(default_factory=list)


def predict(pipe: Pipeline, references: Path, queries: Path, k: int = 10, batch: int = 64,
            verify_top: int = 0) -> PredictionRun:
    """Top-``k`` (query, reference, score) per query against an exact scratch index of ``references``.

    The bundle's own index is never touched; brand = first folder of a reference id.
    ``verify_top`` > 0 checks the best hits with local features, as the verdict step does: a
    geometrically verified reference (>= the calibration's ``min_inliers``) is scored
    1 + inliers/1000, above any cosine similarity, so the ranking reflects the copy decision.
    """
    refs, qs = list_images(references), list_images(queries)
    kinds = folder_kinds(references)
    rvec, rerr = pipe.embed_sources([str(p) for _, p in refs])
    deep = pipe.depth.depth != "fast" and pipe.extractor is not None
    local = [None] * len(refs)
    if deep:
        for i, (_, p) in enumerate(refs):
            if rerr[i] is None:
                try:
                    local[i] = describe_reference(pipe.extractor, str(p), pipe.local_config, pipe.limits)
                except ImageDecodeError as exc:
                    rerr[i] = exc
    ok = [i for i, e in enumerate(rerr) if e is None]
    run = PredictionRun([], [q for q, _ in qs], len(ok),
                        unreadable_references=[refs[i][0] for i, e in enumerate(rerr) if e is not None])
    saved = pipe.index
    with tempfile.TemporaryDirectory() as tmp:
        pipe.index = ReferenceIndex.build(tmp, pipe.card, rvec[ok],
                                          [ReferenceRecord(refs[i][0], refs[i][0].split("/")[0],
                                                           kind=kinds.get(refs[i][0], ""), source=str(refs[i][1].resolve()))
                                           for i in ok],
                                          factory="IDMap2,Flat", threads=pipe.embedder.info.threads,
                                          local=[local[i] for i in ok] if deep else None,
                                          local_spec=local_spec_of(pipe.card.local_features) if deep else None)
        top_k, pipe.top_k = pipe.top_k, k
        try:
            if deep:
                _predict_deep(pipe, qs, batch, run)
                return run
            for start in range(0, len(qs), batch):
                chunk = qs[start:start + batch]
                items: list[tuple[str, PreparedImage]] = []
                for qid, path in chunk:
                    try:
                        items.append((qid, pipe.prepare(str(path))))
                    except ImageDecodeError:
                        run.unreadable_queries.append(qid)
                if not items:
                    continue
                vecs = pipe.embed_crops(np.concatenate([it.crops for _, it in items]))
                paths = dict(chunk)
                for (qid, _), (hits, _ev) in zip(items, pipe.search_merged([it for _, it in items], vecs)):
                    scores = {h.reference_id: h.score for h in hits}
                    if verify_top > 0 and hits:
                        top = [h.reference_id for h in hits[:verify_top]]
                        for rid, g in zip(top, pipe.verify_many(str(paths[qid]), top)):
                            if g.inliers >= pipe.calibration.min_inliers:
                                scores[rid] = 1.0 + min(g.inliers, 999) / 1000.0
                    run.predictions.extend(Prediction(qid, rid, sc) for rid, sc in scores.items())
        finally:
            pipe.index.close()
            pipe.index, pipe.top_k = saved, top_k
    return run


def _predict_deep(pipe: Pipeline, qs: list[tuple[str, Path]], batch: int, run: PredictionRun) -> None:
    """Thorough/auto predictions: the verdict step's own fused candidates, as the scanner judges.

    Each query is prepared the way the scanner's workers prepare it (with keypoints in
    thorough depth), judged by ``Pipeline.judge`` with its depth, and every candidate of the
    verdict becomes a prediction scored by its fused probability.
    """
    for start in range(0, len(qs), batch):
        chunk = qs[start:start + batch]
        items, paths = [], []
        for qid, path in chunk:
            try:
                items.append((qid, pipe.prepare(str(path), local=pipe.depth.depth == "thorough")))
                paths.append(str(path))
            except ImageDecodeError:
                run.unreadable_queries.append(qid)
        if not items:
            continue
        verdicts = pipe.judge([it for _, it in items], paths)
        for (qid, _), v in zip(items, verdicts):
            run.predictions.extend(Prediction(qid, h.reference_id, h.score) for h in v.top)
