"""DISC21 predictions from a bundle: the engine behind ``brandguard eval`` and the benchmarks.

References are embedded whole (they are the clean, registered images); queries go through the
same region search as the scanner (``--regions grid`` adds the multi-scale crops), so the
benchmark measures what production does.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from brandguard.errors import ImageDecodeError
from brandguard.evaluation import Prediction, list_images
from brandguard.index.store import ReferenceIndex, ReferenceRecord
from brandguard.vision.pipeline import Pipeline, PreparedImage


@dataclass
class PredictionRun:
    predictions: list[Prediction]
    query_ids: list[str]
    n_references: int
    unreadable_queries: list[str] = field(default_factory=list)
    unreadable_references: list[str] = field(default_factory=list)


def predict(pipe: Pipeline, references: Path, queries: Path, k: int = 10, batch: int = 64) -> PredictionRun:
    """Top-``k`` (query, reference, score) per query against an exact scratch index of ``references``.

    The bundle's own index is never touched; brand = first folder of a reference id.
    """
    refs, qs = list_images(references), list_images(queries)
    rvec, rerr = pipe.embed_sources([str(p) for _, p in refs])
    ok = [i for i, e in enumerate(rerr) if e is None]
    run = PredictionRun([], [q for q, _ in qs], len(ok),
                        unreadable_references=[refs[i][0] for i, e in enumerate(rerr) if e is not None])
    saved = pipe.index
    with tempfile.TemporaryDirectory() as tmp:
        pipe.index = ReferenceIndex.build(tmp, pipe.card, rvec[ok],
                                          [ReferenceRecord(refs[i][0], refs[i][0].split("/")[0]) for i in ok],
                                          factory="IDMap2,Flat")
        top_k, pipe.top_k = pipe.top_k, k
        try:
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
                import numpy as np

                vecs = pipe.embed_crops(np.concatenate([it.crops for _, it in items]))
                for (qid, _), (hits, _ev) in zip(items, pipe.search_merged([it for _, it in items], vecs)):
                    run.predictions.extend(Prediction(qid, h.reference_id, h.score) for h in hits)
        finally:
            pipe.index.close()
            pipe.index, pipe.top_k = saved, top_k
    return run
