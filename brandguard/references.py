"""Registering brand reference images: embed, store a copy inside the bundle, index.

The bundle keeps its own copy of every reference image (``references/<sha[:2]>/<sha>.<ext>``)
so evidence and reports still show the matched reference after the bundle is moved to a
server, and so the service can add references without a shared file system.

A reference submitted through :func:`submit_reference` is screened first: one that another
brand's registered reference matches at copy level is held for an admin (``quarantine.py``)
instead of going live, so no brand can take over another's detections.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from brandguard.inputs import ReferenceRow
from brandguard.errors import ImageDecodeError, InputError
from brandguard.index.store import ReferenceIndex, ReferenceRecord
from brandguard.artifacts import file_lock, sha256_file
from brandguard.vision.bundle import CARD_FILE, MODEL_FILE, Bundle
from brandguard.engine.background import META_FILE as BACKGROUND_META
from brandguard.engine.background import VECTORS_FILE as BACKGROUND_VECTORS
from brandguard.engine.decide import CALIBRATION_FILE
from brandguard.vision.local import describe_reference
from brandguard.engine.pipeline import Pipeline, local_spec_of
from brandguard.engine.routing import DepthOptions
from brandguard.quarantine import Conflict, HeldReference, Quarantine

STORE_DIR = "references"
INCOMING_DIR = ".incoming"  # uploads being registered (service); anything left here is from a crash
LOCK_FILE = ".references.lock"
log = logging.getLogger("brandguard.references")


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
                threads: int = 1, vocabulary: dict[str, dict[str, list[str]]] | None = None
                ) -> tuple[ReferenceIndex, IndexReport]:
    """Embed ``rows`` and (re)build the bundle's index from them; ``vocabulary`` (what the brands
    are called: ``brandguard.engine.textmarks.parse_vocabulary``) is committed with it."""
    if not rows:
        raise InputError("no reference images to index")
    report = IndexReport()
    vecs, records, local = _embed_rows(pipe, rows, report)
    if not records:
        raise InputError("none of the reference images could be decoded")
    index = ReferenceIndex.build(pipe.bundle.path, pipe.card, vecs, records, factory=factory, threads=threads,
                                 local=local, local_spec=local_spec_of(pipe.card.local_features),
                                 vocabulary=vocabulary)
    pipe.index = index
    report.indexed, report.brands = len(index), len(index.brands())
    report.factory, report.generation = index.manifest.factory, index.generation
    return index, report


def add_references(pipe: Pipeline, rows: Sequence[ReferenceRow],
                   vocabulary: dict[str, dict[str, list[str]]] | None = None) -> IndexReport:
    """Embed and add references to the bundle's existing index (one new generation, with the
    ``vocabulary`` entries of their brands, when given)."""
    if pipe.index is None:
        raise InputError("the bundle has no index yet: build one first")
    report = IndexReport()
    vecs, records, local = _embed_rows(pipe, rows, report)
    if records:
        report.generation = pipe.index.add(vecs, records, local=local if pipe.index.local is not None else None,
                                           vocabulary=vocabulary)
    elif vocabulary:
        report.generation = pipe.index.set_vocabulary(vocabulary)
        if pipe.index.needs_rebuild():  # grown past what its factory is good for: re-choose by size
            pipe.index = pipe.index.rebuilt(pipe.card, threads=pipe.embedder.info.threads)
            report.generation = pipe.index.generation
            report.rebuilt = True
    report.indexed, report.brands = len(records), len({r.brand for r in records})
    report.factory = pipe.index.manifest.factory
    return report


# ------------------------------------------------------------------ locking and leftovers
def bundle_lock(bundle_dir: str | os.PathLike[str], exclusive: bool):  # noqa: ANN201 - context manager
    """Cross-process lock on a bundle's references: one writer at a time (index changes, the
    leftover cleaner); readers (an index reload) take it shared."""
    return file_lock(Path(bundle_dir) / LOCK_FILE, exclusive)


@dataclass
class CleanupReport:
    """What :func:`clean_leftovers` removed, by kind (all logged)."""

    incoming: int = 0
    partial_images: int = 0
    orphan_images: int = 0
    temp_files: int = 0

    @property
    def total(self) -> int:
        return self.incoming + self.partial_images + self.orphan_images + self.temp_files


def clean_leftovers(pipe: Pipeline, quarantine: Quarantine | None = None) -> CleanupReport:
    """Remove what a writer killed mid-change leaves behind; call with no writer running
    (the service does at start, under the exclusive bundle lock).

    - uploads in ``references/.incoming/`` (the registration never committed);
    - half-copied stored images (``*.tmp``) and stored images no index row (of any generation)
      and no pending held reference points to;
    - temporary files of atomic writes (``.<name>.*.tmp``) and index generations that never
      committed (the index's own recovery).
    Nothing a committed generation or a pending decision needs is touched.
    """
    report = CleanupReport()
    bundle = pipe.bundle.path
    store = bundle / STORE_DIR
    for p in sorted((store / INCOMING_DIR).glob("*")) if (store / INCOMING_DIR).is_dir() else []:
        if p.is_file():
            p.unlink()
            report.incoming += 1
    for p in sorted(bundle.glob(".*.tmp")):
        if p.is_file():
            p.unlink()
            report.temp_files += 1
    needed: set[str] = set()
    if pipe.index is not None:
        pipe.index.discard_unfinished()
        needed |= pipe.index.sources()
    if quarantine is not None:
        needed |= quarantine.pending_sources()
    for p in _stored_images(store):
        rel = p.relative_to(bundle).as_posix()
        if p.name.endswith(".tmp"):
            p.unlink()
            report.partial_images += 1
        elif rel not in needed:
            p.unlink()
            report.orphan_images += 1
    if report.total:
        log.warning("removed leftovers of an interrupted change", extra={
            "incoming": report.incoming, "partial_images": report.partial_images,
            "orphan_images": report.orphan_images, "temp_files": report.temp_files})
    return report


def _stored_images(store: Path) -> Iterator[Path]:
    """Files in the store's two-hex-digit shards (the only place ``store_image`` writes)."""
    if not store.is_dir():
        return
    for shard in sorted(store.iterdir()):
        if shard.is_dir() and len(shard.name) == 2 and all(c in "0123456789abcdef" for c in shard.name):
            yield from sorted(p for p in shard.iterdir() if p.is_file())


# ------------------------------------------------------------------ screening and the hold
@dataclass(frozen=True)
class Submission:
    """What became of a submitted reference: ``live`` (indexed, ``generation``) or ``held``."""

    status: str
    reference_id: str
    brand: str
    generation: int | None = None
    held: HeldReference | None = None


def screen_reference(pipe: Pipeline, source: str | os.PathLike[str] | bytes, brand: str) -> list[Conflict]:
    """Other brands' registered references that ``source`` matches at copy level.

    Each other brand among the candidates is checked in its own scope (its references only),
    so references the submitting brand already has cannot hide a conflict."""
    if pipe.index is None or len(pipe.index) == 0:
        return []
    depth = DepthOptions("thorough" if pipe.has_local_stage() else "fast")
    (first,) = pipe.check([source], depth=depth)
    if first.verdict == "inconclusive":
        return []  # registering it fails on the same decode error
    others = [b for b in dict.fromkeys([first.brand or "", *(h.brand for h in first.top)]) if b and b != brand]
    conflicts = []
    for other in others:
        (v,) = pipe.check([source], depth=depth, brand=other)
        if v.verdict == "copy" and v.brand == other:
            conflicts.append(Conflict(v.top[0].reference_id if v.top else "", other, v.verdict, v.score))
    return conflicts


def submit_reference(pipe: Pipeline, quarantine: Quarantine, row: ReferenceRow, actor: str) -> Submission:
    """Register one reference, or hold it for an admin when it copies another brand's reference.

    The caller holds the exclusive bundle lock. Audited either way."""
    if pipe.index is None:
        raise InputError("the bundle has no index yet: build one first")
    if pipe.index.record(row.reference_id) is not None:
        raise InputError(f"reference {row.reference_id!r} already exists; delete it first")
    conflicts = screen_reference(pipe, row.path, row.brand)
    if conflicts:
        rel = store_image(pipe.bundle.path, row.path)
        held = quarantine.hold(row.reference_id, row.brand, row.sku, row.kind, rel,
                               sha256_file(row.path), conflicts, actor)
        log.warning("reference held for review", extra={"reference_id": row.reference_id, "brand": row.brand,
                                                         "conflicts": [c.brand for c in conflicts]})
        return Submission("held", row.reference_id, row.brand, held=held)
    report = add_references(pipe, [row])
    if report.skipped:
        raise InputError(f"the reference image cannot be used: {report.skipped[0][1]}")
    quarantine.audit(actor, "add", row.reference_id, row.brand, {"generation": report.generation})
    return Submission("live", row.reference_id, row.brand, generation=report.generation)


def decide_held(pipe: Pipeline, quarantine: Quarantine, held_id: str, approve: bool, actor: str,
                note: str = "") -> tuple[HeldReference, int | None]:
    """An admin's decision: an approved reference is indexed (one generation), a rejected one's
    stored image is removed unless something else uses it. The caller holds the bundle lock."""
    held = quarantine.get(held_id)
    if held.status != "pending":
        raise InputError(f"held reference {held_id!r} was already {held.status}")
    generation = None
    if approve:
        live = pipe.index.record(held.reference_id)
        if live is None:  # (a crash after indexing and before the decision leaves it live already)
            report = add_references(pipe, [ReferenceRow(held.reference_id, held.brand, pipe.source_path(held.source),
                                                         held.sku, held.kind)])
            if report.skipped:
                raise InputError(f"the held image cannot be used: {report.skipped[0][1]}")
            generation = report.generation
    decided = quarantine.decide(held_id, approve, actor, note)
    if not approve and held.source not in pipe.index.sources() | quarantine.pending_sources():
        Path(pipe.source_path(held.source)).unlink(missing_ok=True)
    return decided, generation


def remove_reference(pipe: Pipeline, quarantine: Quarantine, reference_id: str, actor: str) -> int:
    """Remove one reference (one generation), audited. The caller holds the bundle lock."""
    rec = pipe.index.record(reference_id) if pipe.index is not None else None
    if rec is None:
        raise InputError(f"reference {reference_id!r} is not in the index")
    generation = pipe.index.remove([reference_id])
    quarantine.audit(actor, "remove", reference_id, rec.brand, {"generation": generation})
    return generation
