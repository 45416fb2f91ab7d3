"""Catalogue and reference readers: JSONL, CSV, Parquet, or a folder of images.

Every reader yields the same typed rows, so the scanner and the indexer never care where
data came from. Image paths in a file are resolved relative to that file. A malformed row
is not dropped: it is yielded with ``reason`` and ``error`` set, and becomes an
``inconclusive`` result. A problem with the whole input (no listings, not the format its name
says, a required column missing or of the wrong type) raises :class:`InputError`.

Catalogues are untrusted: a row may name any path. Listing images must lie under a root
folder (by default the catalogue's own folder) and are read with :func:`read_image_file`,
which opens regular files only and never reads more than the size limit.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, TextIO

from brandguard.errors import ImageDecodeError, InputError

CATALOGUE_SUFFIXES = (".jsonl", ".csv", ".parquet")

# Every image file name the project reads (catalogue folders, corpora, photo sets), in one place.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

# A catalogue row is a few hundred bytes; a longer line is refused as a bad row rather than
# read whole into memory (a file of one endless line would otherwise exhaust it).
MAX_LINE_BYTES = 1 << 20

# Columns a catalogue table (CSV header, Parquet schema) must have.
REQUIRED_COLUMNS = ("listing_id", "image")
LISTING_FIELDS = ("listing_id", "image", "seller_id", "title", "price", "brand_hint")
REFERENCE_FIELDS = ("reference_id", "brand", "path", "image", "sku", "kind")


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
    """One listing image to check. ``reason`` (a short code) and ``error`` (its detail) say
    why the row itself is unusable; both are None for a usable row."""

    listing_id: str
    image: str  # absolute path
    seller_id: str = ""
    title: str = ""
    price: float | None = None
    brand_hint: str = ""
    error: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ReferenceRow:
    """One genuine brand image to register."""

    reference_id: str
    brand: str
    path: str  # absolute path
    sku: str = ""
    kind: str = ""


class RowError(InputError):
    """One catalogue row is unusable (``reason``: short code, ``detail``: why). The reader turns
    it into an error row; it never escapes :func:`read_catalogue`."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


# --------------------------------------------------------------------------- image files
@dataclass(frozen=True)
class ImageFile:
    """A listing image's bytes with the size and mtime of the very file they were read from."""

    data: bytes
    size: int
    mtime_ns: int


def confinement_root(source: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None,
                     allow_absolute: bool = False) -> str | None:
    """The folder every listing image of ``source`` must lie under, or None when any path is
    allowed: ``image_root`` if given, else the catalogue folder itself or the file's folder."""
    if allow_absolute:
        return None
    src = Path(source)
    root = Path(image_root) if image_root is not None else (src if src.is_dir() else src.parent)
    return os.path.normpath(os.path.abspath(root))


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@functools.lru_cache(maxsize=16)
def _real_root(root: str) -> str:
    return os.path.realpath(root)


