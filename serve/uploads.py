"""Reading uploaded images: multipart forms (file parts plus text fields) or a raw image body.

Endpoints call :func:`read_uploads` themselves, after authentication, so nobody without a key
makes the service buffer an upload. Each image is capped at ``max_upload_bytes`` (413); the
whole body is capped while it streams by the ASGI guard, so an oversized upload is refused
before it is buffered.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import UploadFile

from brandguard.serve.errors import PayloadTooLargeError, UnsupportedMediaError
from brandguard.serve.settings import Settings


@dataclass(frozen=True)
class Uploads:
    images: list[bytes]
    fields: dict[str, str]


async def read_uploads(request: Request, settings: Settings, max_files: int) -> Uploads:
    """Images from a multipart form (any file parts) or from a raw body; form fields alongside."""
    ctype = request.headers.get("content-type", "").lower()
    limit = settings.max_upload_bytes
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=max_files, max_fields=32, max_part_size=256 * 1024)
        try:
            images, fields = [], {}
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read(limit + 1)
                    if len(data) > limit:
                        raise PayloadTooLargeError(f"image {value.filename or key!r} is over {limit} bytes")
                    images.append(data)
                else:
                    fields[key] = value
        finally:
            await form.close()
        return Uploads(images, fields)
    if ctype.startswith("application/x-www-form-urlencoded") or ctype.startswith("application/json"):
        raise UnsupportedMediaError("send the image as multipart/form-data or as the raw request body")
    data = await request.body()
    if len(data) > limit:
        raise PayloadTooLargeError(f"image is {len(data)} bytes, over {limit}")
    return Uploads([data] if data else [], {})
