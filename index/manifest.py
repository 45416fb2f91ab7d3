"""An index generation's manifest (``index.json``): which files make it up, with their checksums,
and the model, descriptor-index spec and vocabulary it was built with. Reading a generation
means reading its manifest and verifying every file it vouches for; nothing else is trusted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from brandguard.errors import InputError, ReferenceIndexError

if TYPE_CHECKING:  # FAISS loads with it: the manifest itself is read without FAISS (the service does)
    from brandguard.index.local_store import LocalIndex

MANIFEST_FILE = "index.json"
MANIFEST_VERSION = 2


@dataclass(frozen=True)
class IndexManifest:
    factory: str
    metric: str
    dim: int
    model_sha256: str
    generation: int
    index_file: str
    db_file: str
    count: int
    index_sha256: str
    created_at: float
    updated_at: float
    version: int = MANIFEST_VERSION
    # The descriptor index of this generation (None: global embeddings only). Keys: extractor,
    # spec_sha256, dim, factory, index_file, index_sha256, meta_file, meta_sha256, count.
    local: dict | None = None
    # The brands' vocabulary of this generation (None: none registered; every brand is then
    # known by its id only). Keys: file, sha256, brands.
    vocabulary: dict | None = None


VOCABULARY_KEYS = ("names", "aliases", "zh")


def check_vocabulary(vocabulary: object) -> dict[str, dict[str, list[str]]]:
    """A vocabulary as the index stores it: ``{brand: {"names"|"aliases"|"zh": [str, ...]}}``."""
    if not isinstance(vocabulary, dict):
        raise InputError("a vocabulary must be an object keyed by brand")
    out: dict[str, dict[str, list[str]]] = {}
    for brand, entry in vocabulary.items():
        if not isinstance(brand, str) or not brand or not isinstance(entry, dict):
            raise InputError(f"vocabulary entry {brand!r} must be a non-empty brand id with an object")
        if set(entry) - set(VOCABULARY_KEYS):
            raise InputError(f"vocabulary of {brand!r} has unknown keys {sorted(set(entry) - set(VOCABULARY_KEYS))}")
        terms = {}
        for key, vals in entry.items():
            if not isinstance(vals, list) or not all(isinstance(v, str) and v for v in vals):
                raise InputError(f"vocabulary {brand}.{key} must be a list of non-empty strings")
            terms[key] = list(vals)
        out[brand] = terms
    return out


@dataclass(frozen=True)
class LocalSpec:
    """Which local features an index holds: refused unless the pipeline extracts the same."""

    extractor: str
    dim: int
    spec_sha256: str


def read_manifest(folder: Path) -> IndexManifest:
    mpath = folder / MANIFEST_FILE
    if not mpath.is_file():
        raise ReferenceIndexError(f"{folder} has no {MANIFEST_FILE}: build it with `brandguard index`")
    try:
        manifest = IndexManifest(**json.loads(mpath.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise ReferenceIndexError(f"{mpath} is not a valid index manifest: {exc}") from exc
    if manifest.version != MANIFEST_VERSION:
        raise ReferenceIndexError(f"index manifest version {manifest.version} unsupported (want {MANIFEST_VERSION})")
    return manifest


def files_of(manifest: IndexManifest) -> set[str]:
    """Every file a committed manifest vouches for."""
    names = {manifest.index_file, manifest.db_file}
    if manifest.local:
        names |= {manifest.local.get("index_file", ""), manifest.local.get("meta_file", "")}
    if manifest.vocabulary:
        names.add(manifest.vocabulary.get("file", ""))
    return {n for n in names if n}


def load_vocabulary(folder: Path, m: dict) -> dict[str, dict[str, list[str]]]:
    """Read and verify (checksum, shape) the vocabulary a manifest names."""
    path = folder / str(m.get("file", ""))
    if not path.is_file():
        raise ReferenceIndexError(f"{path} is missing")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != m.get("sha256"):
        raise ReferenceIndexError(f"{path} checksum does not match the manifest: the file is corrupted or was replaced")
    try:
        return check_vocabulary(json.loads(data.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError, InputError) as exc:
        raise ReferenceIndexError(f"{path} is not a valid vocabulary: {exc}") from exc


def load_local(folder: Path, m: dict) -> LocalIndex:
    """Read and verify (checksums, counts) the descriptor index a manifest names."""
    from brandguard.index.local_store import LocalIndex

    blobs = []
    for key in ("index", "meta"):
        path = folder / m[f"{key}_file"]
        if not path.is_file():
            raise ReferenceIndexError(f"{path} is missing")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != m[f"{key}_sha256"]:
            raise ReferenceIndexError(f"{path} checksum does not match the manifest: the file is corrupted or "
                                      "was replaced")
        blobs.append(data)
    local = LocalIndex.from_bytes(blobs[0], blobs[1], m["factory"], int(m["dim"]))
    if len(local) != int(m["count"]):
        raise ReferenceIndexError(f"descriptor index holds {len(local)} descriptors, manifest says {m['count']}")
    return local
