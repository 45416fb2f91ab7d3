"""What a scanner's decode worker runs: read, fingerprint, decode and crop one listing.

Its own module so a worker process imports only the decoder, OpenCV and numpy: worker start-up
is paid at the start of every scan (about 0.2 s instead of 0.4 s with the scanner's pyarrow,
ONNX Runtime and FAISS imports). The Ray engine's actors use the same functions.

A listing's image is read once, here, through :func:`brandguard.inputs.read_image_file`
(confined to the scan's image root, regular files only, bounded); the bytes travel on with
the decoded crops so that every later step (ORB check, local features) judges exactly the
bytes that were hashed and embedded, and no step opens the path again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from brandguard.inputs import ListingRow, read_image_file
from brandguard.errors import ImageDecodeError
from brandguard.vision.bundle import ModelCard
from brandguard.vision.decode import DecodeLimits
from brandguard.vision.local import LocalConfig
from brandguard.vision.prepare import PreparedImage, prepare_image
from brandguard.vision.text import TextConfig

_WORKER: dict = {}


def init_worker(card: ModelCard, region_mode: str, limits: DecodeLimits, local: LocalConfig | None = None,
                root: str | None = None, text: TextConfig | None = None, glance: LocalConfig | None = None) -> None:
    """Per-process setup: one OpenCV thread and one BLAS/OpenMP thread, since the parallelism is
    the processes (a spawned worker would otherwise start a BLAS pool per core for the shape
    stage's small matrix products: on 2 cores thorough spent 199 instead of 137 CPU ms a listing).

    With ``local`` (thorough depth) the worker also describes keypoints, so the local stage's
    most expensive step runs on every core, not in the embedder's process. ``root``: the folder
    every image must lie under (None: any path). ``text`` (thorough with the text stage): the
    worker reads each photo's text too, so OCR is spread over the cores as well. ``glance`` (auto
    depth): the worker takes the quick keypoints that route each listing (``Pipeline.glance``)."""
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)
    threadpool_limits(limits=1)
    spec = (local.make(threads=1), local.query_side) if local is not None else None
    _WORKER.update(card=card, region_mode=region_mode, limits=limits, local=spec, root=root,
                   text=text.make(threads=1) if text is not None else None,
                   glance=glance.make(threads=1) if glance is not None and spec is None else None)


@dataclass(frozen=True)
class Fingerprint:
    """What identifies an image's content without decoding it again."""

    size: int | None = None
    mtime_ns: int | None = None
    sha256: str | None = None


def fingerprint(path: str, max_bytes: int, root: str | None) -> Fingerprint:
    """Size, mtime and sha256 of the image at ``path``. Raises :class:`ImageDecodeError`
    (read with the same checks as a scan: a FIFO swapped in for an image must not hang)."""
    f = read_image_file(path, max_bytes, root)
    return Fingerprint(f.size, f.mtime_ns, hashlib.sha256(f.data).hexdigest())


@dataclass(frozen=True)
class Prepared:
    """One listing after its decode worker: the model-ready crops or the error that says why
    there are none, the image's fingerprint, and the bytes read (only with crops)."""

    row: ListingRow
    item: PreparedImage | ImageDecodeError
    fp: Fingerprint
    data: bytes | None = None


def prepare_row(row: ListingRow) -> Prepared:
    """Read, fingerprint and decode one listing; an error travels back as the exception itself."""
    if row.error is not None:
        return Prepared(row, ImageDecodeError(row.reason or "bad_row", row.error), Fingerprint())
    limits: DecodeLimits = _WORKER["limits"]
    try:
        f = read_image_file(row.image, limits.max_bytes, _WORKER["root"])
    except ImageDecodeError as exc:
        return Prepared(row, exc, Fingerprint())
    fp = Fingerprint(f.size, f.mtime_ns, hashlib.sha256(f.data).hexdigest())
    try:
        item = prepare_image(f.data, _WORKER["card"], _WORKER["region_mode"], limits, _WORKER.get("local"),
                             _WORKER.get("text"), _WORKER.get("glance"))
    except ImageDecodeError as exc:
        return Prepared(row, exc, fp)
    return Prepared(row, item, fp, f.data)
