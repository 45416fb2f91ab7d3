"""The image files a lead keeps: a JPEG thumbnail and the exact original bytes of the listing.

Shared by the scanner and the service so a lead looks the same whichever path made it. Both
files are named by the content's sha256 under one media folder (by default ``media/`` next to
the leads database, which is where the service looks), and written atomically (temporary file,
then rename), so two writers of the same image never see half a file and writing twice costs
nothing. Paths read back from the database are followed only inside the media folder.

Decoding is the caller's (``decode``): this layer does not import the image pipeline, and each
caller decodes with its own limits.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from pathlib import Path
from typing import Callable

from brandguard.errors import ImageDecodeError

THUMB_SIDE = 480
IMAGE_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}
# decode(data, side) -> an RGB uint8 array whose long side is about ``side`` (raises ImageDecodeError)
Decode = Callable[[bytes, int], "object"]


def default_media_dir(leads_db: str | os.PathLike[str]) -> Path:
    """Where lead images live unless told otherwise: ``media/`` beside the leads database."""
    return Path(leads_db).parent / "media"


def image_suffix(data: bytes) -> str | None:
    """File suffix of an image by its content (header only), None when PIL does not know it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return IMAGE_SUFFIXES.get(img.format or "")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def jpeg_thumbnail(rgb, side: int = THUMB_SIDE) -> bytes:  # noqa: ANN001 - an RGB numpy array
    """A JPEG of an RGB array, fitted inside ``side`` x ``side``."""
    from PIL import Image

    img = Image.fromarray(rgb)
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


class MediaFiles:
    """Thumbnails and originals of listing images, in one folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def thumbnail_path(self, sha256: str) -> Path:
        return self.root / f"{sha256}.jpg"

    def save_thumbnail(self, data: bytes, decode: Decode) -> str | None:
        """A JPEG thumbnail of ``data``, named by its sha256; None when it cannot be decoded."""
        path = self.thumbnail_path(hashlib.sha256(data).hexdigest())
        if path.is_file():
            return str(path)
        try:
            rgb = decode(data, THUMB_SIDE)
        except ImageDecodeError:
            return None
        self._write(path, jpeg_thumbnail(rgb))
        return str(path)

    def save_original(self, data: bytes) -> str:
        """The exact bytes under ``originals/<sha256><ext>`` (evidence must be unaltered)."""
        path = self.root / "originals" / f"{hashlib.sha256(data).hexdigest()}{image_suffix(data) or '.bin'}"
        if not path.is_file():
            self._write(path, data)
        return str(path)

    def save_listing(self, data: bytes, decode: Decode) -> tuple[str | None, str]:
        """(thumbnail, original) of one listing image: what a lead stores."""
        return self.save_thumbnail(data, decode), self.save_original(data)

    def file(self, path: str | None) -> Path | None:
        """A stored media path, only if it lies inside the media folder (never follow a stray path)."""
        if not path:
            return None
        p = Path(path).resolve()
        return p if self.root.resolve() in p.parents else None

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
