"""The served index's references: who is registered, adding and removing them, their thumbnails.

Reference writes (add, remove) run on the inference thread between batches, one at a time
(an asyncio lock in this process, an ``fcntl`` lock on the bundle across worker processes);
each is one committed index generation, and the next batch searches it. A worker that sees
the manifest change under it (another worker wrote) reloads the index before its next batch.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import anyio

from brandguard.cases.leads import NotFoundError
from brandguard.errors import ImageDecodeError, InputError, ReferenceIndexError
from brandguard.serve.batching import MicroBatcher
from brandguard.serve.errors import ReferenceExistsError
from brandguard.serve.schemas import NewReference
from brandguard.serve.services.media import THUMB_SIDE, image_suffix, jpeg_thumbnail
from brandguard.serve.settings import Settings
from brandguard.serve.views import reference_view

if TYPE_CHECKING:  # index.store loads FAISS: not at import time
    from brandguard.index.store import ReferenceRecord

MANIFEST_NAME = "index.json"  # brandguard.index.store.MANIFEST_FILE (not imported: it pulls in FAISS)
LOCK_NAME = ".references.lock"
INCOMING_DIR = ".incoming"
log = logging.getLogger("brandguard.serve")


def reference_map(pipe) -> dict[str, ReferenceRecord]:
    """id → record of every visible reference, its ``source`` made an absolute path."""
    out = {}
    for r in pipe.index.records():
        out[r.reference_id] = replace(r, source=pipe.source_path(r.source))
    return out


class ReferenceCatalog:
    """The references and version information of the index being served.

    ``references`` and ``info`` are replaced, never mutated, so a request reading them sees
    one consistent snapshot.
    """

    def __init__(self, settings: Settings, pipeline, batcher: MicroBatcher,
                 references: dict[str, ReferenceRecord]) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.batcher = batcher
        self.references = references  # reference_map(pipeline), read off the event loop by the caller
        self.info: dict[str, Any] = self.describe()
        self._thumbs: dict[str, bytes] = {}
        self._write_lock = anyio.Lock()
        self._index_stamp = self._manifest_stamp()

    def describe(self) -> dict[str, Any]:
        """Model, index and device versions, as /readyz, /metrics and evidence packages report them."""
        info = self.pipeline.describe()
        info.update(index_generation=self.pipeline.index.generation, device=self.pipeline.embedder.info.device,
                    requested_device=self.settings.device)
        return info

    # ------------------------------------------------------------------ the index on disk
    def _manifest_stamp(self) -> tuple[int, int, int] | None:
        """Identity of the committed manifest (it is replaced by rename, so the inode changes)."""
        try:
            st = os.stat(self.pipeline.bundle.path / MANIFEST_NAME)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    @contextmanager
    def _bundle_lock(self, exclusive: bool) -> Iterator[None]:
        """Cross-process lock on the bundle: one writer at a time; readers load whole generations."""
        try:
            f = open(self.pipeline.bundle.path / LOCK_NAME, "a+b")
        except OSError as exc:
            raise ReferenceIndexError(f"cannot lock the bundle for writing: {exc}") from exc
        with f:
            fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def reload_if_changed(self) -> None:
        """Inference thread only: load the committed index when another process changed it."""
        if self._manifest_stamp() == self._index_stamp:
            return
        from brandguard.index.store import ReferenceIndex

        try:
            with self._bundle_lock(exclusive=False):
                fresh = ReferenceIndex.load(self.pipeline.bundle.path, self.pipeline.card,
                                            threads=self.settings.threads)
                stamp = self._manifest_stamp()
        except ReferenceIndexError as exc:  # keep serving the generation we have
            log.error("index reload failed; serving generation %s", self.pipeline.index.generation,
                      extra={"error": str(exc)})
            self._index_stamp = self._manifest_stamp()
            return
        old, self.pipeline.index = self.pipeline.index, fresh
        old.close()
        self._index_stamp = stamp
        self.references = reference_map(self.pipeline)
        self._thumbs = {}
        self.info = self.describe()
        log.info("index reloaded", extra={"generation": fresh.generation, "count": len(fresh)})

    # ------------------------------------------------------------------ writes
    def _add_sync(self, data: bytes, ref: NewReference, suffix: str) -> tuple[ReferenceRecord, int]:
        from brandguard.inputs import ReferenceRow
        from brandguard.references import add_references

        with self._bundle_lock(exclusive=True):
            self.reload_if_changed()
            if ref.reference_id in self.references:
                raise ReferenceExistsError(f"reference {ref.reference_id!r} already exists; delete it first")
            incoming = self.pipeline.bundle.path / "references" / INCOMING_DIR
            incoming.mkdir(parents=True, exist_ok=True)
            tmp = incoming / f"{uuid.uuid4().hex}{suffix}"
            tmp.write_bytes(data)
            try:
                report = add_references(self.pipeline, [ReferenceRow(ref.reference_id, ref.brand, str(tmp),
                                                                     ref.sku, ref.kind)])
            finally:
                tmp.unlink(missing_ok=True)
            if report.skipped:
                raise InputError(f"the reference image cannot be used: {report.skipped[0][1]}")
            self._index_stamp = self._manifest_stamp()
            (rec,) = [r for r in self.pipeline.index.records(ref.brand) if r.reference_id == ref.reference_id]
            source = replace(rec, source=self.pipeline.source_path(rec.source))
            self.references = {**self.references, ref.reference_id: source}
            self.info = self.describe()
            return source, report.generation

    async def add(self, data: bytes, ref: NewReference) -> dict[str, Any]:
        """Embed and index one reference (one new generation); checks after this see it."""
        suffix = image_suffix(data)
        if suffix is None:
            raise InputError("the reference is not an image format brandguard reads (JPEG, PNG, WebP, GIF, BMP, TIFF)")
        async with self._write_lock:
            source, generation = await self.batcher.run_exclusive(lambda: self._add_sync(data, ref, suffix))
        return {**reference_view(ref.reference_id, source), "index_generation": generation,
                "index_count": self.info.get("index_count"), "sha256": hashlib.sha256(data).hexdigest()}

    def _remove_sync(self, reference_id: str, brand: str | None) -> int:
        with self._bundle_lock(exclusive=True):
            self.reload_if_changed()
            ref = self.references.get(reference_id)
            if ref is None or (brand is not None and ref.brand != brand):
                raise NotFoundError(f"reference {reference_id!r} not found")
            generation = self.pipeline.index.remove([reference_id])
            self._index_stamp = self._manifest_stamp()
            self.references = {k: v for k, v in self.references.items() if k != reference_id}
            self._thumbs.pop(reference_id, None)
            self.info = self.describe()
            return generation

    async def remove(self, reference_id: str, brand: str | None) -> dict[str, Any]:
        """Remove one reference (one new generation). Another brand's id is reported as missing."""
        ref = self.references.get(reference_id)
        if ref is None or (brand is not None and ref.brand != brand):
            raise NotFoundError(f"reference {reference_id!r} not found")
        async with self._write_lock:
            generation = await self.batcher.run_exclusive(lambda: self._remove_sync(reference_id, brand))
        return {"reference_id": reference_id, "brand": ref.brand, "deleted": True, "index_generation": generation,
                "index_count": self.info.get("index_count")}

    # ------------------------------------------------------------------ reads
    def visible(self, reference_id: str, brand: str | None) -> ReferenceRecord:
        """One reference, if ``brand`` (None: any) may see it; another brand's id looks missing."""
        ref = self.references.get(reference_id)
        if ref is None or (brand is not None and ref.brand != brand):
            raise NotFoundError(f"reference {reference_id!r} not found")
        return ref

    def thumbnail(self, reference_id: str) -> bytes:
        """A JPEG of the stored reference image (cached; the cache is dropped when the index changes)."""
        if reference_id in self._thumbs:
            return self._thumbs[reference_id]
        from brandguard.vision.decode import decode_image

        ref = self.references.get(reference_id)
        if ref is None or not ref.source or not Path(ref.source).is_file():
            raise NotFoundError(f"no image for reference {reference_id!r}")
        try:
            decoded = decode_image(ref.source, target_side=THUMB_SIDE)
        except ImageDecodeError as exc:
            raise NotFoundError(f"reference {reference_id!r} image unreadable: {exc.reason}") from exc
        data = jpeg_thumbnail(decoded.rgb)
        if len(self._thumbs) < 1024:
            self._thumbs[reference_id] = data
        return data
