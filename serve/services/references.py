"""The served index's references: who is registered, adding and removing them, their thumbnails.

Reference writes (add, remove) run on the inference thread between batches, one at a time
(an asyncio lock in this process, an ``fcntl`` lock on the bundle across worker processes);
each is one committed index generation, and the next batch searches it. A worker that sees
the manifest change under it (another worker wrote) reloads the index before its next batch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import anyio

from brandguard.cases.db import NotFoundError
from brandguard.errors import ImageDecodeError, InputError, ReferenceIndexError
from brandguard.index.manifest import MANIFEST_FILE
from brandguard.serve.batching import MicroBatcher
from brandguard.serve.errors import ReferenceExistsError
from brandguard.serve.schemas import NewReference
from brandguard.serve.services.media import THUMB_SIDE, image_suffix, jpeg_thumbnail
from brandguard.serve.settings import Settings
from brandguard.serve.views import reference_view

if TYPE_CHECKING:  # index.store loads FAISS: not at import time
    from brandguard.index.store import ReferenceRecord
    from brandguard.quarantine import Quarantine

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
                 references: dict[str, ReferenceRecord], quarantine: Quarantine) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.batcher = batcher
        self.quarantine = quarantine  # held references and the audit log, beside the bundle's images
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
            st = os.stat(self.pipeline.bundle.path / MANIFEST_FILE)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    @contextmanager
    def _bundle_lock(self, exclusive: bool) -> Iterator[None]:
        """Cross-process lock on the bundle (the one ``brandguard index`` takes too): one writer
        at a time; readers load whole generations."""
        from brandguard.references import bundle_lock

        try:
            with bundle_lock(self.pipeline.bundle.path, exclusive):
                yield
        except OSError as exc:
            raise ReferenceIndexError(f"cannot lock the bundle: {exc}") from exc

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
    def clean_leftovers(self) -> None:
        """At start: remove what a writer killed mid-change left (see references.clean_leftovers)."""
        from brandguard.references import clean_leftovers

        with self._bundle_lock(exclusive=True):
            report = clean_leftovers(self.pipeline, self.quarantine)
        if report.total:
            log.warning("cleaned leftovers of an interrupted reference change", extra=vars(report))

    def _changed(self) -> None:
        """After a committed write: the served snapshot follows the index."""
        self._index_stamp = self._manifest_stamp()
        self.references = reference_map(self.pipeline)
        self._thumbs = {}
        self.info = self.describe()

    def _add_sync(self, data: bytes, ref: NewReference, suffix: str, actor: str):  # noqa: ANN202
        from brandguard.inputs import ReferenceRow
        from brandguard.references import INCOMING_DIR, STORE_DIR, submit_reference

        with self._bundle_lock(exclusive=True):
            self.reload_if_changed()
            if ref.reference_id in self.references:
                raise ReferenceExistsError(f"reference {ref.reference_id!r} already exists; delete it first")
            incoming = self.pipeline.bundle.path / STORE_DIR / INCOMING_DIR
            incoming.mkdir(parents=True, exist_ok=True)
            tmp = incoming / f"{uuid.uuid4().hex}{suffix}"
            tmp.write_bytes(data)
            try:
                sub = submit_reference(self.pipeline, self.quarantine,
                                       ReferenceRow(ref.reference_id, ref.brand, str(tmp), ref.sku, ref.kind), actor)
            finally:
                tmp.unlink(missing_ok=True)
            if sub.status == "live":
                self._changed()
            return sub

    async def add(self, data: bytes, ref: NewReference, actor: str) -> tuple[bool, dict[str, Any]]:
        """Screen, then index one reference (one new generation; checks after this see it), or
        hold it for an admin when it copies another brand's reference. Returns (live, body)."""
        suffix = image_suffix(data)
        if suffix is None:
            raise InputError("the reference is not an image format brandguard reads (JPEG, PNG, WebP, GIF, BMP, TIFF)")
        async with self._write_lock:
            sub = await self.batcher.run_exclusive(lambda: self._add_sync(data, ref, suffix, actor))
        sha = hashlib.sha256(data).hexdigest()
        if sub.status == "held":
            return False, {"reference_id": ref.reference_id, "brand": ref.brand, "status": "held",
                           "held_id": sub.held.id, "sha256": sha,
                           "detail": "this image matches another brand's registered reference at copy level: it is "
                                     "held for an admin's review and is not used until approved"}
        return True, {**reference_view(ref.reference_id, self.references[ref.reference_id]), "status": "live",
                      "index_generation": sub.generation, "index_count": self.info.get("index_count"), "sha256": sha}

    def _remove_sync(self, reference_id: str, brand: str | None, actor: str) -> int:
        from brandguard.references import remove_reference

        with self._bundle_lock(exclusive=True):
            self.reload_if_changed()
            ref = self.references.get(reference_id)
            if ref is None or (brand is not None and ref.brand != brand):
                raise NotFoundError(f"reference {reference_id!r} not found")
            generation = remove_reference(self.pipeline, self.quarantine, reference_id, actor)
            self._changed()
            return generation

    async def remove(self, reference_id: str, brand: str | None, actor: str) -> dict[str, Any]:
        """Remove one reference (one new generation). Another brand's id is reported as missing."""
        ref = self.references.get(reference_id)
        if ref is None or (brand is not None and ref.brand != brand):
            raise NotFoundError(f"reference {reference_id!r} not found")
        async with self._write_lock:
            generation = await self.batcher.run_exclusive(lambda: self._remove_sync(reference_id, brand, actor))
        return {"reference_id": reference_id, "brand": ref.brand, "deleted": True, "index_generation": generation,
                "index_count": self.info.get("index_count")}

    def _decide_sync(self, held_id: str, approve: bool, actor: str, note: str):  # noqa: ANN202
        from brandguard.references import decide_held

        with self._bundle_lock(exclusive=True):
            self.reload_if_changed()
            held, generation = decide_held(self.pipeline, self.quarantine, held_id, approve, actor, note)
            if generation is not None:
                self._changed()
            return held, generation

    async def decide(self, held_id: str, approve: bool, actor: str, note: str = "") -> dict[str, Any]:
        """An admin's decision on a held reference: approved → indexed (one generation)."""
        async with self._write_lock:
            held, generation = await self.batcher.run_exclusive(
                lambda: self._decide_sync(held_id, approve, actor, note))
        return {**held.to_dict(), "index_generation": generation if generation is not None else
                self.info.get("index_generation")}

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
