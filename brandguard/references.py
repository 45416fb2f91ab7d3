"""Registering brand reference images: embed, store a copy inside the bundle, index.

The bundle keeps its own copy of every reference image (``references/<sha[:2]>/<sha>.<ext>``)
so evidence and reports still show the matched reference after the bundle is moved to a
server, and so the service can add references without a shared file system.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from brandguard.inputs import ReferenceRow
from brandguard.errors import ImageDecodeError, InputError
from brandguard.index.store import ReferenceIndex, ReferenceRecord
from brandguard.artifacts import sha256_file
from brandguard.vision.bundle import CARD_FILE, MODEL_FILE, Bundle
from brandguard.engine.background import META_FILE as BACKGROUND_META
from brandguard.engine.background import VECTORS_FILE as BACKGROUND_VECTORS
from brandguard.engine.decide import CALIBRATION_FILE
from brandguard.vision.local import describe_reference
from brandguard.engine.pipeline import Pipeline, local_spec_of

STORE_DIR = "references"


@dataclass
class IndexReport:
    indexed: int = 0
    brands: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (reference_id, reason)
    factory: str = ""
    generation: int = 0
    rebuilt: bool = False


def new_bundle_from(model_bundle: Bundle, out: Path) -> Path:
    """Copy a model (and its card) into ``out`` so ``out`` can become an indexed bundle."""
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != model_bundle.path.resolve():
        for name in (MODEL_FILE, CARD_FILE):
            shutil.copyfile(model_bundle.path / name, out / name)
        # The model's global thresholds and score background travel with it (both belong to it).
        for name in (CALIBRATION_FILE, BACKGROUND_VECTORS, BACKGROUND_META):
            if (model_bundle.path / name).is_file():
                shutil.copyfile(model_bundle.path / name, out / name)
    return out


def store_image(bundle_dir: Path, path: str) -> str:
    """Copy a reference image into the bundle's store; returns its path relative to the bundle."""
    src = Path(path)
    digest = sha256_file(src)
    rel = Path(STORE_DIR) / digest[:2] / f"{digest}{src.suffix.lower()}"
    dest = bundle_dir / rel
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(dest.suffix + ".tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dest)
    return rel.as_posix()


def _embed_rows(pipe: Pipeline, rows: Sequence[ReferenceRow], report: IndexReport):
    """Embeddings, records and (when the bundle has a local stage) keypoints of the readable rows."""
    vecs, errors = pipe.embed_sources([r.path for r in rows])
    keep, records, local = [], [], []
    for i, (r, e) in enumerate(zip(rows, errors)):
        if e is None and pipe.extractor is not None:
            try:
                local.append(describe_reference(pipe.extractor, r.path, pipe.local_config, pipe.limits))
            except ImageDecodeError as exc:
                e = exc
        if e is not None:
            report.skipped.append((r.reference_id, e.reason))
            continue
        keep.append(i)
        records.append(ReferenceRecord(r.reference_id, r.brand, r.sku, r.kind, store_image(pipe.bundle.path, r.path)))
    return vecs[keep], records, (local if pipe.extractor is not None else None)


def build_index(pipe: Pipeline, rows: Sequence[ReferenceRow], factory: str | None = None,
                threads: int = 1) -> tuple[ReferenceIndex, IndexReport]:
    """Embed ``rows`` and (re)build the bundle's index from them."""
    if not rows:
        raise InputError("no reference images to index")
    report = IndexReport()
    vecs, records, local = _embed_rows(pipe, rows, report)
    if not records:
        raise InputError("none of the reference images could be decoded")
    index = ReferenceIndex.build(pipe.bundle.path, pipe.card, vecs, records, factory=factory, threads=threads,
                                 local=local, local_spec=local_spec_of(pipe.card.local_features))
    pipe.index = index
    report.indexed, report.brands = len(index), len(index.brands())
    report.factory, report.generation = index.manifest.factory, index.generation
    return index, report


def add_references(pipe: Pipeline, rows: Sequence[ReferenceRow]) -> IndexReport:
    """Embed and add references to the bundle's existing index (one new generation)."""
    if pipe.index is None:
        raise InputError("the bundle has no index yet: build one first")
    report = IndexReport()
    vecs, records, local = _embed_rows(pipe, rows, report)
    if records:
        report.generation = pipe.index.add(vecs, records, local=local if pipe.index.local is not None else None)
        if pipe.index.needs_rebuild():  # grown past what its factory is good for: re-choose by size
            pipe.index = pipe.index.rebuilt(pipe.card, threads=pipe.embedder.info.threads)
            report.generation = pipe.index.generation
            report.rebuilt = True
    report.indexed, report.brands = len(records), len({r.brand for r in records})
    report.factory = pipe.index.manifest.factory
    return report
