"""Safe, fast image decoding for untrusted listing photos.

Marketplace images are hostile by default: truncated uploads, HTML saved as ``.jpg``,
decompression bombs, CMYK scans, 16-bit PNGs, animations. Every path here either returns an
RGB uint8 array or raises :class:`ImageDecodeError` with a short ``reason`` code that the
pipeline reports as an ``inconclusive`` verdict. Nothing returns ``None``.

Speed and memory: the pixel limit and the decoded-byte budget are checked from the header
before any pixel is decoded. JPEGs are decoded in the DCT domain at 1/2, 1/4 or 1/8 scale (PIL
``draft``) when the caller only needs ``target_side`` pixels, which is most of the cost of a
scan; other formats are box-reduced by an integer factor right after decoding, before any
colour conversion. 16-bit, 32-bit and float images are brought to 8 bits strip by strip with
integer (or float32) arithmetic, so peak memory stays close to the decoded buffer itself.
Only the first frame of an animation is ever read.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageMode, UnidentifiedImageError

from brandguard.errors import ImageDecodeError

# Formats we accept. Anything else PIL might recognise (EPS, which shells out to Ghostscript;
# ICNS; PDF) is refused: fewer parsers, fewer surprises.
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})


@dataclass(frozen=True)
class DecodeLimits:
    """Limits applied before and after decoding. Defaults suit listing photos.

    ``max_decoded_bytes`` bounds width x height x channels x bytes per stored sample, read
    from the header (see :func:`decoded_bytes`): the pixel limit alone lets a 77 KB 16-bit
    PNG claim 80 MB of samples and, through conversions, over a gigabyte. The default admits
    a 40 Mpx 8-bit RGB (120 MB) or RGBA image, not a 40 Mpx 16-bit RGB(A) one.
    """

    max_pixels: int = 40_000_000
    max_bytes: int = 50 * 1024 * 1024
    max_decoded_bytes: int = 160 * 1024 * 1024
    min_side: int = 16
    # Below this standard deviation of grey levels the image carries nothing to judge.
    blank_std: float = 2.0


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image ready for preprocessing, plus what the decoder learned on the way."""

    rgb: np.ndarray  # HxWx3 uint8, contiguous
    original_size: tuple[int, int]  # (width, height) as stored, before draft/reduce/orientation
    format: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def size(self) -> tuple[int, int]:
        return (int(self.rgb.shape[1]), int(self.rgb.shape[0]))

    @property
    def display_size(self) -> tuple[int, int]:
        """The stored size as the image is shown (EXIF rotation applied): the pixels every
        box in the evidence is given in, whatever reduced size was decoded."""
        w, h = self.original_size
        rw, rh = self.size
        return (h, w) if (rw > rh) != (w > h) and w != h and rw != rh else (w, h)


# Decoded bytes per pixel of each PIL mode, counted in samples (PIL pads RGB to 4 bytes in
# memory, but the budget measures the image, not PIL's layout). Mode "1" is unpacked to one
# byte per pixel, a palette image holds one index per pixel.
MODE_BYTES_PER_PIXEL: dict[str, int] = {
    "1": 1, "L": 1, "P": 1,
    "LA": 2, "La": 2, "PA": 2,
    "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2,
    "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3,
    "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4,
    "I": 4, "F": 4,
}

# Modes holding more than 8 bits a sample: brought to 8-bit grey strip by strip.
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})

# EXIF orientation -> the transpose that shows the image upright (ImageOps.exif_transpose's table).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Source bytes per strip when converting high-bit-depth images: small next to the image.
_STRIP_BYTES = 4 << 20


