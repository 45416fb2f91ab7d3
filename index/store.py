"""The reference index: FAISS vectors + SQLite metadata + a manifest that ties them to a model.

Files, all inside a bundle folder next to ``model.onnx``:

- ``index.faiss``      the serialised FAISS index (ids = SQLite row ids, via an ID map)
- ``references.sqlite`` one row per reference: id, reference_id, brand, sku, kind, source, added_at
- ``index.json``       factory string, metric, dimension, model sha256, vector count, index sha256

Every file is written to a temporary name and renamed into place, manifest last, and loading
cross-checks all three (checksum, count, dimension), so a torn write is detected, never served.
Loading also refuses an index built with another model: wrong answers are worse than an error.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

from brandguard.errors import InputError, ModelMismatchError, ReferenceIndexError
from brandguard.vision.bundle import ModelCard, atomic_write_bytes, sha256_file

INDEX_FILE = "index.faiss"
META_FILE = "references.sqlite"
MANIFEST_FILE = "index.json"
MANIFEST_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS refs (
    id INTEGER PRIMARY KEY,
    reference_id TEXT NOT NULL UNIQUE,
    brand TEXT NOT NULL,
    sku TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',
    added_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS refs_brand ON refs(brand);
"""


def choose_factory(n_vectors: int) -> str:
    """Declarative FAISS factory string for an index of ``n_vectors`` references.

    Exact inner product below 100k (a few ms per query at that size); IVF with a flat
    residual up to a few million (supports removal, unlike HNSW); IVF-PQ with OPQ beyond,
    where memory per vector matters more than the last point of recall.
    """
    if n_vectors < 100_000:
        return "IDMap2,Flat"
    if n_vectors < 3_000_000:
        nlist = 1 << max(10, int(round(math.log2(4 * math.sqrt(n_vectors)))))
        return f"IDMap2,IVF{nlist},Flat"
    return "IDMap2,OPQ32,IVF65536,PQ32"


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
    """One search hit: the reference and its cosine similarity to the query."""

    reference_id: str
    brand: str
    sku: str
    kind: str
    source: str
    score: float


@dataclass(frozen=True)
class IndexManifest:
    factory: str
    metric: str
    dim: int
    model_sha256: str
    count: int
    index_sha256: str
    created_at: float
    version: int = MANIFEST_VERSION


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


