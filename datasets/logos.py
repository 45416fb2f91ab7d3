"""Real brand marks from the ``simple-icons-pack`` registry package, rendered to RGBA arrays.

Why this module exists: every corpus, benchmark and demo needs genuine brand marks without
downloads. simple-icons ships ~3,400 single-path SVG marks (CC0 overall, a few icons under their
own licence) plus each brand's colour; ``resvg-py`` renders them with no system libraries.

Licences are honoured, not just copied: each :class:`LogoSource` keeps its licence string, and
icons whose licence forbids derivative works (``*-ND-*``) are excluded, because every corpus
family modifies the mark. The marks remain their owners' trademarks: test data only.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from brandguard.errors import InputError

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")

#: Licence of simple-icons itself; applies to every icon that carries no licence of its own.
DEFAULT_LICENSE = "CC0-1.0"
PACKAGE = "simple-icons-pack"

Color = str | tuple[int, int, int]


@dataclass(frozen=True)
class LogoSource:
    """One brand mark as shipped by simple-icons (``svg`` is a single-path 24x24 monochrome icon)."""

    slug: str
    title: str
    hex: str  # brand colour, "RRGGBB"
    svg: str
    source_url: str
    license: str  # the icon's own licence, else DEFAULT_LICENSE
    guidelines: str | None = None

    @property
    def rgb(self) -> tuple[int, int, int]:
        return parse_color(self.hex)

    @property
    def provenance(self) -> str:
        """Short human-readable origin, stored next to every reference derived from this mark."""
        return f"{PACKAGE} {package_version()} ({self.source_url})"


# --------------------------------------------------------------------------- licences

_NO_DERIVATIVES = re.compile(r"(^|-)ND(-|$)", re.IGNORECASE)


def license_allows_modification(license: str | None) -> bool:
    """False for licences that forbid derivative works (Creative Commons ``ND`` variants).

    Trademark-policy URLs are kept: they govern use of the mark, which we only use for testing,
    and the URL is recorded with every derived file.
    """
    if not license:
        return True
    return _NO_DERIVATIVES.search(license) is None


# --------------------------------------------------------------------------- loading


@functools.lru_cache(maxsize=1)
def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:  # pragma: no cover - package importable but unregistered
        return "unknown"


def _import_pack():  # noqa: ANN202 - module object
    try:
        import simple_icons_pack
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputError(
            "simple-icons-pack is not installed; install brandguard's `data` extra"
        ) from exc
    return simple_icons_pack


def _to_source(icon) -> LogoSource:  # noqa: ANN001 - simple_icons_pack.Icon
    return LogoSource(
        slug=icon.slug,
        title=icon.title,
        hex=icon.hex.upper(),
        svg=icon.svg,
        source_url=icon.source or "",
        license=icon.license or DEFAULT_LICENSE,
        guidelines=icon.guidelines,
    )


@functools.lru_cache(maxsize=2)
def _all_sources(include_restricted: bool) -> tuple[LogoSource, ...]:
    pack = _import_pack()
    out = []
    for name in dir(pack):
        if not name.startswith("SI_"):
            continue
        src = _to_source(getattr(pack, name))
        if include_restricted or license_allows_modification(src.license):
            out.append(src)
    out.sort(key=lambda s: s.slug)
    return tuple(out)


def load_logo_sources(include_restricted: bool = False) -> list[LogoSource]:
    """All usable marks, sorted by slug (stable order is what makes corpora reproducible).

    ``include_restricted=True`` also returns icons whose licence forbids modification.
    """
    return list(_all_sources(include_restricted))


def excluded_sources() -> list[LogoSource]:
    """Icons left out because their licence forbids derivative works (recorded in manifests)."""
    keep = {s.slug for s in _all_sources(False)}
    return [s for s in _all_sources(True) if s.slug not in keep]


def get_logo_source(slug: str) -> LogoSource:
    """The mark for ``slug``; raises InputError if unknown or excluded by its licence."""
    icon = _import_pack().get_icon(slug)
    if icon is None:
        raise InputError(f"unknown simple-icons slug: {slug!r}")
    src = _to_source(icon)
    if not license_allows_modification(src.license):
        raise InputError(f"icon {slug!r} is licensed {src.license}, which forbids modification")
    return src


# --------------------------------------------------------------------------- splits


def _unit_hash(text: str) -> float:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(slug: str, seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Split:
    """Deterministic brand split from a hash of (seed, slug).

    Hash-based rather than positional so that adding icons in a new package release never
    moves an existing brand from train into test.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise InputError(f"split fractions must be three non-negative numbers summing to 1: {fractions}")
    u = _unit_hash(f"brandguard-split:{seed}:{slug}")
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "val"
    return "test"


def sources_for_split(split: Split, seed: int = 0) -> list[LogoSource]:
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    return [s for s in load_logo_sources() if split_of(s.slug, seed) == split]


# --------------------------------------------------------------------------- rendering

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")
_VIEWBOX = re.compile(r'viewBox="([^"]*)"')
_COARSE_PX = 96  # square render used only to find the mark's bounding box
_MAX_SIDE_PX = 4096


