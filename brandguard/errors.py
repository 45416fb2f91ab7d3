"""Typed exceptions raised at brandguard's input boundaries.

Callers catch these, never bare ``Exception``: a bad image becomes an ``inconclusive``
verdict with the error's ``reason``, a bad artifact stops the program with a clear message.
"""

from __future__ import annotations


class BrandguardError(Exception):
    """Base class of every error brandguard raises on purpose."""


class ImageDecodeError(BrandguardError):
    """An image could not be judged. ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)

    def __reduce__(self):  # noqa: ANN204 - pickled whole across process boundaries (decode workers)
        return (type(self), (self.reason, self.detail))


class BundleError(BrandguardError):
    """A model bundle is missing, incomplete, corrupted or inconsistent with its card."""


class ReferenceIndexError(BrandguardError):
    """A reference index is corrupted, or inconsistent with its manifest."""


class ModelMismatchError(ReferenceIndexError):
    """An index was built with another model (sha256) or embedding dimension."""


class InputError(BrandguardError):
    """Caller-supplied data (catalogue rows, arrays, options) is malformed."""


class NotFoundError(BrandguardError):
    """A record does not exist, or is not visible to the caller's brand (the two look alike)."""
