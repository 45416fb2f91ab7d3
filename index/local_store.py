"""The descriptor index: every reference's local descriptors in FAISS, with their keypoints.

It lives inside :class:`brandguard.index.store.ReferenceIndex` and is committed with it (same
generation, same manifest, checksummed), so the global and the local index can never disagree
about which references exist. Per descriptor it keeps the reference's row id (the global
index's FAISS id) and the keypoint's position in the reference's original pixels, which is what
geometric verification needs; per reference, the image size (to project its outline).

It also keeps each reference's mark shape where it has one (``vision/shapes.py``: the shape
stage finds flat marks by their outline), as the plain 1-D arrays the shape gives
(``to_arrays()``), so shapes are added, removed and committed with the descriptors; this layer
never interprets them. Two files per generation: ``local-<gen>.faiss`` and ``local-<gen>.npz``
(plain arrays, no pickle; an npz written before shapes existed loads with none). Descriptor ids
are assigned in increasing order and never reused, so the metadata
arrays stay sorted by id and a lookup is a binary search.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Protocol, Sequence

import faiss
import numpy as np

from brandguard.errors import InputError, ReferenceIndexError
from brandguard.index.factories import search_params, tune_descriptor_search

DEFAULT_NEIGHBOURS = 5


class KeypointSet(Protocol):
    """What the index stores of one reference (``vision.local.LocalFeatures`` has this shape;
    an optional ``mark`` attribute with ``to_arrays() -> dict[str, 1-D array]`` is stored too)."""

    points: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]


@dataclass(frozen=True)
class StoredMark:
    """A stored mark shape's arrays, given back as a :class:`KeypointSet`'s ``mark``."""

    arrays: dict

    def to_arrays(self) -> dict:
        return self.arrays


@dataclass(frozen=True)
class StoredKeypoints:
    """A reference's stored keypoint set (a :class:`KeypointSet`), for a rebuild."""

    points: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]
    mark: StoredMark | None = None


@dataclass(frozen=True)
class DescriptorHits:
    """kNN of a batch of query descriptors: squared L2 distances, the reference row of each
    neighbour (-1 = none) and the neighbour keypoint's position in that reference's pixels."""

    distances: np.ndarray  # Q x k float32
    ref_rows: np.ndarray  # Q x k int64
    points: np.ndarray  # Q x k x 2 float32