def parse_color(color: Color) -> tuple[int, int, int]:
    """'RRGGBB', '#RRGGBB' or an (r, g, b) tuple -> (r, g, b)."""
    if isinstance(color, str):
        m = _HEX.match(color.strip())
        if not m:
            raise InputError(f"colour must be 'RRGGBB' or '#RRGGBB', got {color!r}")
        h = m.group(1)
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    if len(color) != 3 or not all(isinstance(c, (int, np.integer)) and 0 <= int(c) <= 255 for c in color):
        raise InputError(f"colour tuple must be three ints in 0..255, got {color!r}")
    return int(color[0]), int(color[1]), int(color[2])


def svg_with_fill(svg: str, rgb: tuple[int, int, int]) -> str:
    """Insert a fill on the root element; simple-icons paths inherit it (they carry no fill)."""
    fill = "#{:02x}{:02x}{:02x}".format(*rgb)
    if "<svg" not in svg:
        raise InputError("not an SVG document")
    return svg.replace("<svg", f'<svg fill="{fill}"', 1)


def _rasterize(svg: str, width: int, height: int) -> np.ndarray:
    import resvg_py

    try:
        png = resvg_py.svg_to_bytes(svg_string=svg, width=width, height=height)
    except ValueError as exc:
        raise InputError(f"SVG could not be rendered: {exc}") from exc
    bgra = cv2.imdecode(np.frombuffer(bytes(png), np.uint8), cv2.IMREAD_UNCHANGED)
    if bgra is None or bgra.ndim != 3 or bgra.shape[2] != 4:
        raise InputError("renderer returned an unexpected image")
    return cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA)


def _alpha_bbox(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(alpha > 8)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@functools.lru_cache(maxsize=8192)
def _mark_box(svg: str) -> tuple[float, float, float, float]:
    """The mark's bounding box in SVG user units (x, y, w, h), padded by one coarse pixel."""
    m = _VIEWBOX.search(svg)
    if not m:
        raise InputError("SVG has no viewBox")
    vx, vy, vw, vh = (float(v) for v in m.group(1).replace(",", " ").split())
    coarse = _rasterize(svg, _COARSE_PX, _COARSE_PX)
    box = _alpha_bbox(coarse[..., 3])
    if box is None:
        raise InputError("SVG renders to an empty image")
    sx, sy = vw / _COARSE_PX, vh / _COARSE_PX
    x0, y0 = vx + (box[0] - 1) * sx, vy + (box[1] - 1) * sy
    x1, y1 = vx + (box[2] + 1) * sx, vy + (box[3] + 1) * sy
    return x0, y0, x1 - x0, y1 - y0


@functools.lru_cache(maxsize=2048)
def _render_cached(svg: str, height_px: int, rgb: tuple[int, int, int]) -> np.ndarray:
    x, y, w, h = _mark_box(svg)
    # Render only the mark's box so pixels go to the mark, then crop to the exact alpha box.
    cropped_svg = _VIEWBOX.sub(f'viewBox="{x:.4f} {y:.4f} {w:.4f} {h:.4f}"', svg, count=1)
    cropped_svg = cropped_svg.replace("<svg", '<svg preserveAspectRatio="none"', 1)
    scale = (height_px + 4) / h
    width_px = int(min(_MAX_SIDE_PX, max(1, round(w * scale))))
    rgba = _rasterize(svg_with_fill(cropped_svg, rgb), width_px, height_px + 4)
    box = _alpha_bbox(rgba[..., 3])
    if box is None:
        raise InputError("SVG renders to an empty image")
    rgba = rgba[box[1] : box[3], box[0] : box[2]]
    if rgba.shape[0] != height_px:
        new_w = max(1, round(rgba.shape[1] * height_px / rgba.shape[0]))
        rgba = cv2.resize(rgba, (new_w, height_px), interpolation=cv2.INTER_AREA)
    # Colour is uniform by construction; re-assert it so resampling never tints edges.
    rgba[..., :3] = rgb
    rgba.setflags(write=False)
    return rgba


def render_logo(
    source: LogoSource, height_px: int, color: Color | None = None, cache_dir: Path | None = None
) -> np.ndarray:
    """Render ``source`` as an HxWx4 uint8 RGBA array exactly ``height_px`` tall.

    The mark is cropped to its alpha bounding box, so W/H is the mark's own aspect ratio.
    ``color`` defaults to the brand colour. Renders are memoised in-process; with ``cache_dir``
    they are also kept as PNG files across processes (useful when a corpus is rebuilt).
    """
    if not isinstance(height_px, (int, np.integer)) or not 4 <= int(height_px) <= _MAX_SIDE_PX:
        raise InputError(f"height_px must be an int in 4..{_MAX_SIDE_PX}, got {height_px!r}")
    rgb = parse_color(source.hex if color is None else color)
    height_px = int(height_px)
    if cache_dir is not None:
        key = hashlib.sha256(f"{source.svg}|{height_px}|{rgb}".encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"{source.slug}-{height_px}-{key}.png"
        if path.exists():
            bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if bgra is not None and bgra.ndim == 3 and bgra.shape[2] == 4:
                return cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA)
        rgba = _render_cached(source.svg, height_px, rgb).copy()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.png")
        cv2.imwrite(str(tmp), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
        tmp.replace(path)
        return rgba
    return _render_cached(source.svg, height_px, rgb).copy()


def luminance(rgb: tuple[int, int, int]) -> float:
    """Relative luminance in 0..1 (used to pick a contrasting background for pale marks)."""
    r, g, b = (c / 255.0 for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b
