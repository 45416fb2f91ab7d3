"""A hostile-image corpus, generated (never downloaded): what real marketplaces receive.

Each entry is (name, bytes, expected) where expected is the inconclusive ``reason`` the decoder
must give, or ``None`` for a valid (if odd) image that must be judged normally.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image

from tests_helpers import blob_image


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(w: int = 50_000, h: int = 50_000) -> bytes:
    """A tiny PNG that declares w x h pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + _png_chunk(b"IEND", b""))


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def hostile_corpus() -> list[tuple[str, bytes, str | None]]:
    base = Image.fromarray(blob_image(42, 240, 320))
    jpeg = _save(base, "JPEG", quality=90)
    png = _save(base, "PNG")
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("a.txt", "hello")
    exif_img = base.copy()
    exif = exif_img.getexif()
    exif[0x0112] = 8
    exif[0x010E] = "x" * 60_000  # huge ImageDescription metadata
    frames = [Image.fromarray(blob_image(s, 96, 96)) for s in (1, 2, 3)]
    pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    return [
        ("zero_bytes.jpg", b"", "empty_file"),
        ("truncated.jpg", jpeg[: len(jpeg) // 3], "truncated"),
        ("truncated.png", png[: len(png) // 3], "truncated"),
        ("html_as.jpg", b"<!doctype html><html><body>hi</body></html>", "not_an_image"),
        ("svg_as.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"></svg>', "not_an_image"),
        ("zip_as.webp", zbuf.getvalue(), "not_an_image"),
        ("bomb.png", png_bomb(), "too_many_pixels"),
        ("one_pixel.png", _save(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), "too_small"),
        ("blank.png", _save(Image.new("RGB", (200, 200), (250, 250, 250)), "PNG"), "blank"),
        ("random_garbage.jpg", bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), "not_an_image"),
        ("jpeg_header_only.jpg", jpeg[:200], "truncated"),
        # valid but odd: must be judged, not refused
        ("png_named.jpg", png, None),
        ("cmyk.jpg", _save(base.convert("CMYK"), "JPEG"), None),
        ("sixteen_bit.png", _save(Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257), "PNG"), None),
        ("palette_transparency.png", _save(pal, "PNG", transparency=0), None),
        ("animated.gif", _save(frames[0], "GIF", save_all=True, append_images=frames[1:]), None),
        ("animated.webp", _save(frames[0], "WEBP", save_all=True, append_images=frames[1:]), None),
        ("exif_rotated_huge_meta.jpg", _save(exif_img, "JPEG", exif=exif.tobytes()), None),
        ("grayscale.jpg", _save(base.convert("L"), "JPEG"), None),
        ("rgba.png", _save(base.convert("RGBA"), "PNG"), None),
    ]
