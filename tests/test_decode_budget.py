"""The decoder's memory and time budget on small files that claim a lot: 16-bit PNGs, huge
canvases, GIFs with hundreds of thousands of frames. Memory is measured as peak RSS of a fresh
interpreter (numpy and PIL allocate in C, out of tracemalloc's sight); time only as ratios."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import GifImagePlugin, Image, ImageFile

from brandguard.errors import ImageDecodeError
from brandguard.vision.decode import DecodeLimits, decode_image

MB = 1024 * 1024


def _png(w: int, h: int, depth: int, colour_type: int, rows: bytes | None = None) -> bytes:
    """A PNG written with zlib directly; all-zero rows unless ``rows`` (filtered scanlines) is given."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    if rows is None:
        channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
        rows = (b"\x00" + bytes(w * channels * depth // 8)) * h
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 9))
            + chunk(b"IEND", b""))


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


# --- the byte budget ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode,bits,expected", [
    ("1", 1, 1), ("L", 8, 1), ("P", 8, 1), ("P", 4, 1),
    ("LA", 8, 2), ("PA", 8, 2), ("La", 8, 2),
    ("RGB", 8, 3), ("YCbCr", 8, 3), ("LAB", 8, 3), ("HSV", 8, 3),
    ("RGBA", 8, 4), ("RGBa", 8, 4), ("RGBX", 8, 4), ("CMYK", 8, 4),
    ("I;16", 16, 2), ("I;16B", 16, 2), ("I;16L", 16, 2), ("I;16N", 16, 2),
    ("I", 16, 4), ("I", 32, 4), ("F", 32, 4),
    # PIL reads these 16-bit files into 8-bit modes: the stored depth is what counts
    ("RGB", 16, 6), ("RGBA", 16, 8), ("LA", 16, 4),
])
def test_bytes_per_pixel_per_mode(mode, bits, expected):
    from brandguard.vision.decode import bytes_per_pixel

    assert bytes_per_pixel(mode, bits) == expected


def test_default_budget_admits_40mpx_8bit_rgb_not_16bit_rgba():
    from brandguard.vision.decode import decoded_bytes

    budget = DecodeLimits().max_decoded_bytes
    assert decoded_bytes("RGB", 8000, 5000) == 120_000_000 <= budget
    assert decoded_bytes("RGBA", 8000, 5000) <= budget
    assert decoded_bytes("RGBA", 8000, 5000, sample_bits=16) == 320_000_000 > budget
    assert decoded_bytes("RGB", 8000, 5000, sample_bits=16) > budget
    assert decoded_bytes("I;16", 6300, 6300, sample_bits=16) == 6300 * 6300 * 2 <= budget


def test_16bit_png_refused_from_the_header_before_any_pixel_is_decoded(monkeypatch):
    data = _png(6300, 6300, 16, 0)
    assert len(data) < 100_000  # 77 KB on disk, 79 MB of samples

    def no_decoding(self, *a, **kw):  # noqa: ANN001, ANN002, ANN003
        raise AssertionError("pixels decoded despite the byte budget")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(data, target_side=224, limits=DecodeLimits(max_decoded_bytes=50 * MB))
    assert exc.value.reason == "too_many_bytes"


def test_stored_bit_depth_counts_where_the_mode_hides_it():
    """A 16-bit RGBA PNG opens as PIL mode RGBA; the budget still counts 8 bytes a pixel."""
    limits = DecodeLimits(max_decoded_bytes=2 * MB)  # 600 x 600: 1.4 MB at 8 bits, 2.9 MB at 16
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(_png(600, 600, 16, 6), limits=limits)
    assert exc.value.reason == "too_many_bytes"
    with pytest.raises(ImageDecodeError) as exc:  # the same canvas at 8 bits passes the budget
        decode_image(_png(600, 600, 8, 6), limits=limits)
    assert exc.value.reason == "blank"


# --- peak memory of a decode, in a fresh interpreter -------------------------------------------