def bytes_per_pixel(mode: str, sample_bits: int = 8) -> int:
    """Decoded bytes per pixel of PIL ``mode`` for a file storing ``sample_bits`` per sample.

    PIL reads 16-bit RGB, RGBA and LA PNGs (and 16-bit RGB TIFFs) into 8-bit modes, so the
    mode alone would count a 16-bit RGBA image at 4 bytes a pixel; its stored depth counts it
    at 8. A mode missing from the table counts from PIL's own description (bands x sample size).
    """
    per_pixel = MODE_BYTES_PER_PIXEL.get(mode)
    try:
        desc = ImageMode.getmode(mode)
        bands = len(desc.bands)
        if per_pixel is None:
            per_pixel = bands * np.dtype(desc.typestr).itemsize
    except (KeyError, TypeError):  # a mode PIL itself does not describe: assume the worst
        bands, per_pixel = 4, per_pixel or 8
    return max(per_pixel, bands * ((max(1, sample_bits) + 7) // 8))


def decoded_bytes(mode: str, width: int, height: int, sample_bits: int = 8) -> int:
    """What ``DecodeLimits.max_decoded_bytes`` is compared with: width x height x bytes per pixel."""
    return width * height * bytes_per_pixel(mode, sample_bits)


def _stored_sample_bits(img: Image.Image, data: bytes) -> int:
    """Bits per sample as the file stores them, read from the header; 8 for formats that never
    store more (JPEG, WebP, GIF, BMP). Anything unreadable counts as 16, failing closed."""
    if img.format == "PNG":
        # PIL has already parsed the signature and IHDR: bit depth is byte 24.
        return data[24] if len(data) > 24 and data[12:16] == b"IHDR" else 16
    if img.format == "TIFF":
        bits = getattr(img, "tag_v2", {}).get(258, 1)  # BitsPerSample, one per sample or shared
        try:
            return int(max(bits)) if isinstance(bits, tuple) else int(bits)
        except (TypeError, ValueError):
            return 16
    return 8


def _reduce_factor(size: tuple[int, int], target_side: int | None) -> int:
    """The largest integer reduction that keeps the short side >= ``target_side``."""
    if not target_side or target_side <= 0:
        return 1
    return max(1, min(size) // target_side)


def _orientation(img: Image.Image) -> Image.Transpose | None:
    """The transpose EXIF (or XMP) orientation asks for; read before conversions drop the metadata."""
    value = img.getexif().get(0x0112)
    return _ORIENTATION.get(value) if isinstance(value, int) else None


def _row_strips(img: Image.Image, rows: int):  # noqa: ANN202 - generator of (first row, array)
    """The image as numpy arrays of ``rows`` rows each: bounded temporaries, never a full copy."""
    w, h = img.size
    for y0 in range(0, h, rows):
        yield y0, np.asarray(img.crop((0, y0, w, min(h, y0 + rows))))


def _finite_extrema(img: Image.Image) -> tuple[float, float]:
    """Min and max of a float image over its finite values (NaN and inf carry no level)."""
    lo, hi = img.getextrema()
    if np.isfinite(lo) and np.isfinite(hi):
        return float(lo), float(hi)
    lo, hi = np.inf, -np.inf
    for _, strip in _row_strips(img, max(1, _STRIP_BYTES // (4 * img.size[0]))):
        finite = strip[np.isfinite(strip)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return (lo, hi) if lo <= hi else (0.0, 0.0)


def _high_depth_to_l(img: Image.Image, target_side: int | None, notes: list[str]) -> Image.Image:
    """16-bit, 32-bit integer or float grey to 8-bit grey, box-reduced on the way when the
    caller needs fewer pixels.

    Strip by strip with integer shifts (float32 for ``F``): a float64 copy of a 40 Mpx image
    alone is 320 MB. The level mapping comes from the whole image before reducing, so a
    reduced decode has the same levels as a full one. 16-bit maps by ``v >> 8`` (65535 -> 255,
    32768 -> 128); ``I`` the same when it exceeds 255, else as is; ``F`` spans min..max.
    """
    mode = img.mode
    if mode == "F":
        lo, hi = _finite_extrema(img)
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        notes.append("float")

        def to8(a: np.ndarray) -> np.ndarray:
            levels = np.nan_to_num((a - np.float32(lo)) * np.float32(scale), nan=0.0, posinf=255.0, neginf=0.0)
            return np.clip(levels, 0, 255).astype(np.uint8)
    else:
        shift = 8 if mode != "I" or img.getextrema()[1] > 255 else 0
        notes.append("high_bit_depth")

        def to8(a: np.ndarray) -> np.ndarray:
            return np.clip(a >> shift, 0, 255).astype(np.uint8)

    w, h = img.size
    k = _reduce_factor(img.size, target_side)
    rows = max(k, _STRIP_BYTES // (4 * w) // k * k)  # a multiple of k: strips reduce independently
    out = np.empty((-(-h // k), -(-w // k)), np.uint8)
    for y0, strip in _row_strips(img, rows):
        grey = to8(strip)
        if k > 1:
            grey = np.asarray(Image.fromarray(grey).reduce(k))
        out[y0 // k: y0 // k + grey.shape[0]] = grey
    if k > 1:
        notes.append(f"reduced_{k}")
    return Image.fromarray(out)


def _to_8bit(img: Image.Image, target_side: int | None, notes: list[str]) -> Image.Image:
    """Bring every mode to one that ``Image.reduce`` can average: high bit depths to grey (reduced
    already when asked), palette to RGB(A) (averaging palette indices is meaningless), bilevel to grey."""
    mode = img.mode
    if mode in _HIGH_DEPTH_MODES:
        return _high_depth_to_l(img, target_side, notes)
    if mode == "P":
        notes.append("palette")
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if mode == "PA":
        return img.convert("RGBA")
    if mode == "1":
        return img.convert("L")
    return img


# 8-bit images are reduced only when at least this many times larger than needed: enough to
# bound the cost of huge PNGs, while images near the model's size (the corpus's 320 px
# references, most listing photos) decode exactly as the model was trained and measured.
MIN_REDUCE = 4


def _reduce(img: Image.Image, target_side: int | None, notes: list[str]) -> Image.Image:
    """Box-reduce by an integer factor so the short side stays >= ``target_side``: what ``draft``
    does for JPEG, done for every other format before colour conversion, so the alpha composite
    and RGB copies work on the small image. PIL averages LA/RGBA premultiplied."""
    k = _reduce_factor(img.size, target_side)
    if k < MIN_REDUCE:
        return img
    notes.append(f"reduced_{k}")
    return img.reduce(k)


def _to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    """Convert an 8-bit PIL mode to RGB; transparent pixels become white, like a listing page."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append("alpha")
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "CMYK":
        notes.append("cmyk")
    return img.convert("RGB")


def _rgb_array(img: Image.Image, notes: list[str]) -> np.ndarray:
    """HxWx3 uint8. Grey is widened by numpy: PIL's RGB pads to 4 bytes a pixel and is then copied."""
    if img.mode == "L":
        return np.repeat(np.asarray(img)[:, :, None], 3, axis=2)
    return np.asarray(_to_rgb(img, notes), dtype=np.uint8)


def decode_image(
    source: bytes | str | os.PathLike[str],
    target_side: int | None = None,
    limits: DecodeLimits = DecodeLimits(),
) -> DecodedImage:
    """Decode ``source`` (file path or bytes) into RGB.

    ``target_side``: the smallest side the caller needs; JPEGs are DCT-downscaled and other
    formats box-reduced by an integer factor so that both sides stay at or above it. ``None``
    decodes at full size.
    Refusals from the header, before any pixel is decoded: ``too_many_pixels`` (over
    ``limits.max_pixels``) and ``too_many_bytes`` (over ``limits.max_decoded_bytes``, see
    :func:`decoded_bytes`).
    Raises only :class:`ImageDecodeError`: a decoder bug on a hostile file must cost one
    image, never the batch around it.
    """
    try:
        return _decode(source, target_side, limits)
    except ImageDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted-input boundary, see docstring
        raise ImageDecodeError("decoder_error", f"{type(exc).__name__}: {exc}") from exc


def _decode(source: bytes | str | os.PathLike[str], target_side: int | None, limits: DecodeLimits) -> DecodedImage:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise ImageDecodeError("missing_file", str(path)) from exc
        except OSError as exc:
            raise ImageDecodeError("unreadable_file", f"{path}: {exc.strerror}") from exc
        if not path.is_file():
            raise ImageDecodeError("not_a_file", str(path))
        if size > limits.max_bytes:
            raise ImageDecodeError("file_too_large", f"{size} bytes > {limits.max_bytes}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageDecodeError("unreadable_file", f"{path}: {exc.strerror}") from exc
    if len(data) == 0:
        raise ImageDecodeError("empty_file", "0 bytes")
    if len(data) > limits.max_bytes:
        raise ImageDecodeError("file_too_large", f"{len(data)} bytes > {limits.max_bytes}")

    notes: list[str] = []
    with warnings.catch_warnings():
        # PIL warns (and at 2x raises) on large images using a process-global limit; we apply
        # our own explicit limit below instead of mutating PIL's global state.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=sorted(ALLOWED_FORMATS))
        except UnidentifiedImageError as exc:
            raise ImageDecodeError("not_an_image", "unrecognised or unsupported format") from exc
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError("too_many_pixels", str(exc)) from exc
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            reason = "truncated" if "truncated" in str(exc).lower() or isinstance(exc, EOFError) else "corrupt_header"
            raise ImageDecodeError(reason, str(exc)) from exc
        try:
            fmt = img.format or "unknown"
            w, h = img.size
            if w <= 0 or h <= 0:
                raise ImageDecodeError("corrupt_header", f"size {w}x{h}")
            if w * h > limits.max_pixels:
                raise ImageDecodeError("too_many_pixels", f"{w}x{h} > {limits.max_pixels} pixels")
            bits = _stored_sample_bits(img, data)
            need = decoded_bytes(img.mode, w, h, bits)
            if need > limits.max_decoded_bytes:
                raise ImageDecodeError("too_many_bytes", f"{w}x{h} {img.mode} at {bits} bits a sample is "
                                       f"{need} bytes decoded > {limits.max_decoded_bytes}")
            if min(w, h) < limits.min_side:
                raise ImageDecodeError("too_small", f"{w}x{h} < {limits.min_side} px")
            # is_animated only looks for a second frame; n_frames walks every frame (a 10 MB
            # GIF holds 430,000 of them), and only frame 0 is ever decoded.
            if getattr(img, "is_animated", False):
                img.seek(0)
                notes.append("animated_first_frame")
            if fmt in ("JPEG", "MPO") and target_side:
                # draft keeps both sides >= the requested size; picks scale 1/1..1/8.
                req = _draft_request(w, h, target_side)
                img.draft("RGB" if img.mode != "CMYK" else "CMYK", req)
                if img.size != (w, h):
                    notes.append(f"dct_scale_{w // max(img.size[0], 1)}")
            img.load()
            orientation = _orientation(img)
            # Each step replaces img, so the larger image before it is freed as it goes.
            img = _to_8bit(img, target_side, notes)
            img = _reduce(img, target_side, notes)
            if orientation is not None:
                img = img.transpose(orientation)
            arr = _rgb_array(img, notes)
        except ImageDecodeError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError("too_many_pixels", str(exc)) from exc
        except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as exc:
            msg = str(exc)
            reason = "truncated" if "truncated" in msg.lower() or isinstance(exc, EOFError) else "corrupt_data"
            raise ImageDecodeError(reason, msg) from exc
        except MemoryError as exc:
            raise ImageDecodeError("too_many_pixels", "out of memory while decoding") from exc
        finally:
            img.close()
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageDecodeError("corrupt_data", f"decoded to shape {arr.shape}")
    if float(arr[::4, ::4].std()) < limits.blank_std:
        raise ImageDecodeError("blank", "the image is a single flat colour")
    return DecodedImage(rgb=np.ascontiguousarray(arr), original_size=(w, h), format=fmt, notes=tuple(notes))


def _draft_request(w: int, h: int, target_side: int) -> tuple[int, int]:
    """Size to pass to ``draft`` so the *shorter* side stays >= ``target_side``."""
    short = min(w, h)
    if short <= target_side:
        return (w, h)
    scale = target_side / short
    return (max(1, int(w * scale + 0.999)), max(1, int(h * scale + 0.999)))
