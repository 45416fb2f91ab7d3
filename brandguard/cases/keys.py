"""API keys: random tokens, stored as sha256 hashes and compared with ``hmac.compare_digest``;
a token is shown once, when it is created, and never stored. Roles: ``admin``, ``scanner``,
``brand:<name>``."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from brandguard.cases.db import LeadStoreError, NotFoundError
from brandguard.errors import InputError

ROLES = ("admin", "scanner")  # plus "brand:<name>"
_BRAND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_TOKEN_PREFIX = "bg"


class InvalidKeyError(LeadStoreError):
    """An API key is unknown, malformed or revoked."""


# ---------------------------------------------------------------------------- records
@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret. ``brand`` is set for ``brand:<name>`` roles."""

    key_id: str
    role: str
    label: str
    created_at: float
    revoked_at: float | None

    @property
    def brand(self) -> str | None:
        return self.role.split(":", 1)[1] if self.role.startswith("brand:") else None


def validate_brand(brand: str) -> str:
    if not isinstance(brand, str) or not _BRAND_RE.match(brand):
        raise InputError(f"invalid brand name {brand!r}: letters, digits, '_', '.', '-' (max 100)")
    return brand


def validate_role(role: str) -> str:
    """``admin``, ``scanner`` or ``brand:<name>``; anything else is an :class:`InputError`."""
    if role in ROLES:
        return role
    if role.startswith("brand:"):
        validate_brand(role[len("brand:"):])
        return role
    raise InputError(f"role must be 'admin', 'scanner' or 'brand:<name>', got {role!r}")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class KeyRing:
    """The API-key methods of the leads store (mixed into ``LeadStore``, which owns the database)."""

    def create_key(self, role: str, label: str = "") -> tuple[str, ApiKey]:
        """A new key for ``role``: returns (token, record). Only the token's hash is stored."""
        validate_role(role)
        key_id = secrets.token_hex(6)
        token = f"{_TOKEN_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        now = self._clock()
        with self._tx() as db:
            db.execute("INSERT INTO api_keys (key_id, key_hash, role, label, created_at) VALUES (?,?,?,?,?)",
                       (key_id, hash_token(token), role, label, now))
        return token, ApiKey(key_id, role, label, now, None)

    def authenticate(self, token: str) -> ApiKey:
        """The key behind ``token``, or :class:`InvalidKeyError`. Constant-time hash comparison."""
        parts = token.split("_", 2) if isinstance(token, str) else []
        if len(parts) != 3 or parts[0] != _TOKEN_PREFIX or not parts[1] or len(token) > 200:
            raise InvalidKeyError("malformed API key")
        rows = self._read("SELECT key_id, key_hash, role, label, created_at, revoked_at FROM api_keys "
                          "WHERE key_id = ?", (parts[1],))
        # Hash and compare even when the id is unknown, so timing says nothing about which ids exist.
        stored = rows[0][1] if rows else "0" * 64
        ok = hmac.compare_digest(hash_token(token), stored)
        if not rows or not ok:
            raise InvalidKeyError("unknown API key")
        key_id, _, role, label, created_at, revoked_at = rows[0]
        if revoked_at is not None:
            raise InvalidKeyError("revoked API key")
        return ApiKey(key_id, role, label, created_at, revoked_at)

    def revoke_key(self, key_id: str) -> None:
        with self._tx() as db:
            cur = db.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                             (self._clock(), key_id))
            if cur.rowcount == 0:
                raise NotFoundError(f"no active key {key_id!r}")

    def list_keys(self) -> list[ApiKey]:
        rows = self._read("SELECT key_id, role, label, created_at, revoked_at FROM api_keys ORDER BY created_at")
        return [ApiKey(*r) for r in rows]
