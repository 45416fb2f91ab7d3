"""The reference index: FAISS vectors + SQLite metadata + a manifest that ties them to a model.

Files, all inside a bundle folder next to ``model.onnx``:

- ``index-<gen>.faiss``       the serialised FAISS index (ids = SQLite row ids, via an ID map)
- ``references-<build>.sqlite`` one row per reference ever added, with the generations in which
                              it was added and removed
- ``index.json``              the manifest: factory string, metric, dimension, model sha256,
                              current generation, file names, vector count, index sha256
- ``local-<gen>.faiss/.npz``  optional: every reference's local descriptors and keypoints
                              (``index/local_store.py``), committed in the same generation
- ``vocabulary-<gen>.json``   optional: what each brand is called (names, aliases, Chinese
                              names: plain strings), for the text stage; same generation

Durability: every change is a new *generation*. Metadata rows are committed first, tagged with
the new generation; then the FAISS file of that generation is written (temporary name, fsync,
rename); then the manifest is atomically replaced, which is the commit point. A crash anywhere
before that leaves the previous manifest pointing at the previous, intact FAISS file, and rows
of the unfinished generation are invisible (and cleaned up by the next write). Loading
re-hashes the FAISS file, cross-checks counts and refuses an index built with another model.
One writer at a time per folder (the service serialises its writes).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol, Sequence

import faiss
import numpy as np

from brandguard.artifacts import atomic_write_bytes, sha256_file
from brandguard.errors import InputError, ModelMismatchError, ReferenceIndexError
from brandguard.index.manifest import (MANIFEST_FILE, IndexManifest, LocalSpec,
                                       check_vocabulary, files_of, load_local, load_vocabulary, read_manifest)
from brandguard.index.factories import (choose_descriptor_factory, choose_factory, search_params,
                                        tune_search)
from brandguard.index.local_store import KeypointSet, LocalIndex


class ModelIdentity(Protocol):
    """All the index needs to know of a model: its hash (to refuse another model's queries)
    and its embedding width. A bundle's ``ModelCard`` satisfies it; the index never imports
    the vision layer."""

    @property
    def sha256(self) -> str: ...

    @property
    def embedding_dim(self) -> int: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS refs (
    id INTEGER PRIMARY KEY,
    reference_id TEXT NOT NULL,
    brand TEXT NOT NULL,
    sku TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',
    added_at REAL NOT NULL,
    added_gen INTEGER NOT NULL,
    removed_gen INTEGER
);
CREATE INDEX IF NOT EXISTS refs_brand ON refs(brand);
CREATE INDEX IF NOT EXISTS refs_rid ON refs(reference_id);
"""
_VISIBLE = "added_gen <= ? AND (removed_gen IS NULL OR removed_gen > ?)"


@dataclass(frozen=True)
class ReferenceRecord:
    """Metadata of one registered reference image."""

    reference_id: str
    brand: str
    sku: str = ""
    kind: str = ""
    source: str = ""


@dataclass(frozen=True)
class Match:
    """One search hit: the reference's record and its cosine similarity to the query."""

    record: ReferenceRecord
    score: float

    @property
    def reference_id(self) -> str:
        return self.record.reference_id

    @property
    def brand(self) -> str:
        return self.record.brand


def as_vectors(x: np.ndarray, dim: int) -> np.ndarray:
    """Normalise an array at the boundary: 2-D, contiguous float32, right width, finite."""
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InputError(f"vectors must be N x {dim}, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InputError("vectors contain NaN or infinity")
    return arr


def _check_records(records: Sequence[ReferenceRecord], n: int) -> None:
    if len(records) != n:
        raise InputError(f"{len(records)} records for {n} vectors")
    ids = [r.reference_id for r in records]
    if len(set(ids)) != len(ids):
        raise InputError("reference ids must be unique")
    for r in records:
        if not r.reference_id or not r.brand:
            raise InputError(f"a reference needs an id and a brand: {r}")


class ReferenceIndex:
    """Search and maintain the references of one bundle. Open with :meth:`load` or :meth:`build`."""

    def __init__(self, folder: Path, index: faiss.Index, manifest: IndexManifest, db: sqlite3.Connection,
                 local: LocalIndex | None = None, vocabulary: dict[str, dict[str, list[str]]] | None = None):
        self.folder = folder
        self._index = index
        self.manifest = manifest
        self._db = db
        self.local = local
        self._vocabulary = dict(vocabulary or {})
        # per (generation, brand): row ids and the FAISS selector over them (brand-scoped checks)
        self._brand_rows: dict[tuple[int, str], np.ndarray] = {}
        self._selectors: dict[tuple[int, str], faiss.IDSelector] = {}

    # ---------------------------------------------------------------- construction
    @classmethod
    def build(
        cls,
        folder: str | os.PathLike[str],
        card: ModelIdentity,
        vectors: np.ndarray,
        records: Sequence[ReferenceRecord],
        factory: str | None = None,
        threads: int = 1,
        local: Sequence[KeypointSet] | None = None,
        local_spec: LocalSpec | None = None,
        local_factory: str | None = None,
        vocabulary: dict[str, dict[str, list[str]]] | None = None,
    ) -> "ReferenceIndex":
        """Create a fresh index in ``folder``; a previous index stays valid until the new one commits.

        With ``local`` (one keypoint set per record) and its ``local_spec``, the descriptor index
        is built beside the global one and committed with it; ``vocabulary`` (what the brands are
        called, see :func:`check_vocabulary`) is committed with them too."""
        vocabulary = check_vocabulary(vocabulary) if vocabulary else None
        faiss.omp_set_num_threads(threads)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        vecs = as_vectors(vectors, card.embedding_dim)
        _check_records(records, vecs.shape[0])
        factory = factory or choose_factory(len(records))
        index = faiss.index_factory(card.embedding_dim, factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            if vecs.shape[0] < 40:
                raise InputError(f"factory {factory!r} needs training data; {vecs.shape[0]} vectors is too few")
            index.train(vecs)
        index.add_with_ids(vecs, np.arange(len(records), dtype=np.int64))
        tune_search(index)

        db_file = f"references-{uuid.uuid4().hex[:12]}.sqlite"
        db = sqlite3.connect(folder / db_file, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        now = time.time()
        with db:
            db.executemany(
                "INSERT INTO refs (id, reference_id, brand, sku, kind, source, added_at, added_gen) "
                "VALUES (?,?,?,?,?,?,?,1)",
                [(i, r.reference_id, r.brand, r.sku, r.kind, r.source, now) for i, r in enumerate(records)])
        old = read_manifest(folder) if (folder / MANIFEST_FILE).is_file() else None
        local_index = None
        if local is not None:
            if local_spec is None or len(local) != len(records):
                raise InputError("local features need a spec and one keypoint set per reference")
            n_desc = sum(len(s.descriptors) for s in local)
            local_index = LocalIndex.empty(local_spec.dim, local_factory or choose_descriptor_factory(n_desc))
            local_index.add(list(range(len(records))), local)
        manifest = IndexManifest(factory=factory, metric="inner_product", dim=card.embedding_dim,
                                 model_sha256=card.sha256, generation=1, index_file="", db_file=db_file,
                                 count=0, index_sha256="", created_at=now, updated_at=now,
                                 local=None if local_spec is None else {
                                     "extractor": local_spec.extractor, "dim": local_spec.dim,
                                     "spec_sha256": local_spec.spec_sha256})
        obj = cls(folder, index, manifest, db, local_index, vocabulary)
        obj._commit(manifest)
        if old is not None:  # the new index is committed: the old files can go
            keep = files_of(obj.manifest)
            for name in files_of(old):
                if name not in keep:
                    _unlink_quietly(folder / name)
        return obj

    @classmethod
    def load(cls, folder: str | os.PathLike[str], card: ModelIdentity, threads: int = 1,
             local_spec: LocalSpec | None = None) -> "ReferenceIndex":
        """Open an index, verifying checksum, dimension, count and the model it was built with.

        ``local_spec`` is what the pipeline extracts: a descriptor index built with other local
        features is refused (its descriptors would be compared with incomparable ones)."""
        faiss.omp_set_num_threads(threads)
        folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest.local is not None and local_spec is not None and (
                manifest.local.get("spec_sha256") != local_spec.spec_sha256):
            raise ModelMismatchError(
                f"the descriptor index in {folder} was built with local features {manifest.local.get('extractor')!r} "
                f"({str(manifest.local.get('spec_sha256'))[:12]}…), the bundle extracts {local_spec.extractor!r} "
                f"({local_spec.spec_sha256[:12]}…): rebuild the index with `brandguard index`")
        if manifest.model_sha256 != card.sha256:
            raise ModelMismatchError(
                f"index in {folder} was built with model {manifest.model_sha256[:12]}…, "
                f"but the bundle's model is {card.sha256[:12]}…: rebuild the index with `brandguard index`"
            )
        if manifest.dim != card.embedding_dim:
            raise ModelMismatchError(f"index dimension {manifest.dim} != model embedding_dim {card.embedding_dim}")
        ipath = folder / manifest.index_file
        if not ipath.is_file():
            raise ReferenceIndexError(f"{ipath} is missing")
        actual = sha256_file(ipath)
        if actual != manifest.index_sha256:
            raise ReferenceIndexError(f"{ipath} checksum {actual[:12]}… != manifest {manifest.index_sha256[:12]}…: "
                                      "the file is corrupted or was replaced")
        try:
            index = faiss.read_index(str(ipath))
        except RuntimeError as exc:
            raise ReferenceIndexError(f"FAISS cannot read {ipath}: {exc}") from exc
        tune_search(index)
        if index.d != manifest.dim or index.ntotal != manifest.count:
            raise ReferenceIndexError(f"index holds {index.ntotal} x {index.d}, manifest says "
                                      f"{manifest.count} x {manifest.dim}")
        dpath = folder / manifest.db_file
        if not dpath.is_file():
            raise ReferenceIndexError(f"{dpath} is missing")
        db = sqlite3.connect(dpath, check_same_thread=False)
        try:
            (n_rows,) = db.execute(f"SELECT COUNT(*) FROM refs WHERE {_VISIBLE}",
                                   (manifest.generation, manifest.generation)).fetchone()
        except sqlite3.DatabaseError as exc:
            db.close()
            raise ReferenceIndexError(f"{dpath} is not a valid reference database: {exc}") from exc
        if n_rows != manifest.count:
            db.close()
            raise ReferenceIndexError(f"metadata has {n_rows} references, index has {manifest.count}")
        local = None
        vocabulary = None
        try:
            if manifest.local is not None and manifest.local.get("index_file"):
                local = load_local(folder, manifest.local)
            if manifest.vocabulary:
                vocabulary = load_vocabulary(folder, manifest.vocabulary)
        except ReferenceIndexError:
            db.close()
            raise
        return cls(folder, index, manifest, db, local, vocabulary)

    # ---------------------------------------------------------------- queries
    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def generation(self) -> int:
        return self.manifest.generation

    def search(self, queries: np.ndarray, k: int = 10, brand: str | None = None) -> list[list[Match]]:
        """Top-``k`` references per query row, best first (cosine similarity).

        ``brand`` restricts the search to that brand's references inside FAISS (an ID selector),
        so nothing about other brands' references is computed, not merely hidden afterwards."""
        q = as_vectors(queries, self.manifest.dim)
        rows = self.brand_rows(brand) if brand is not None else None
        total = len(self) if rows is None else len(rows)
        if total == 0 or q.shape[0] == 0:
            return [[] for _ in range(q.shape[0])]
        k = max(1, min(k, total))
        if rows is None:
            scores, ids = self._index.search(q, k)
        else:
            params = search_params(self._index, self._selector(brand, rows))
            scores, ids = self._index.search(q, k, params=params)
        wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
        meta = self._records_by_id(wanted)
        out: list[list[Match]] = []
        for row_s, row_i in zip(scores, ids):
            hits = []
            for s, i in zip(row_s, row_i):
                if i < 0 or int(i) not in meta:
                    continue
                hits.append(Match(meta[int(i)], float(s)))
            out.append(hits)
        return out

    def records_by_rows(self, rows: Sequence[int]) -> dict[int, ReferenceRecord]:
        """Records of FAISS ids (row ids), as the descriptor index reports them."""
        return self._records_by_id(sorted({int(r) for r in rows if r >= 0}))

    def brand_codes(self) -> np.ndarray:
        """Row id -> small integer per brand, -1 for none; the last entry is -1 so that a
        missing neighbour (row -1) maps to -1 too. Cached per generation."""
        cached = getattr(self, "_brand_codes", None)
        if cached is not None and cached[0] == self.generation:
            return cached[1]
        g = self.generation
        rows = self._db.execute(f"SELECT id, brand FROM refs WHERE {_VISIBLE}", (g, g)).fetchall()
        top = max((r for r, _ in rows), default=-1)
        codes = np.full(top + 2, -1, np.int64)
        names: dict[str, int] = {}
        for r, b in rows:
            codes[r] = names.setdefault(b, len(names))
        self._brand_codes = (g, codes)
        return codes

    def brand_rows(self, brand: str) -> np.ndarray:
        """Sorted row ids (FAISS ids) of a brand's live references; cached per generation."""
        cache = self._brand_rows
        key = (self.generation, brand)
        if key not in cache:
            g = self.generation
            if len(cache) > 256:
                cache.clear()
            cache[key] = np.fromiter((r for (r,) in self._db.execute(
                f"SELECT id FROM refs WHERE {_VISIBLE} AND brand = ? ORDER BY id", (g, g, brand))), np.int64)
        return cache[key]

    def kind_rows(self, kind: str) -> np.ndarray:
        """Sorted row ids (FAISS ids) of the live references of one kind (``logo``, ``product``)."""
        return np.fromiter((r for (r,) in self._db.execute(
            f"SELECT id FROM refs WHERE {_VISIBLE} AND kind = ? ORDER BY id",
            (self.generation, self.generation, kind))), np.int64)

    def _selector(self, brand: str, rows: np.ndarray) -> "faiss.IDSelector":
        cache = self._selectors
        key = (self.generation, brand)
        if key not in cache:
            if len(cache) > 256:
                cache.clear()
            cache[key] = faiss.IDSelectorBatch(np.ascontiguousarray(rows))
        return cache[key]

    def sources(self) -> set[str]:
        """Stored image of every row ever added (removed ones too: an older generation may still
        be read while it is replaced), for the leftover cleaner."""
        return {s for (s,) in self._db.execute("SELECT DISTINCT source FROM refs")}

    def record(self, reference_id: str) -> ReferenceRecord | None:
        """The live record of one reference id (None when it is not in this generation)."""
        g = self.generation
        row = self._db.execute(f"SELECT reference_id, brand, sku, kind, source FROM refs WHERE {_VISIBLE} "
                               "AND reference_id = ?", (g, g, reference_id)).fetchone()
        return ReferenceRecord(*row) if row else None

    def records(self, brand: str | None = None) -> list[ReferenceRecord]:
        g = self.generation
        sql = f"SELECT reference_id, brand, sku, kind, source FROM refs WHERE {_VISIBLE}"
        args: tuple = (g, g)
        if brand is not None:
            sql += " AND brand = ?"
            args += (brand,)
        return [ReferenceRecord(*r) for r in self._db.execute(sql + " ORDER BY id", args)]

    def vocabulary(self) -> dict[str, dict[str, list[str]]]:
        """What the brands of this generation are called, as registered (plain strings; a brand
        without an entry is known by its id only). A copy."""
        return {b: {k: list(v) for k, v in e.items()} for b, e in self._vocabulary.items()}

    def set_vocabulary(self, vocabulary: dict[str, dict[str, list[str]]], replace_all: bool = False) -> int:
        """Register what brands are called, in one new generation (vectors unchanged); a brand's
        entry replaces its earlier one (``replace_all``: the whole vocabulary is replaced).
        Returns the new generation."""
        new = check_vocabulary(vocabulary)
        merged = new if replace_all else {**self._vocabulary, **new}
        old = self._vocabulary
        self.discard_unfinished()
        self._vocabulary = merged
        try:
            self._apply(lambda ix: None, self.generation + 1)
        except BaseException:
            self._vocabulary = old
            raise
        return self.generation

    def brands(self) -> list[str]:
        g = self.generation
        return [b for (b,) in self._db.execute(f"SELECT DISTINCT brand FROM refs WHERE {_VISIBLE} ORDER BY brand",
                                               (g, g))]

    def _records_by_id(self, ids: list[int]) -> dict[int, ReferenceRecord]:
        out: dict[int, ReferenceRecord] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            q = f"SELECT id, reference_id, brand, sku, kind, source FROM refs WHERE id IN ({','.join('?' * len(chunk))})"
            for row in self._db.execute(q, chunk):
                out[row[0]] = ReferenceRecord(*row[1:])
        return out

    def _live_ids(self, reference_ids: Sequence[str]) -> dict[str, int]:
        g = self.generation
        out: dict[str, int] = {}
        for start in range(0, len(reference_ids), 500):
            chunk = list(reference_ids[start:start + 500])
            q = (f"SELECT reference_id, id FROM refs WHERE {_VISIBLE} AND reference_id IN "
                 f"({','.join('?' * len(chunk))})")
            out.update(dict(self._db.execute(q, (g, g, *chunk))))
        return out

    # ---------------------------------------------------------------- changes
    def add(self, vectors: np.ndarray, records: Sequence[ReferenceRecord],
            local: Sequence[KeypointSet] | None = None,
            vocabulary: dict[str, dict[str, list[str]]] | None = None) -> int:
        """Add references in one new generation; returns the new generation number.

        An index with a descriptor index needs ``local`` (one keypoint set per record): both
        indexes change in the same generation or neither does. ``vocabulary`` entries replace
        those of the same brands, in the same generation."""
        new_vocab = check_vocabulary(vocabulary) if vocabulary else {}
        vecs = as_vectors(vectors, self.manifest.dim)
        _check_records(records, vecs.shape[0])
        if self.local is not None and (local is None or len(local) != len(records)):
            raise InputError("this index keeps local features: give one keypoint set per new reference")
        clash = self._live_ids([r.reference_id for r in records])
        if clash:
            raise InputError(f"{len(clash)} reference ids already exist, e.g. {sorted(clash)[:3]}; remove them first")
        self.discard_unfinished()
        new_gen = self.generation + 1
        (max_id,) = self._db.execute("SELECT COALESCE(MAX(id), -1) FROM refs").fetchone()
        ids = np.arange(max_id + 1, max_id + 1 + len(records), dtype=np.int64)
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT INTO refs (id, reference_id, brand, sku, kind, source, added_at, added_gen) "
                "VALUES (?,?,?,?,?,?,?,?)",
                [(int(i), r.reference_id, r.brand, r.sku, r.kind, r.source, now, new_gen)
                 for i, r in zip(ids, records)])
        def change(ix: faiss.Index) -> None:
            ix.add_with_ids(vecs, ids)
            if self.local is not None:
                self.local.add([int(i) for i in ids], local)

        old_vocab = self._vocabulary
        self._vocabulary = {**old_vocab, **new_vocab}
        try:
            self._apply(change, new_gen)
        except BaseException:
            self._vocabulary = old_vocab
            raise
        return new_gen

    def remove(self, reference_ids: Sequence[str]) -> int:
        """Remove references by id in one new generation; unknown ids are an error."""
        live = self._live_ids(list(reference_ids))
        missing = set(reference_ids) - set(live)
        if missing:
            raise InputError(f"{len(missing)} reference ids are not in the index, e.g. {sorted(missing)[:3]}")
        self.discard_unfinished()
        new_gen = self.generation + 1
        with self._db:
            self._db.executemany("UPDATE refs SET removed_gen = ? WHERE id = ?",
                                 [(new_gen, i) for i in live.values()])
        ids = np.fromiter(live.values(), dtype=np.int64)

        def change(ix: faiss.Index) -> None:
            ix.remove_ids(ids)
            if self.local is not None:
                self.local.remove([int(i) for i in ids])

        self._apply(change, new_gen)
        return new_gen

    def needs_rebuild(self) -> bool:
        """True when the size rule now picks another factory (e.g. grown past exact search)."""
        if self.local is not None and choose_descriptor_factory(len(self.local)) != self.local.factory:
            return True
        return choose_factory(len(self)) != self.manifest.factory

    def rebuilt(self, card: ModelIdentity, factory: str | None = None, threads: int = 1) -> "ReferenceIndex":
        """A new index over the same live references with ``factory`` (default: the size rule).

        Vectors come back out of the current index (flat and IVF-flat codes are exact), so no
        image is re-embedded; the new index replaces this one atomically, like any build.
        """
        try:
            ivf = faiss.extract_index_ivf(self._index)
            ivf.make_direct_map()
        except RuntimeError:
            pass  # not an IVF index: reconstruct works as is
        g = self.generation
        rows = self._db.execute(f"SELECT id, reference_id, brand, sku, kind, source FROM refs WHERE {_VISIBLE} "
                                "ORDER BY id", (g, g)).fetchall()
        try:
            vecs = np.vstack([self._index.reconstruct(int(r[0])) for r in rows]) if rows else \
                np.zeros((0, self.manifest.dim), np.float32)
        except RuntimeError as exc:
            raise ReferenceIndexError(f"factory {self.manifest.factory!r} cannot give its vectors back; "
                                      "rebuild with `brandguard index` from the images") from exc
        records = [ReferenceRecord(*r[1:]) for r in rows]
        local_sets, spec = None, None
        if self.local is not None:
            local_sets = self.local.keypoint_sets([int(r[0]) for r in rows])
            m = self.manifest.local or {}
            spec = LocalSpec(m.get("extractor", ""), int(m.get("dim", self.local.dim)), m.get("spec_sha256", ""))
        self.close()
        return ReferenceIndex.build(self.folder, card, vecs, records, factory=factory, threads=threads,
                                    local=local_sets, local_spec=spec, vocabulary=self.vocabulary() or None)

    def _apply(self, change, new_gen: int) -> None:
        """Apply ``change`` to the in-memory index and commit it; on failure reload the last commit."""
        old = self.manifest
        try:
            change(self._index)
            self._commit(replace(self.manifest, generation=new_gen, updated_at=time.time()))
        except BaseException:
            self._index = faiss.read_index(str(self.folder / old.index_file))
            tune_search(self._index)
            if old.local is not None and old.local.get("index_file"):
                self.local = load_local(self.folder, old.local)
            raise
        keep = files_of(self.manifest)
        for name in files_of(old):
            if name not in keep:
                _unlink_quietly(self.folder / name)

    def discard_unfinished(self) -> None:
        """Forget rows of generations that never committed (a crash between db and manifest)."""
        g = self.generation
        with self._db:
            self._db.execute("DELETE FROM refs WHERE added_gen > ?", (g,))
            self._db.execute("UPDATE refs SET removed_gen = NULL WHERE removed_gen > ?", (g,))
        keep = files_of(self.manifest)
        for pattern in ("index-*.faiss", ".index-*.tmp", "local-*.faiss", "local-*.npz", ".local-*.tmp",
                        ".index.json.*.tmp", "vocabulary-*.json", ".vocabulary-*.tmp"):
            for stray in self.folder.glob(pattern):
                if stray.name not in keep:
                    _unlink_quietly(stray)

    def _commit(self, manifest: IndexManifest) -> None:
        """Write this generation's FAISS file, then the manifest that vouches for it."""
        index_file = f"index-{manifest.generation:06d}-{uuid.uuid4().hex[:8]}.faiss"
        data = faiss.serialize_index(self._index).tobytes()
        atomic_write_bytes(self.folder / index_file, data)
        manifest = replace(manifest, index_file=index_file, count=int(self._index.ntotal),
                           index_sha256=sha256_file(self.folder / index_file))
        if self.local is not None:
            stem = f"local-{manifest.generation:06d}-{uuid.uuid4().hex[:8]}"
            faiss_bytes, meta_bytes = self.local.to_bytes()
            atomic_write_bytes(self.folder / f"{stem}.faiss", faiss_bytes)
            atomic_write_bytes(self.folder / f"{stem}.npz", meta_bytes)
            manifest = replace(manifest, local={
                **(manifest.local or {}), "dim": self.local.dim, "factory": self.local.factory,
                "index_file": f"{stem}.faiss", "index_sha256": sha256_file(self.folder / f"{stem}.faiss"),
                "meta_file": f"{stem}.npz", "meta_sha256": sha256_file(self.folder / f"{stem}.npz"),
                "count": len(self.local), "references": self.local.references(), "marks": len(self.local.marks)})
        if self._vocabulary:
            name = f"vocabulary-{manifest.generation:06d}-{uuid.uuid4().hex[:8]}.json"
            data = (json.dumps(self._vocabulary, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
            atomic_write_bytes(self.folder / name, data)
            manifest = replace(manifest, vocabulary={"file": name, "sha256": hashlib.sha256(data).hexdigest(),
                                                     "brands": len(self._vocabulary)})
        else:
            manifest = replace(manifest, vocabulary=None)
        atomic_write_bytes(self.folder / MANIFEST_FILE,
                           (json.dumps(asdict(manifest), indent=2, sort_keys=True) + "\n").encode())
        self.manifest = manifest

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
