"""Catalogue and reference readers: JSONL, CSV, Parquet, or a folder of images.

Every reader yields the same typed rows, so the scanner and the indexer never care where
data came from. Image paths in a file are resolved relative to that file. A malformed row
is not dropped: it is yielded with ``error`` set, and becomes an ``inconclusive`` result.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from brandguard.errors import InputError

CATALOGUE_SUFFIXES = (".jsonl", ".csv", ".parquet")

# Every image file name the project reads (catalogue folders, corpora, photo sets), in one place.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def list_images(folder: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """(id, path) for every image under ``folder``; id = relative path without extension.

    Sorted for determinism; two files that differ only by extension would share an id,
    which is refused rather than silently dropping one.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder")
    out: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
            ident = p.relative_to(root).with_suffix("").as_posix()
            if ident in out:
                raise InputError(f"two images share the id {ident!r}: {out[ident].name} and {p.name}")
            out[ident] = p
    return sorted(out.items())


@dataclass(frozen=True)
class ListingRow:
    """One listing image to check. ``error`` says why the row itself is unusable."""

    listing_id: str
    image: str  # absolute path
    seller_id: str = ""
    title: str = ""
    price: float | None = None
    brand_hint: str = ""
    error: str | None = None


@dataclass(frozen=True)
class ReferenceRow:
    """One genuine brand image to register."""

    reference_id: str
    brand: str
    path: str  # absolute path
    sku: str = ""
    kind: str = ""


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """(row number, record or None, parse error) for each row of a JSONL/CSV/Parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield n, None, f"invalid JSON: {exc.msg}"
                    continue
                yield (n, rec, None) if isinstance(rec, dict) else (n, None, "row is not a JSON object")
    elif suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            for n, rec in enumerate(csv.DictReader(f), start=2):
                yield n, dict(rec), None
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        n = 0
        for batch in pf.iter_batches(batch_size=4096):
            for rec in batch.to_pylist():
                n += 1
                yield n, rec, None
    else:
        raise InputError(f"{path}: unsupported catalogue type (use {', '.join(CATALOGUE_SUFFIXES)} or a folder)")


def _resolve(base: Path, image: str) -> str:
    p = Path(image)
    return str(p if p.is_absolute() else (base / p)).replace("\\", "/")


def _price(value: Any) -> tuple[float | None, str | None]:
    if value is None or value == "":
        return None, None
    try:
        price = float(value)
    except (TypeError, ValueError):
        return None, f"bad price {value!r}"
    if math.isnan(price) or math.isinf(price) or price < 0:
        return None, f"bad price {value!r}"
    return price, None


def read_catalogue(source: str | os.PathLike[str]) -> Iterator[ListingRow]:
    """Listings from a JSONL/CSV/Parquet file (``listing_id``, ``image`` required) or a folder.

    For a folder, the listing id is the image's path relative to it without extension.
    """
    src = Path(source)
    if src.is_dir():
        for ident, path in list_images(src):
            yield ListingRow(listing_id=ident, image=str(path))
        return
    if not src.is_file():
        raise InputError(f"catalogue {src} does not exist")
    base = src.parent
    seen: set[str] = set()
    for n, rec, err in _records(src):
        if rec is None:
            yield ListingRow(listing_id=f"{src.name}:{n}", image="", error=err)
            continue
        lid = str(rec.get("listing_id") or "").strip()
        image = str(rec.get("image") or "").strip()
        if not lid:
            yield ListingRow(listing_id=f"{src.name}:{n}", image=image, error="missing listing_id")
            continue
        if lid in seen:
            yield ListingRow(listing_id=f"{lid}#dup{n}", image=image, error=f"duplicate listing_id {lid!r}")
            continue
        seen.add(lid)
        price, perr = _price(rec.get("price"))
        error = None if image else "missing image"
        yield ListingRow(
            listing_id=lid,
            image=_resolve(base, image) if image else "",
            seller_id=str(rec.get("seller_id") or ""),
            title=str(rec.get("title") or ""),
            price=price,
            brand_hint=str(rec.get("brand_hint") or ""),
            error=error or perr,
        )


def read_references(source: str | os.PathLike[str]) -> list[ReferenceRow]:
    """References from a JSONL/CSV/Parquet file (``brand`` and ``path`` or ``image`` required;
    ``reference_id`` defaults to the path without extension) or a folder laid out
    ``<brand>/<name>.png`` (brand = first folder, id = relative path without extension)."""
    src = Path(source)
    rows: list[ReferenceRow] = []
    if src.is_dir():
        for ident, path in list_images(src):
            parts = ident.split("/")
            if len(parts) < 2:
                raise InputError(f"reference {path} must sit in a <brand>/ folder under {src}")
            rows.append(ReferenceRow(reference_id=ident, brand=parts[0], path=str(path), kind="image"))
        return rows
    if not src.is_file():
        raise InputError(f"references {src} do not exist")
    for n, rec, err in _records(src):
        if rec is None:
            raise InputError(f"{src}:{n}: {err}")
        path = str(rec.get("path") or rec.get("image") or "").strip()
        brand = str(rec.get("brand") or "").strip()
        if not path or not brand:
            raise InputError(f"{src}:{n}: a reference needs brand and path")
        ref_id = str(rec.get("reference_id") or Path(path).with_suffix("").as_posix())
        rows.append(ReferenceRow(reference_id=ref_id, brand=brand, path=_resolve(src.parent, path),
                                 sku=str(rec.get("sku") or ""), kind=str(rec.get("kind") or "")))
    ids = [r.reference_id for r in rows]
    if len(set(ids)) != len(ids):
        raise InputError(f"{src}: reference ids are not unique")
    return rows


__all__ = ["ListingRow", "ReferenceRow", "read_catalogue", "read_references", "IMAGE_EXTENSIONS", "list_images"]
