"""Files the service keeps of uploads: a JPEG thumbnail and the exact original of each flagged one.

Both are named by content hash under ``Settings.media_path`` and written atomically (temporary
file, then rename), so concurrent checks of the same image never see half a file. Paths read
back from the database are followed only when they lie inside the media folder.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path

from brandguard.errors import ImageDecodeError
from brandguard.serve.settings import Settings

THUMB_SIDE = 480
IMAGE_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


def image_suffix(data: bytes) -> str | None:
    """File suffix of an image by its content (header only), None when PIL does not know it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return IMAGE_SUFFIXES.get(img.format or "")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def jpeg_thumbnail(rgb, side: int = THUMB_SIDE) -> bytes:
    """A JPEG of an RGB array, fitted inside ``side`` x ``side``."""
    from PIL import Image

    img = Image.fromarray(rgb)
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


class MediaStore:
    """Thumbnails and originals of uploads, in one folder."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def root(self) -> Path:
        return self.settings.media_path

    def save_thumbnail(self, data: bytes) -> str | None:
        """A JPEG thumbnail of a flagged upload, named by content hash; None when it cannot be made."""
        from brandguard.vision.decode import DecodeLimits, decode_image

        path = self.root / f"{hashlib.sha256(data).hexdigest()}.jpg"
        if path.is_file():
            return str(path)
        try:
            decoded = decode_image(data, target_side=THUMB_SIDE,
                                   limits=DecodeLimits(max_pixels=self.settings.max_pixels,
                                                       max_bytes=self.settings.max_upload_bytes))
        except ImageDecodeError:
            return None
        self._write(path, jpeg_thumbnail(decoded.rgb))
        return str(path)

    def save_original(self, data: bytes) -> str:
        """The upload's exact bytes under ``media/originals/<sha256><ext>`` (evidence must be unaltered)."""
        path = self.root / "originals" / f"{hashlib.sha256(data).hexdigest()}{image_suffix(data) or '.bin'}"
        if not path.is_file():
            self._write(path, data)
        return str(path)

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