_RSS_PROBE = """
import resource, sys
from brandguard.errors import ImageDecodeError
from brandguard.vision.decode import decode_image
data = open(sys.argv[1], "rb").read()
side = None if sys.argv[2] == "none" else int(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode_image(data, target_side=side)
    reason = "decoded"
except ImageDecodeError as exc:
    reason = exc.reason
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
print(reason, (after - before) * scale)
"""


def _peak_rss_growth(path: Path, target_side: int | None) -> tuple[str, int]:
    res = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(path), str(target_side or "none")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    reason, grown = res.stdout.split()
    return reason, int(grown)


@pytest.mark.parametrize("target_side,bound_mb", [(224, 300), (None, 450)])
def test_16bit_zero_png_decodes_within_a_memory_bound(tmp_path, target_side, bound_mb):
    """The 77 KB 6300x6300 16-bit PNG passes both limits (79 MB of samples) and must cost about
    that buffer: measured 85 MB (reduced) and 230 MB (full size, 119 MB of it the RGB result);
    the float64 conversion it replaced peaked at 987 MB either way."""
    path = tmp_path / "zeros16.png"
    path.write_bytes(_png(6300, 6300, 16, 0))
    reason, grown = _peak_rss_growth(path, target_side)
    assert reason == "blank"  # decoded all the way to the flatness check
    assert grown < bound_mb * MB, f"peak RSS grew {grown / MB:.0f} MB"


# --- 16-bit and other deep images still come out right -----------------------------------------

def _levels_16bit(w: int, h: int) -> np.ndarray:
    """Four vertical bands: 0, 32768, 65535 and a ramp, as uint16."""
    arr = np.zeros((h, w), np.uint16)
    q = w // 4
    arr[:, q:2 * q] = 32768
    arr[:, 2 * q:3 * q] = 65535
    arr[:, 3 * q:] = np.linspace(0, 65535, w - 3 * q).astype(np.uint16)
    return arr


@pytest.mark.parametrize("fmt,mode", [("PNG", "I;16"), ("TIFF", "I;16"), ("TIFF", "I;16B")])
def test_16bit_levels_map_to_8bit(fmt, mode):
    arr = _levels_16bit(64, 32)
    img = Image.frombytes(mode, (64, 32), arr.astype("<u2" if mode == "I;16" else ">u2").tobytes())
    d = decode_image(_save(img, fmt))
    grey = d.rgb[:, :, 0].astype(int)
    assert (d.rgb == d.rgb[:, :, :1]).all() and "high_bit_depth" in d.notes
    assert (grey[:, :16] == 0).all()
    assert (np.abs(grey[:, 16:32] - 128) <= 1).all()
    assert (grey[:, 32:48] == 255).all()
    assert np.abs(grey[:, 48:] - arr[:, 48:] / 257).max() <= 1