class LocalIndex:
    """Descriptors of every live reference. Built and changed only through ``ReferenceIndex``."""

    def __init__(self, index: faiss.Index, factory: str, dim: int, ids: np.ndarray, ref_rows: np.ndarray,
                 points: np.ndarray, sizes: dict[int, tuple[int, int]],
                 marks: dict[int, dict[str, np.ndarray]] | None = None):
        self._index = index
        # reference row -> its mark shape's arrays; ``marks_version`` changes with them, so a
        # reader's table built from them knows when it is stale
        self.marks: dict[int, dict[str, np.ndarray]] = dict(marks or {})
        self.marks_version = 0
        self.factory = factory
        self.dim = dim
        self._ids = ids
        self._ref = ref_rows
        self._xy = points
        self.sizes = sizes
        self._counts: dict[int, int] | None = None
        self._selectors: dict[bytes, tuple[faiss.IDSelector, int]] = {}
        tune_descriptor_search(self._index)

    def counts(self) -> dict[int, int]:
        """Descriptors stored per reference row (for the share of a reference that matched)."""
        if self._counts is None:
            rows, n = np.unique(self._ref, return_counts=True)
            self._counts = {int(r): int(c) for r, c in zip(rows, n)}
        return self._counts

    @classmethod
    def empty(cls, dim: int, factory: str) -> "LocalIndex":
        try:
            index = faiss.index_factory(dim, factory, faiss.METRIC_L2)
        except RuntimeError as exc:
            raise InputError(f"bad descriptor index factory {factory!r}: {exc}") from exc
        return cls(index, factory, dim, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2), np.float32), {})

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def references(self) -> int:
        return len(self.sizes)

    def needs_training(self) -> bool:
        return not self._index.is_trained

    # ---------------------------------------------------------------- changes
    def add(self, ref_rows: Sequence[int], sets: Sequence[KeypointSet], train_sample: int = 200_000,
            seed: int = 0) -> None:
        """Add each reference's descriptors under its row id (references with none are kept too,
        so their size is known; they simply never vote)."""
        if len(ref_rows) != len(sets):
            raise InputError(f"{len(sets)} keypoint sets for {len(ref_rows)} references")
        descs, rows, pts = [], [], []
        for r, s in zip(ref_rows, sets):
            d = np.asarray(s.descriptors, np.float32)
            p = np.asarray(s.points, np.float32)
            if d.ndim != 2 or (len(d) and d.shape[1] != self.dim) or len(p) != len(d):
                raise InputError(f"reference row {r}: descriptors must be N x {self.dim} with N points")
            if len(d) and not np.isfinite(d).all():
                raise InputError(f"reference row {r}: descriptors contain NaN or infinity")
            descs.append(d)
            pts.append(p.reshape(-1, 2))
            rows.append(np.full(len(d), int(r), np.int64))
            self.sizes[int(r)] = (int(s.image_size[0]), int(s.image_size[1]))
            mark = getattr(s, "mark", None)
            if mark is not None:
                self.marks[int(r)] = {k: np.ascontiguousarray(v).reshape(-1) for k, v in mark.to_arrays().items()}
                self.marks_version += 1
        if not descs:
            return
        d = np.ascontiguousarray(np.concatenate(descs))
        if not len(d):
            return
        if not self._index.is_trained:
            # k-means wants ~40 points per list: 16384 lists at 10M need 655k, not 200k
            try:
                train_sample = max(train_sample, 40 * int(faiss.extract_index_ivf(self._index).nlist))
            except RuntimeError:
                pass
            rng = np.random.default_rng(seed)
            sample = d if len(d) <= train_sample else d[rng.choice(len(d), train_sample, replace=False)]
            self._index.train(sample)
        start = int(self._ids[-1]) + 1 if len(self._ids) else 0
        ids = np.arange(start, start + len(d), dtype=np.int64)
        self._index.add_with_ids(d, ids)
        self._counts = None
        self._selectors = {}
        self._ids = np.concatenate([self._ids, ids])
        self._ref = np.concatenate([self._ref, *rows])
        self._xy = np.concatenate([self._xy, *pts])

    def remove(self, ref_rows: Sequence[int]) -> None:
        self._counts = None
        self._selectors = {}
        gone = np.isin(self._ref, np.asarray(list(ref_rows), np.int64))
        if gone.any():
            self._index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(self._ids[gone])))
            keep = ~gone
            self._ids, self._ref, self._xy = self._ids[keep], self._ref[keep], self._xy[keep]
        for r in ref_rows:
            self.sizes.pop(int(r), None)
            if self.marks.pop(int(r), None) is not None:
                self.marks_version += 1

    def descriptors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(descriptors, reference rows, points) of everything stored, for a rebuild."""
        try:
            ivf = faiss.extract_index_ivf(self._index)
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # ids are not 0..n-1 after removals
        except RuntimeError:
            pass
        try:
            d = np.vstack([self._index.reconstruct(int(i)) for i in self._ids]) if len(self._ids) else \
                np.zeros((0, self.dim), np.float32)
        except RuntimeError as exc:
            raise ReferenceIndexError(f"descriptor index {self.factory!r} cannot give its vectors back; "
                                      "rebuild with `brandguard index` from the images") from exc
        return d, self._ref.copy(), self._xy.copy()

    def keypoint_sets(self, ref_rows: Sequence[int]) -> list["StoredKeypoints"]:
        """What was stored of each of ``ref_rows`` (descriptors, points, size, mark), for a rebuild."""
        d, ref, xy = self.descriptors()
        return [StoredKeypoints(xy[ref == r], d[ref == r], self.sizes.get(int(r), (0, 0)),
                                StoredMark(self.marks[int(r)]) if int(r) in self.marks else None)
                for r in ref_rows]

    # ---------------------------------------------------------------- queries
    def search(self, queries: np.ndarray, k: int = DEFAULT_NEIGHBOURS,
               only_rows: np.ndarray | None = None, probe_share: float = 1.0) -> DescriptorHits:
        """kNN of each query descriptor; ``only_rows`` (sorted reference rows) restricts the
        search to those references' descriptors inside FAISS (a brand-scoped check).
        ``probe_share`` < 1 probes that share of the IVF lists a full search probes (a cheaper,
        lower-recall look: auto depth's keypoint glance); exact indexes ignore it."""
        q = np.ascontiguousarray(queries, np.float32)
        if q.ndim != 2 or (len(q) and q.shape[1] != self.dim):
            raise InputError(f"query descriptors must be N x {self.dim}, got {q.shape}")
        if not 0.0 < probe_share <= 1.0:
            raise InputError(f"probe_share must be in (0, 1], got {probe_share}")
        n = len(q)
        selector = self._selector(only_rows) if only_rows is not None else None
        if n == 0 or len(self) == 0 or (selector is not None and selector[1] == 0):
            return DescriptorHits(np.full((n, k), np.inf, np.float32), np.full((n, k), -1, np.int64),
                                  np.zeros((n, k, 2), np.float32))
        params = search_params(self._index, selector[0] if selector is not None else None,
                               self._nprobe(probe_share))
        dist, ids = self._index.search(q, k, params=params) if params is not None else self._index.search(q, k)
        pos = np.searchsorted(self._ids, np.maximum(ids, 0))
        pos = np.minimum(pos, len(self._ids) - 1)
        valid = (ids >= 0) & (self._ids[pos] == ids)
        rows = np.where(valid, self._ref[pos], -1)
        return DescriptorHits(np.where(valid, dist, np.inf).astype(np.float32), rows,
                              np.where(valid[..., None], self._xy[pos], 0.0).astype(np.float32))

    def _nprobe(self, share: float) -> int | None:
        """IVF lists probed at ``share`` of the tuned ``nprobe`` (None: the tuned one, or exact)."""
        if share >= 1.0:
            return None
        try:
            ivf = faiss.extract_index_ivf(self._index)
        except RuntimeError:
            return None
        return max(1, int(round(ivf.nprobe * share)))

    def _selector(self, only_rows: np.ndarray) -> tuple["faiss.IDSelector", int]:
        """(selector over the descriptor ids of ``only_rows``, how many); cached per row set
        until the index changes (a brand's row set is cached per generation by its caller)."""
        key = only_rows.tobytes()
        cache = self._selectors
        if key not in cache:
            if len(cache) > 64:
                cache.clear()
            ids = np.ascontiguousarray(self._ids[np.isin(self._ref, only_rows)])
            cache[key] = (faiss.IDSelectorBatch(ids), len(ids))
        return cache[key]

    # ---------------------------------------------------------------- files
    def to_bytes(self) -> tuple[bytes, bytes]:
        """(FAISS file, metadata npz) as bytes, for the caller's atomic writes."""
        buf = io.BytesIO()
        size_rows = np.fromiter(self.sizes.keys(), np.int64, len(self.sizes))
        size_wh = np.array([self.sizes[int(r)] for r in size_rows], np.int64).reshape(-1, 2)
        np.savez(buf, ids=self._ids, ref=self._ref, xy=self._xy, size_rows=size_rows, size_wh=size_wh,
                 **_mark_arrays(self.marks))
        return faiss.serialize_index(self._index).tobytes(), buf.getvalue()

    @classmethod
    def from_bytes(cls, faiss_bytes: bytes, meta_bytes: bytes, factory: str, dim: int) -> "LocalIndex":
        try:
            index = faiss.deserialize_index(np.frombuffer(faiss_bytes, np.uint8))
            with np.load(io.BytesIO(meta_bytes), allow_pickle=False) as z:
                ids, ref, xy = z["ids"], z["ref"], z["xy"]
                sizes = {int(r): (int(w), int(h)) for r, (w, h) in zip(z["size_rows"], z["size_wh"])}
                marks = _marks_of(z) if "mark_rows" in z.files else {}
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            raise ReferenceIndexError(f"cannot read the descriptor index: {exc}") from exc
        if index.d != dim or index.ntotal != len(ids) or len(ref) != len(ids) or xy.shape != (len(ids), 2):
            raise ReferenceIndexError(f"descriptor index holds {index.ntotal} x {index.d}, metadata "
                                      f"{len(ids)} rows, expected dimension {dim}")
        return cls(index, factory, dim, ids.astype(np.int64), ref.astype(np.int64), xy.astype(np.float32), sizes,
                   marks)


def _mark_arrays(marks: dict[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The marks as npz arrays: per key, every row's values end to end and the offsets."""
    rows = sorted(marks)
    out = {"mark_rows": np.asarray(rows, np.int64)}
    keys = sorted({k for r in rows for k in marks[r]})
    out["mark_keys"] = np.asarray(keys, dtype=str)
    for k in keys:
        vals = [marks[r].get(k, np.zeros(0)) for r in rows]
        off = np.zeros(len(vals) + 1, np.int64)
        off[1:] = np.cumsum([len(v) for v in vals])
        out[f"mark_{k}"] = np.concatenate(vals) if vals else np.zeros(0)
        out[f"mark_{k}_offsets"] = off
    return out


def _marks_of(z) -> dict[int, dict[str, np.ndarray]]:  # noqa: ANN001 - an open NpzFile
    rows = z["mark_rows"]
    out: dict[int, dict[str, np.ndarray]] = {int(r): {} for r in rows}
    for k in (str(k) for k in z["mark_keys"]):
        vals, off = z[f"mark_{k}"], z[f"mark_{k}_offsets"]
        if off.shape != (len(rows) + 1,) or int(off[-1]) != len(vals) or (np.diff(off) < 0).any():
            raise ValueError(f"mark arrays {k!r} do not agree with {len(rows)} rows")
        for i, r in enumerate(rows):
            out[int(r)][k] = vals[int(off[i]):int(off[i + 1])]
    return out
