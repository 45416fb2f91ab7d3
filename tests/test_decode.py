"""Safe decoding: every hostile or odd input ends as RGB or a typed error with a reason."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from brandguard.errors import ImageDecodeError
from brandguard.vision.decode import DecodeLimits, decode_image
from tests_helpers import blob_image, encode


def test_jpeg_roundtrip_full_size():
    img = blob_image(1)
    d = decode_image(encode(img, "JPEG", quality=95))
    assert d.rgb.shape == img.shape and d.rgb.dtype == np.uint8
    assert np.abs(d.rgb.astype(int) - img.astype(int)).mean() < 4
    assert d.format == "JPEG" and d.original_size == (320, 240)


def test_dct_downscale_keeps_short_side_at_least_target():
    img = blob_image(2, 800, 1200)
    d = decode_image(encode(img, "JPEG"), target_side=160)
    assert min(d.size) >= 160 and d.size[0] < 1200  # decoded at a reduced DCT scale
    assert any(n.startswith("dct_scale_") for n in d.notes)


@pytest.mark.parametrize("data,reason", [
    (b"", "empty_file"),
    (b"<html><body>not an image</body></html>", "not_an_image"),
    (b"PK\x03\x04" + b"\x00" * 100, "not_an_image"),
    (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "not_an_image"),
])
def test_non_images_are_refused_with_reason(data, reason):
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(data)
    assert exc.value.reason == reason


def test_truncated_jpeg_is_an_error_not_grey_pixels():
    data = encode(blob_image(3), "JPEG")
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(data[: len(data) // 2])
    assert exc.value.reason in ("truncated", "corrupt_data")


def test_truncated_png():
    data = encode(blob_image(4), "PNG")
    with pytest.raises(ImageDecodeError):
        decode_image(data[: len(data) // 2])


def _png_header_only(w: int, h: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_before_decoding():
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(_png_header_only(50_000, 50_000))
    assert exc.value.reason == "too_many_pixels"


def test_pixel_limit_is_configurable():
    data = encode(blob_image(5), "PNG")
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(data, limits=DecodeLimits(max_pixels=10_000))
    assert exc.value.reason == "too_many_pixels"


def test_too_small_and_blank():
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(encode(np.zeros((1, 1, 3), np.uint8), "PNG"))
    assert exc.value.reason == "too_small"
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(encode(np.full((64, 64, 3), 200, np.uint8), "PNG"))
    assert exc.value.reason == "blank"


def test_exif_orientation_applied():
    img = blob_image(6, 100, 200)  # landscape
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    pil.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    d = decode_image(buf.getvalue())
    assert d.size == (100, 200)  # portrait after orientation


def test_cmyk_palette_alpha_16bit_grey_all_become_rgb():
    img = blob_image(7)
    pil = Image.fromarray(img)
    variants = {
        "cmyk": encode(pil.convert("CMYK"), "JPEG"),
        "palette_transparency": encode_palette_with_transparency(pil),
        "rgba": encode(pil.convert("RGBA"), "PNG"),
        "grey": encode(pil.convert("L"), "PNG"),
        "16bit": encode(Image.fromarray((np.asarray(pil.convert("L")).astype(np.uint16) * 257)), "PNG"),
        "webp": encode(pil, "WEBP"),
        "bmp": encode(pil, "BMP"),
    }
    for name, data in variants.items():
        d = decode_image(data)
        assert d.rgb.ndim == 3 and d.rgb.shape[2] == 3 and d.rgb.dtype == np.uint8, name
        assert d.rgb.std() > 5, name
    d16 = decode_image(variants["16bit"])
    grey = np.asarray(pil.convert("L")).astype(int)
    assert np.abs(d16.rgb[..., 0].astype(int) - grey).max() <= 1  # scaled back to 8 bit, not clipped


def encode_palette_with_transparency(pil: Image.Image) -> bytes:
    p = pil.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    buf = io.BytesIO()
    p.save(buf, "PNG", transparency=0)
    return buf.getvalue()


def test_animated_gif_first_frame():
    frames = [Image.fromarray(blob_image(s, 64, 64)) for s in (10, 11, 12)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50)
    d = decode_image(buf.getvalue())
    assert "animated_first_frame" in d.notes and d.size == (64, 64)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(tmp_path / "nope.jpg")
    assert exc.value.reason == "missing_file"
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(tmp_path)
    assert exc.value.reason == "not_a_file"


def test_file_size_limit(tmp_path):
    p = tmp_path / "big.png"
    p.write_bytes(encode(blob_image(8), "PNG"))
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(p, limits=DecodeLimits(max_bytes=100))
    assert exc.value.reason == "file_too_large"