def test_large_16bit_png_is_reduced_before_conversion_with_the_same_levels():
    arr = _levels_16bit(1024, 768)
    d = decode_image(_save(Image.fromarray(arr), "PNG"), target_side=128)
    assert 128 <= min(d.size) < 256 and d.original_size == (1024, 768) and d.display_size == (1024, 768)
    grey = d.rgb[:, :, 0].astype(int)
    k = 768 // 128
    assert d.size == (-(-1024 // k), 768 // k) and f"reduced_{k}" in d.notes

    def band(b: int) -> np.ndarray:  # the output columns made only of band b's 256 columns
        return grey[:, -(-256 * b // k): 256 * (b + 1) // k]
    assert (band(0) == 0).all()
    assert (np.abs(band(1) - 128) <= 1).all()
    assert (band(2) == 255).all()


def test_float_and_int_tiffs_map_to_8bit_without_nan_garbage():
    f = np.tile(np.array([-1.0, 0.5, np.nan, np.inf, 2.0, 1.0], np.float32).repeat(8), (48, 1))
    d = decode_image(_save(Image.fromarray(f, "F"), "TIFF"))
    assert list(d.rgb[0, ::8, 0]) == [0, 127, 0, 255, 255, 170] and "float" in d.notes
    i = np.tile(np.array([-5, 0, 100, 200, 255, 7], np.int32).repeat(8), (48, 1))
    d = decode_image(_save(Image.fromarray(i, "I"), "TIFF"))
    assert list(d.rgb[0, ::8, 0]) == [0, 0, 100, 200, 255, 7]  # 8-bit range kept as is


def test_reduced_png_keeps_exif_orientation_and_display_size():
    """Orientation is read before the reduce drops the metadata; boxes stay in original pixels."""
    rng = np.random.default_rng(3)
    img = Image.fromarray((rng.random((400, 800, 3)) * 255).astype(np.uint8))  # 800 wide, 400 high
    exif = img.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    d = decode_image(_save(img, "PNG", exif=exif.tobytes()), target_side=100)
    assert d.size == (100, 200) and "reduced_4" in d.notes
    assert d.original_size == (800, 400) and d.display_size == (400, 800)


def test_reduced_transparent_png_still_composites_on_white():
    rgba = np.zeros((800, 800, 4), np.uint8)
    rgba[:, 400:] = (200, 0, 0, 255)  # left half fully transparent, right half opaque red
    d = decode_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"), target_side=100)
    assert d.size == (100, 100) and "alpha" in d.notes
    assert (d.rgb[:, :49] == 255).all() and (np.abs(d.rgb[:, 51:].astype(int) - (200, 0, 0)) <= 1).all()


# --- animations: frame 0 only, never a walk over every frame ----------------------------------

def _many_frame_gif(extra_frames: int) -> bytes:
    """A 64x64 noise GIF followed by ``extra_frames`` 1x1 frames (23 bytes each, raw GIF89a)."""
    rng = np.random.default_rng(0)
    first = Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).convert("P")
    head = bytearray(_save(first, "GIF")[:-1])  # without its trailer
    head[:6] = b"GIF89a"
    control = b"\x21\xf9\x04\x00\x00\x00\x00\x00"  # graphic control extension, no delay
    # image descriptor at (0, 0), 1x1, no local palette; LZW minimum code size 2; one data
    # sub-block holding the 3-bit codes clear(4), index 0, end(5); block terminator
    frame = b"\x2c" + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00" + b"\x02\x02\x44\x01\x00"
    return bytes(head) + (control + frame) * extra_frames + b"\x3b"


def test_many_frame_gif_frames_after_the_second_are_never_visited(monkeypatch):
    data = _many_frame_gif(20_000)
    assert Image.open(io.BytesIO(data)).n_frames == 20_001  # the file really holds them all
    visited: list[int] = []
    real_seek = GifImagePlugin.GifImageFile._seek

    def counting_seek(self, frame, update_image=True):  # noqa: ANN001
        visited.append(frame)
        return real_seek(self, frame, update_image)

    monkeypatch.setattr(GifImagePlugin.GifImageFile, "_seek", counting_seek)
    d = decode_image(data)
    assert "animated_first_frame" in d.notes and d.size == (64, 64)
    assert max(visited) <= 1  # is_animated peeks at frame 1; nothing further


def _fastest(fn, repeats: int = 5) -> float:  # noqa: ANN001
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def test_many_frame_gif_costs_about_what_a_one_frame_gif_costs():
    """100,000 frames (2.3 MB): counting them is the cost the decoder must not pay."""
    many, one = _many_frame_gif(100_000), _many_frame_gif(0)
    decode_image(many), decode_image(one)  # warm up plugin imports
    t_many = _fastest(lambda: decode_image(many))
    t_one = _fastest(lambda: decode_image(one))
    t_count = _fastest(lambda: Image.open(io.BytesIO(many)).n_frames, repeats=2)
    assert t_count >= 10 * t_many, (t_count, t_many)
    assert t_many <= 5 * t_one + 0.05 * t_count, (t_many, t_one, t_count)
