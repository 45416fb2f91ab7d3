"""Small helpers shared by tests (kept apart from conftest so tests can import them)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def encode(img, fmt: str, **kw) -> bytes:
    pil = Image.fromarray(img) if isinstance(img, np.ndarray) else img
    buf = io.BytesIO()
    pil.save(buf, fmt, **kw)
    return buf.getvalue()


def blob_image(seed: int, h: int = 240, w: int = 320) -> np.ndarray:
    """A distinctive smooth random colour image (stands in for a reference photo)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def save(img: np.ndarray, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, **kw)
    return path


def fresh_python(code: str) -> str:
    """Run ``code`` in a new interpreter (clean ``sys.modules``); its stdout, stripped. Fails on error."""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()
