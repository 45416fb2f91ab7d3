"""Decoding uploads off the event loop: two bounded lanes, and a per-request budget from headers.

What an image costs to decode is known from its header before any pixel is decoded (PIL
``Image.open`` reads only the header): width x height x bytes per pixel of the stored mode,
plus the 8-bit RGB copy every image becomes. A 6300 x 6300 16-bit greyscale PNG is only
~90 KB on the wire and passes the pixel limit, yet declares ~200 MB and takes seconds of CPU.

- **Budget**: a request's images are admitted in order while their declared bytes fit
  ``Settings.decode_budget_bytes``; the others are answered ``inconclusive``
  (``decode_budget``) without being decoded.
- **Lanes**: images declaring more than ``large_decode_bytes`` decode in their own lane
  (``large_decode_threads``, one by default), ordinary ones in the ``decode_threads`` lane,
  so a flood of large images holds one thread's worth of memory and CPU and never queues
  ahead of ordinary checks.

Both lanes are plain ``ThreadPoolExecutor``\\ s with explicit sizes; a request that gives up
(timeout) cancels its jobs that have not started.
"""

from __future__ import annotations

import asyncio
import io
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

from brandguard.errors import ImageDecodeError
from brandguard.serve.settings import Settings

T = TypeVar("T")
BUDGET_REASON = "decode_budget"


def declared_decoded_bytes(data: bytes, max_pixels: int) -> int:
    """Bytes decoding ``data`` allocates, from its header alone (no pixel is decoded).

    0 when the header is unreadable or over ``max_pixels``: the decoder refuses those from the
    header too, before decoding anything.
    """
    import numpy as np
    from PIL import Image, ImageMode

    from brandguard.vision.decode import ALLOWED_FORMATS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=sorted(ALLOWED_FORMATS)) as img:
                (w, h), mode = img.size, img.mode
        except Exception:  # noqa: BLE001 - untrusted header: the decoder itself will say what is wrong
            return 0
    if w <= 0 or h <= 0 or w * h > max_pixels:
        return 0
    try:
        m = ImageMode.getmode(mode)
        per_pixel = len(m.bands) * np.dtype(m.typestr).itemsize
    except (KeyError, TypeError, ValueError):
        per_pixel = 4
    return w * h * (per_pixel + (0 if mode == "RGB" else 3))


def over_budget(costs: Sequence[int], budget: int) -> list[ImageDecodeError | None]:
    """Per image, in order: None when it fits what is left of ``budget``, else the error to answer with."""
    used, out = 0, []
    for cost in costs:
        if used + cost > budget:
            out.append(ImageDecodeError(BUDGET_REASON, f"the image declares {cost} decoded bytes; this request's "
                                                       f"images before it already use {used} of its {budget}"))
        else:
            used += cost
            out.append(None)
    return out


class DecodeLanes:
    """The ordinary and the large-image decode threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ordinary = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="brandguard-decode")
        self.large = ThreadPoolExecutor(settings.large_decode_threads, thread_name_prefix="brandguard-decode-large")
        self.large_jobs = 0  # submitted to the large lane and not finished; event-loop thread only

    def is_large(self, cost: int) -> bool:
        return cost > self.settings.large_decode_bytes

    async def run(self, cost: int, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the lane for an image declaring ``cost`` bytes (cancelled if not started)."""
        large = self.is_large(cost)
        loop = asyncio.get_running_loop()
        if large:
            self.large_jobs += 1
        try:
            return await loop.run_in_executor(self.large if large else self.ordinary, fn, *args)
        finally:
            if large:
                self.large_jobs -= 1

    async def costs(self, images: Sequence[bytes]) -> list[int]:
        """Declared decoded bytes of each image (headers only; one job in the ordinary lane)."""
        limit = self.settings.max_pixels
        return await asyncio.get_running_loop().run_in_executor(
            self.ordinary, lambda: [declared_decoded_bytes(data, limit) for data in images])

    def shutdown(self) -> None:
        """Drop queued jobs; running decodes finish on their own (they cannot be interrupted)."""
        self.ordinary.shutdown(wait=False, cancel_futures=True)
        self.large.shutdown(wait=False, cancel_futures=True)