class ReferenceIndex:
    """Search and maintain the references of one bundle. Open with :meth:`load` or :meth:`build`."""

    def __init__(self, folder: Path, index: faiss.Index, manifest: IndexManifest, db: sqlite3.Connection):
        self.folder = folder
        self._index = index
        self.manifest = manifest
        self._db = db

    # ---------------------------------------------------------------- construction
    @classmethod
    def build(
        cls,
        folder: str | os.PathLike[str],
        card: ModelCard,
        vectors: np.ndarray,
        records: Sequence[ReferenceRecord],
        factory: str | None = None,
        threads: int = 1,
    ) -> "ReferenceIndex":
        """Create a fresh index in ``folder`` (replacing any previous one atomically)."""
        faiss.omp_set_num_threads(threads)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        vecs = as_vectors(vectors, card.embedding_dim)
        if len(records) != vecs.shape[0]:
            raise InputError(f"{len(records)} records for {vecs.shape[0]} vectors")
        ids = [r.reference_id for r in records]
        if len(set(ids)) != len(ids):
            raise InputError("reference ids must be unique")
        factory = factory or choose_factory(len(records))
        index = faiss.index_factory(card.embedding_dim, factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            if vecs.shape[0] < 40:
                raise InputError(f"factory {factory!r} needs training data; {vecs.shape[0]} vectors is too few")
            index.train(vecs)

        # Metadata goes to a new database file that replaces the old one by rename.
        tmp_db = folder / f".{META_FILE}.building"
        if tmp_db.exists():
            tmp_db.unlink()
        db = sqlite3.connect(tmp_db)
        db.executescript(_SCHEMA)
        now = time.time()
        db.executemany(
            "INSERT INTO refs (id, reference_id, brand, sku, kind, source, added_at) VALUES (?,?,?,?,?,?,?)",
            [(i, r.reference_id, r.brand, r.sku, r.kind, r.source, now) for i, r in enumerate(records)],
        )
        db.commit()
        db.close()
        index.add_with_ids(vecs, np.arange(len(records), dtype=np.int64))
        obj = cls(folder, index, IndexManifest(factory, "inner_product", card.embedding_dim, card.sha256,
                                               len(records), "", now), None)  # type: ignore[arg-type]
        obj._write_index_and_manifest(tmp_db)
        obj._db = _connect(folder / META_FILE)
        return obj

    @classmethod
    def load(cls, folder: str | os.PathLike[str], card: ModelCard, threads: int = 1) -> "ReferenceIndex":
        """Open an index, verifying checksum, dimension, count and the model it was built with."""
        faiss.omp_set_num_threads(threads)
        folder = Path(folder)
        mpath = folder / MANIFEST_FILE
        if not mpath.is_file():
            raise ReferenceIndexError(f"{folder} has no {MANIFEST_FILE}: build it with `brandguard index`")
        try:
            manifest = IndexManifest(**json.loads(mpath.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
            raise ReferenceIndexError(f"{mpath} is not a valid index manifest: {exc}") from exc
        if manifest.version != MANIFEST_VERSION:
            raise ReferenceIndexError(f"index manifest version {manifest.version} unsupported")
        if manifest.model_sha256 != card.sha256:
            raise ModelMismatchError(
                f"index in {folder} was built with model {manifest.model_sha256[:12]}…, "
                f"but the bundle's model is {card.sha256[:12]}…: rebuild the index with `brandguard index`"
            )
        if manifest.dim != card.embedding_dim:
            raise ModelMismatchError(f"index dimension {manifest.dim} != model embedding_dim {card.embedding_dim}")
        ipath = folder / INDEX_FILE
        if not ipath.is_file():
            raise ReferenceIndexError(f"{ipath} is missing")
        actual = sha256_file(ipath)
        if actual != manifest.index_sha256:
            raise ReferenceIndexError(f"{ipath} checksum {actual[:12]}… != manifest {manifest.index_sha256[:12]}…: "
                                      "the file is corrupted or was replaced")
        index = faiss.read_index(str(ipath))
        if index.d != manifest.dim or index.ntotal != manifest.count:
            raise ReferenceIndexError(f"index holds {index.ntotal} x {index.d}, manifest says "
                                      f"{manifest.count} x {manifest.dim}")
        db = _connect(folder / META_FILE)
        (n_rows,) = db.execute("SELECT COUNT(*) FROM refs").fetchone()
        if n_rows != manifest.count:
            db.close()
            raise ReferenceIndexError(f"metadata has {n_rows} references, index has {manifest.count}")
        return cls(folder, index, manifest, db)

    # ---------------------------------------------------------------- queries
    def __len__(self) -> int:
        return int(self._index.ntotal)

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[Match]]:
        """Top-``k`` references per query row, best first (cosine similarity)."""
        q = as_vectors(queries, self.manifest.dim)
        if len(self) == 0 or q.shape[0] == 0:
            return [[] for _ in range(q.shape[0])]
        k = max(1, min(k, len(self)))
        scores, ids = self._index.search(q, k)
        wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
        meta = self._records_by_id(wanted)
        out: list[list[Match]] = []
        for row_s, row_i in zip(scores, ids):
            hits = []
            for s, i in zip(row_s, row_i):
                if i < 0 or int(i) not in meta:
                    continue
                r = meta[int(i)]
                hits.append(Match(r.reference_id, r.brand, r.sku, r.kind, r.source, float(s)))
            out.append(hits)
        return out

    def records(self) -> list[ReferenceRecord]:
        rows = self._db.execute("SELECT reference_id, brand, sku, kind, source FROM refs ORDER BY id").fetchall()
        return [ReferenceRecord(*r) for r in rows]

    def brands(self) -> list[str]:
        return [b for (b,) in self._db.execute("SELECT DISTINCT brand FROM refs ORDER BY brand")]

    def _records_by_id(self, ids: list[int]) -> dict[int, ReferenceRecord]:
        out: dict[int, ReferenceRecord] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            q = f"SELECT id, reference_id, brand, sku, kind, source FROM refs WHERE id IN ({','.join('?' * len(chunk))})"
            for row in self._db.execute(q, chunk):
                out[row[0]] = ReferenceRecord(*row[1:])
        return out

    # ---------------------------------------------------------------- persistence
    def _write_index_and_manifest(self, new_db: Path | None = None) -> None:
        """Persist index, then metadata, then the manifest that vouches for both."""
        data = faiss.serialize_index(self._index).tobytes()
        tmp_index = self.folder / f".{INDEX_FILE}.new"
        atomic_write_bytes(tmp_index, data)
        if new_db is not None:
            os.replace(new_db, self.folder / META_FILE)
        os.replace(tmp_index, self.folder / INDEX_FILE)
        m = asdict(self.manifest)
        m.update(count=int(self._index.ntotal), index_sha256=sha256_file(self.folder / INDEX_FILE))
        self.manifest = IndexManifest(**m)
        atomic_write_bytes(self.folder / MANIFEST_FILE,
                           (json.dumps(asdict(self.manifest), indent=2, sort_keys=True) + "\n").encode())

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def _connect(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise ReferenceIndexError(f"{path} is missing")
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    return db
