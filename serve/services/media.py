"""The service's side of lead images: :class:`brandguard.cases.media.MediaFiles` (shared with
the scanner, so scan-made and service-made leads keep the same files) with the service's
decode limits. Thumbnails and originals are named by content hash under ``Settings.media_path``.
"""

from __future__ import annotations

from pathlib import Path

from brandguard.cases.media import THUMB_SIDE, MediaFiles, image_suffix, jpeg_thumbnail
from brandguard.serve.settings import Settings

__all__ = ["MediaStore", "THUMB_SIDE", "image_suffix", "jpeg_thumbnail"]


class MediaStore:
    """Thumbnails and originals of flagged uploads, decoded within the service's limits."""

    def __init__(self, settings: Settings) -> None:
        from brandguard.vision.decode import DecodeLimits

        self.settings = settings
        self.files = MediaFiles(settings.media_path)
        self.limits = DecodeLimits(max_pixels=settings.max_pixels, max_bytes=settings.max_upload_bytes)

    @property
    def root(self) -> Path:
        return self.files.root

    def _decode(self, data: bytes, side: int):  # noqa: ANN202 - an RGB array
        from brandguard.vision.decode import decode_image

        return decode_image(data, target_side=side, limits=self.limits).rgb

    def save_thumbnail(self, data: bytes) -> str | None:
        """A JPEG thumbnail of a flagged upload, named by content hash; None when it cannot be made."""
        return self.files.save_thumbnail(data, self._decode)

    def save_original(self, data: bytes) -> str:
        """The upload's exact bytes under ``media/originals/<sha256><ext>``."""
        return self.files.save_original(data)

    def file(self, path: str | None) -> Path | None:
        """A stored media path, only if it lies inside the media folder."""
        return self.files.file(path)
