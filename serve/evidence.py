"""Evidence packages: one zip per lead or complaint that a brand can hand to a marketplace or a court.

The zip holds the files exactly as stored (the listing upload's original bytes, the registered
reference images), the verdict, the model and index versions and timestamps, and a
``manifest.json`` with the sha256 and size of every other file, so anyone can check later that
nothing was altered. Building it is plain file I/O, run in a worker thread by the endpoint.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
_COMPRESSED_IMAGES = (".jpg", ".jpeg", ".png", ".webp", ".gif")


@dataclass
class EvidencePackage:
    """Files to put in the zip (name → bytes) plus notes about what could not be included."""

    subject: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    missing: list[dict[str, str]] = field(default_factory=list)

    def add_json(self, name: str, obj: Any) -> None:
        self.files[name] = (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()

    def add_file(self, name: str, path: str | Path | None, what: str) -> bool:
        """Add a stored file under ``name``; a missing one is noted in the manifest instead."""
        p = Path(path) if path else None
        if p is None or not p.is_file():
            self.missing.append({"file": name, "what": what, "reason": "not stored" if p is None else "file missing"})
            return False
        self.files[name] = p.read_bytes()
        return True

    def manifest(self) -> dict[str, Any]:
        return {
            "format": "brandguard-evidence/1",
            "subject": self.subject,
            "exported_at": time.time(),
            "hash": "sha256",
            "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                      for name, data in sorted(self.files.items())},
            "missing": self.missing,
        }

    def to_zip(self) -> bytes:
        """The zip bytes. Images are stored as-is (already compressed), text is deflated."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in sorted(self.files.items()):
                method = zipfile.ZIP_STORED if name.lower().endswith(_COMPRESSED_IMAGES) else zipfile.ZIP_DEFLATED
                zf.writestr(_entry(name), data, compress_type=method)
            zf.writestr(_entry(MANIFEST), json.dumps(self.manifest(), indent=2, sort_keys=True) + "\n",
                        compress_type=zipfile.ZIP_DEFLATED)
        return buf.getvalue()


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=time.gmtime()[:6])
    info.external_attr = 0o644 << 16
    return info


def safe_name(text: str) -> str:
    """A reference id as a zip member name (no directories, no dot-dot)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "reference"