def read_image_file(path: str, max_bytes: int, root: str | None = None) -> ImageFile:
    """The bytes of the listing image at ``path``. Raises :class:`ImageDecodeError`.

    Hostile rows name devices (``/dev/zero`` reads forever), FIFOs (``open`` blocks forever),
    folders, or files outside the catalogue (``/etc/shadow``, or a symlink to it). So: the real
    path (symlinks resolved) must lie under ``root`` (unless None); only a regular file is
    opened (checked with ``stat`` before, and ``fstat`` after a non-blocking, no-follow open);
    its size is checked before reading, and the read stops past ``max_bytes`` even if the
    file grows meanwhile.
    """
    if "\0" in path:
        raise ImageDecodeError("bad_row", "image path contains a NUL byte")
    real = os.path.realpath(path)
    if root is not None and not _within(real, _real_root(root)):
        raise ImageDecodeError("path_outside_root", f"{path} is not under {root}")
    try:
        st = os.stat(real)
    except FileNotFoundError as exc:
        raise ImageDecodeError("missing_file", path) from exc
    except OSError as exc:
        raise ImageDecodeError("unreadable_file", f"{path}: {exc.strerror}") from exc
    _check_regular(path, st, max_bytes)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except FileNotFoundError as exc:
        raise ImageDecodeError("missing_file", path) from exc
    except OSError as exc:  # ELOOP: the path became a symlink since it was resolved
        raise ImageDecodeError("unreadable_file", f"{path}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        _check_regular(path, st, max_bytes)
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise ImageDecodeError("file_too_large", f"more than {max_bytes} bytes (the file grew while read)")
    except OSError as exc:
        raise ImageDecodeError("unreadable_file", f"{path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    return ImageFile(b"".join(chunks), st.st_size, st.st_mtime_ns)


def _check_regular(path: str, st: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise ImageDecodeError("not_a_regular_file", f"{path} is {kind}")
    if st.st_size > max_bytes:
        raise ImageDecodeError("file_too_large", f"{st.st_size} bytes > {max_bytes}")


# --------------------------------------------------------------------------- records
# (row number, record, None) for a parsed row; (row number, None, why) for one that cannot be.
_Record = tuple[int, dict[str, Any] | None, RowError | None]


def _bounded_lines(f: BinaryIO | TextIO, limit: int, overlong: set[int] | None = None) -> Iterator[Any]:
    """The lines of ``f``, none longer than ``limit``: a longer line is read through to its end
    in pieces and given as None, or (when ``overlong`` collects its line number) as an empty
    line, so a parser fed these lines keeps its line count."""
    n = 0
    while True:
        line = f.readline(limit + 1)
        if not line:
            return
        n += 1
        ends = (b"\n",) if isinstance(line, bytes) else ("\n", "\r")  # text mode: newline="" keeps \r
        if len(line) > limit and not line.endswith(ends):
            while True:
                rest = f.readline(1 << 16)
                if not rest or rest.endswith(ends):
                    break
            if overlong is None:
                yield None
            else:
                overlong.add(n)
                yield ends[0]
            continue
        yield line


def _json_records(path: Path) -> Iterator[_Record]:
    with _open(path, "rb") as f:
        for n, raw in enumerate(_bounded_lines(f, MAX_LINE_BYTES), start=1):
            if raw is None:
                yield n, None, RowError("bad_row", f"line longer than {MAX_LINE_BYTES} bytes")
                continue
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield n, None, RowError("bad_row", f"line is not valid UTF-8 (byte {raw[exc.start]:#04x} "
                                                   f"at column {exc.start + 1})")
                continue
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, None, RowError("bad_row", f"invalid JSON: {exc.msg}")
                continue
            except ValueError as exc:  # a number beyond the int-string conversion limit
                yield n, None, RowError("bad_row", f"invalid JSON: {str(exc).split(';')[0]}")
                continue
            except RecursionError:
                yield n, None, RowError("bad_row", "invalid JSON: nested too deeply")
                continue
            if isinstance(rec, dict):
                yield n, rec, None
            else:
                yield n, None, RowError("bad_row", "row is not a JSON object")


def _csv_header(reader: Iterator[list[str]], path: Path) -> list[str]:
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{path}: empty CSV file (no header, no listings)") from None
    except csv.Error as exc:
        raise InputError(f"{path}: unreadable CSV header: {exc}") from None
    names = [h.strip() for h in header]
    if any(not _valid_text(h) for h in names):
        raise InputError(f"{path}: the CSV header is not valid UTF-8")
    return names


def _csv_records(path: Path) -> tuple[list[str], Iterator[_Record]]:
    f = _open(path, "r", newline="", encoding="utf-8-sig", errors="surrogateescape")
    overlong: set[int] = set()
    reader = csv.reader(_bounded_lines(f, MAX_LINE_BYTES, overlong))
    try:
        header = _csv_header(reader, path)
    except BaseException:
        f.close()
        raise

    def rows() -> Iterator[_Record]:
        with f:
            while True:
                start = reader.line_num + 1
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    yield start, None, RowError("bad_row", f"CSV: {exc}")
                    continue
                if any(start <= k <= reader.line_num for k in overlong):
                    yield start, None, RowError("bad_row", f"line longer than {MAX_LINE_BYTES} characters")
                elif fields:  # an empty list is a blank line
                    yield start, dict(zip(header, fields)), None

    return header, rows()


def _parquet_records(path: Path, fields: tuple[str, ...]) -> tuple[dict[str, Any], Iterator[_Record]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({_one_line(exc)})") from None

    def rows() -> Iterator[_Record]:
        n = 0
        try:
            for batch in pf.iter_batches(batch_size=4096, columns=[c for c in fields if c in schema.names]):
                for rec in batch.to_pylist():
                    n += 1
                    yield n, rec, None
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: unreadable Parquet data after row {n} ({_one_line(exc)})") from None

    return {f.name: f.type for f in schema}, rows()


def _one_line(exc: BaseException) -> str:
    """A library's error message on one line (the CLI prints exactly one)."""
    return " ".join(str(exc).split())


def _open(path: Path, mode: str, **kw: Any):  # noqa: ANN202
    """Open a catalogue file; a failure is the whole input's problem, reported in one line."""
    try:
        return open(path, mode, **kw)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


def _records(path: Path, fields: tuple[str, ...]) -> tuple[dict[str, Any] | None, Iterator[_Record]]:
    """The columns (name -> Arrow type, or None for CSV text; None for JSONL, which has no
    header) and (row number, record or None, its error) for each row of a JSONL/CSV/Parquet file.
    Of a Parquet file only the columns named in ``fields`` are read."""
    suffix = path.suffix.lower()
    if suffix not in CATALOGUE_SUFFIXES:
        raise InputError(f"{path}: unsupported catalogue type (use {', '.join(CATALOGUE_SUFFIXES)} or a folder)")
    if not path.is_file():  # a FIFO or a device would block or never end
        raise InputError(f"{path} is not a regular file")
    if suffix == ".jsonl":
        return None, _json_records(path)
    if suffix == ".csv":
        header, rows = _csv_records(path)
        return dict.fromkeys(header), rows
    return _parquet_records(path, fields)


# --------------------------------------------------------------------------- fields
def _valid_text(s: str) -> bool:
    """No lone surrogates (invalid UTF-8 read with surrogateescape, or a JSON ``\\ud800``): such
    a string cannot be written to Parquet, printed or stored."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _describe(value: Any) -> str:
    """A short, safe description of a bad value (a huge integer is never converted to text)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    text = repr(value) if _valid_text(repr(value)) else ascii(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(rec: dict[str, Any], name: str) -> str:
    """Field ``name`` as text: text or a number, valid Unicode, else :class:`RowError`."""
    value = rec.get(name)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RowError("bad_row", f"{name} must be text or a number, not {type(value).__name__}")
    if not isinstance(value, str):
        value = str(value)
    if not _valid_text(value):
        raise RowError("bad_row", f"{name} is not valid UTF-8 text")
    return value


def _price(value: Any) -> tuple[float | None, str | None]:
    if value is None or value == "":
        return None, None
    if isinstance(value, bool):
        return None, f"bad price {value!r}"
    try:
        price = float(value)
    except (TypeError, ValueError, OverflowError):
        return None, f"bad price {_describe(value)}"
    if math.isnan(price) or math.isinf(price) or price < 0:
        return None, f"bad price {_describe(value)}"
    return price, None


def _resolve(base: Path, image: str) -> str:
    p = Path(image)
    return str(p if p.is_absolute() else (base / p)).replace("\\", "/")


def _listing_path(base: Path, image: str, root: str | None) -> str:
    """The absolute path of a row's image; :class:`RowError` if it leaves ``root``. Lexical
    here (cheap, per row); the reader checks the real path again when it opens the file."""
    if "\0" in image:
        raise RowError("bad_row", "image path contains a NUL byte")
    path = os.path.normpath(os.path.abspath(_resolve(base, image)))
    if root is not None and not _within(path, root):
        raise RowError("path_outside_root", f"{image} is not under {root}")
    return path


# --------------------------------------------------------------------------- catalogue
def _type_ok(column: str, dtype: Any) -> bool:
    """Whether a Parquet column's Arrow type can hold that catalogue field."""
    import pyarrow.types as t

    if t.is_dictionary(dtype):
        dtype = dtype.value_type
    text = t.is_string(dtype) or t.is_large_string(dtype) or t.is_null(dtype)
    if column in ("listing_id", "seller_id"):
        return text or t.is_integer(dtype)
    if column == "price":
        return text or t.is_integer(dtype) or t.is_floating(dtype) or t.is_decimal(dtype)
    return text  # image, title, brand_hint


def _check_columns(src: Path, columns: dict[str, Any]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InputError(f"{src}: no {' or '.join(missing)} column (columns: {', '.join(map(str, columns)) or 'none'})")
    for name in LISTING_FIELDS:
        dtype = columns.get(name)
        if dtype is not None and not _type_ok(name, dtype):
            raise InputError(f"{src}: column {name} has type {dtype}, which cannot hold a {name}")


def read_catalogue(source: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None,
                   allow_absolute: bool = False) -> Iterator[ListingRow]:
    """Listings from a JSONL/CSV/Parquet file (``listing_id``, ``image`` required) or a folder.

    For a folder, the listing id is the image's path relative to it without extension. Images
    must lie under :func:`confinement_root` (a row naming another path becomes a
    ``path_outside_root`` error row). Raises :class:`InputError` for a problem with the whole
    input, including one that holds no listing at all.
    """
    src = Path(source)
    root = confinement_root(src, image_root, allow_absolute)
    count = 0
    if src.is_dir():
        for ident, path in list_images(src):
            count += 1
            yield ListingRow(listing_id=ident, image=str(path))
    elif not src.exists():
        raise InputError(f"catalogue {src} does not exist")
    else:
        columns, records = _records(src, LISTING_FIELDS)
        if columns is not None:
            _check_columns(src, columns)
        try:
            for row in _listings(src, records, root):
                count += 1
                yield row
        except OSError as exc:
            raise InputError(f"cannot read {src}: {exc.strerror or exc}") from None
    if count == 0:
        raise InputError(f"catalogue {src} holds no listings")


def _listings(src: Path, records: Iterable[_Record],
              root: str | None) -> Iterator[ListingRow]:
    base = src.parent
    seen: set[str] = set()
    for n, rec, err in records:
        if rec is None:
            assert err is not None
            yield ListingRow(listing_id=f"{src.name}:{n}", image="", error=err.detail, reason=err.reason)
            continue
        try:
            lid = _text(rec, "listing_id").strip()
        except RowError as exc:
            yield ListingRow(listing_id=f"{src.name}:{n}", image="", error=exc.detail, reason=exc.reason)
            continue
        if not lid:
            yield ListingRow(listing_id=f"{src.name}:{n}", image="", error="missing listing_id", reason="bad_row")
            continue
        if lid in seen:
            yield ListingRow(listing_id=f"{lid}#dup{n}", image="", error=f"duplicate listing_id {lid!r}",
                             reason="bad_row")
            continue
        seen.add(lid)
        try:
            image = _text(rec, "image").strip()
            seller_id, title, brand_hint = _text(rec, "seller_id"), _text(rec, "title"), _text(rec, "brand_hint")
        except RowError as exc:
            yield ListingRow(listing_id=lid, image="", error=exc.detail, reason=exc.reason)
            continue
        if not image:
            yield ListingRow(listing_id=lid, image="", seller_id=seller_id, title=title, brand_hint=brand_hint,
                             error="missing image", reason="missing_image")
            continue
        try:
            path = _listing_path(base, image, root)
        except RowError as exc:
            yield ListingRow(listing_id=lid, image=image, seller_id=seller_id, title=title, brand_hint=brand_hint,
                             error=exc.detail, reason=exc.reason)
            continue
        price, perr = _price(rec.get("price"))
        yield ListingRow(listing_id=lid, image=path, seller_id=seller_id, title=title, price=price,
                         brand_hint=brand_hint, error=perr, reason="bad_price" if perr else None)


def folder_kinds(folder: str | os.PathLike[str]) -> dict[str, str]:
    """Reference id -> kind for a folder of references, from the CSV named like it beside it
    (``references/`` and ``references.csv`` with ``reference_id`` and ``kind`` columns, as a
    benchmark corpus split has them); empty when there is none. The kind matters to the shape
    stage, which does not stretch a product photo's silhouette (``vision/shapes.py``)."""
    src = Path(folder)
    table = src.parent / f"{src.name}.csv"
    if not table.is_file():
        return {}
    try:
        with open(table, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"reference_id", "kind"} <= set(reader.fieldnames or ()):
                raise InputError(f"{table}: a references table beside {src} needs reference_id and kind columns")
            return {row["reference_id"]: (row["kind"] or "").strip() for row in reader if row.get("reference_id")}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{table}: unreadable references table ({exc})") from exc


def read_references(source: str | os.PathLike[str]) -> list[ReferenceRow]:
    """References from a JSONL/CSV/Parquet file (``brand`` and ``path`` or ``image`` required;
    ``reference_id`` defaults to the path without extension) or a folder laid out
    ``<brand>/<name>.png`` (brand = first folder, id = relative path without extension; kind
    from :func:`folder_kinds`, else ``image``)."""
    src = Path(source)
    rows: list[ReferenceRow] = []
    if src.is_dir():
        kinds = folder_kinds(src)
        for ident, path in list_images(src):
            parts = ident.split("/")
            if len(parts) < 2:
                raise InputError(f"reference {path} must sit in a <brand>/ folder under {src}")
            rows.append(ReferenceRow(reference_id=ident, brand=parts[0], path=str(path),
                                     kind=kinds.get(ident) or "image"))
        return rows
    if not src.is_file():
        raise InputError(f"references {src} do not exist")
    _, records = _records(src, REFERENCE_FIELDS)
    for n, rec, err in records:
        if rec is None:
            raise InputError(f"{src}:{n}: {err.detail if err else 'unreadable row'}")
        try:
            path = _text(rec, "path").strip() or _text(rec, "image").strip()
            brand = _text(rec, "brand").strip()
            ref_id = _text(rec, "reference_id") or Path(path).with_suffix("").as_posix()
            sku, kind = _text(rec, "sku"), _text(rec, "kind")
        except RowError as exc:
            raise InputError(f"{src}:{n}: {exc.detail}") from None
        if not path or not brand:
            raise InputError(f"{src}:{n}: a reference needs brand and path")
        rows.append(ReferenceRow(reference_id=ref_id, brand=brand, path=_resolve(src.parent, path), sku=sku,
                                 kind=kind))
    ids = [r.reference_id for r in rows]
    if len(set(ids)) != len(ids):
        raise InputError(f"{src}: reference ids are not unique")
    return rows


__all__ = ["ListingRow", "ReferenceRow", "RowError", "ImageFile", "read_catalogue", "read_references", "folder_kinds",
           "read_image_file", "confinement_root", "IMAGE_EXTENSIONS", "MAX_LINE_BYTES", "list_images"]
