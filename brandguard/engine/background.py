"""Score normalisation against background similarity (the SSCD recipe, for a small model).

Some queries are "close to everything": a busy photo, a plain white product shot. Their raw
cosine to every reference is high, so one global threshold either floods brands with false
leads or misses real copies. Subtracting how similar a query is to a background set of images
that contain no registered mark (mean of its k nearest background similarities, times beta)
makes scores comparable across queries. The background is a bundle file, built with the
bundle's own model and verified on load like the index.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from brandguard.errors import BundleError
from brandguard.artifacts import atomic_write_bytes
from brandguard.vision.bundle import ModelCard

VECTORS_FILE = "background.npy"
META_FILE = "background.json"


@dataclass(frozen=True)
class BackgroundMeta:
    model_sha256: str
    count: int
    dim: int
    k: int
    beta: float
    sha256: str
    source: str


class Background:
    """Background vectors of one model; :meth:`offsets` gives each query's score correction."""

    def __init__(self, vectors: np.ndarray, meta: BackgroundMeta) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.meta = meta

    @classmethod
    def load(cls, bundle_dir: str | Path, card: ModelCard) -> "Background | None":
        """The bundle's background, or None when it has none; refuses another model's."""
        folder = Path(bundle_dir)
        mpath, vpath = folder / META_FILE, folder / VECTORS_FILE
        if not mpath.is_file():
            return None
        try:
            meta = BackgroundMeta(**json.loads(mpath.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{mpath} is not a valid background manifest: {exc}") from exc
        if meta.model_sha256 != card.sha256:
            raise BundleError(f"{mpath} was built with model {meta.model_sha256[:12]}…, not {card.sha256[:12]}…: "
                              "rebuild it with `brandguard background`")
        if not vpath.is_file():
            raise BundleError(f"{vpath} is missing")
        data = vpath.read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.sha256:
            raise BundleError(f"{vpath} does not match its manifest checksum")
        vectors = np.load(io.BytesIO(data), allow_pickle=False)
        if vectors.shape != (meta.count, card.embedding_dim):
            raise BundleError(f"{vpath} holds {vectors.shape}, manifest says {meta.count} x {card.embedding_dim}")
        return cls(vectors, meta)

    def offsets(self, queries: np.ndarray, chunk: int = 256) -> np.ndarray:
        """beta x mean of each query's k highest similarities to the background (R,)."""
        k = min(self.meta.k, len(self.vectors))
        out = np.empty(len(queries), dtype=np.float32)
        for start in range(0, len(queries), chunk):  # bounded memory: chunk x background
            sims = queries[start:start + chunk] @ self.vectors.T
            top = np.partition(sims, -k, axis=1)[:, -k:]
            out[start:start + chunk] = self.meta.beta * top.mean(axis=1)
        return out


def write_background(bundle_dir: str | Path, card: ModelCard, vectors: np.ndarray, k: int = 5,
                     beta: float = 1.0, source: str = "") -> BackgroundMeta:
    """Store background vectors (rows unit-norm, model ``card``) in a bundle, manifest last."""
    vecs = np.ascontiguousarray(vectors, dtype=np.float32)
    if vecs.ndim != 2 or vecs.shape[1] != card.embedding_dim or len(vecs) < k:
        raise BundleError(f"background must be N x {card.embedding_dim} with N >= k={k}, got {vecs.shape}")
    buf = io.BytesIO()
    np.save(buf, vecs, allow_pickle=False)
    data = buf.getvalue()
    meta = BackgroundMeta(card.sha256, len(vecs), card.embedding_dim, k, float(beta),
                          hashlib.sha256(data).hexdigest(), source)
    folder = Path(bundle_dir)
    atomic_write_bytes(folder / VECTORS_FILE, data)
    atomic_write_bytes(folder / META_FILE, (json.dumps(asdict(meta), indent=2, sort_keys=True) + "\n").encode())
    return meta
