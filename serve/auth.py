"""API keys and the role rules; the FastAPI dependencies built on them live in :mod:`.deps`.

A caller sends ``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``). Keys live hashed in
the leads database (:class:`brandguard.cases.leads.LeadStore`). Roles:

- ``admin``: everything, every brand.
- ``scanner``: checks images; checks that name a listing record leads. Cannot read leads.
- ``brand:<name>``: checks images (nothing is recorded), reads and works its own brand's
  leads, files complaints for its own brand, registers and removes its own references. Another brand's lead id answers 404 (ids do not
  leak); asking to list another brand answers 403.
"""

from __future__ import annotations

from dataclasses import dataclass

from brandguard.cases.keys import ApiKey, InvalidKeyError
from brandguard.cases.leads import LeadStore
from brandguard.serve.errors import ForbiddenError, UnauthenticatedError

CAPABILITIES: dict[str, frozenset[str]] = {
    "check": frozenset({"admin", "scanner", "brand"}),
    "record_leads": frozenset({"admin", "scanner"}),
    "read_leads": frozenset({"admin", "brand"}),
    "complain": frozenset({"admin", "brand"}),
    "decide_complaints": frozenset({"admin"}),
    "manage_references": frozenset({"admin", "brand"}),
    # approve or reject a reference held because it copies another brand's (and read the audit log)
    "decide_references": frozenset({"admin"}),
    # /metrics, /openapi.json, /docs and /readyz's details when they are not public (Settings.public_metrics)
    "read_ops": frozenset({"admin"}),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key id (safe to log) and its role."""

    key_id: str
    role: str

    @classmethod
    def from_key(cls, key: ApiKey) -> "Principal":
        return cls(key.key_id, key.role)

    @property
    def kind(self) -> str:
        return "brand" if self.role.startswith("brand:") else self.role

    @property
    def brand(self) -> str | None:
        return self.role.split(":", 1)[1] if self.role.startswith("brand:") else None

    @property
    def actor(self) -> str:
        """How the audit log names this caller: role and key id (never the key)."""
        return f"{self.role} key {self.key_id}"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def can(self, capability: str) -> bool:
        return self.kind in CAPABILITIES[capability]

    def require(self, capability: str) -> "Principal":
        if not self.can(capability):
            raise ForbiddenError(f"role {self.role!r} may not {capability.replace('_', ' ')}")
        return self

    def brand_scope(self, requested: str | None) -> str | None:
        """The brand this caller's query is limited to (None: all brands, admins only)."""
        if self.is_admin:
            return requested
        own = self.brand
        if own is None:
            raise ForbiddenError(f"role {self.role!r} has no brand")
        if requested is not None and requested != own:
            raise ForbiddenError(f"a key for brand {own!r} cannot access brand {requested!r}")
        return own

    def row_scope(self) -> str | None:
        """Brand filter for fetching one record by id: another brand's record must look missing."""
        return None if self.is_admin else self.brand


def bearer_token(authorization: str | None, x_api_key: str | None) -> str:
    """The key from ``Authorization: Bearer …`` or ``X-API-Key``; raises when absent."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError("Authorization header must be 'Bearer <key>'")
        return token.strip()
    if x_api_key:
        return x_api_key.strip()
    raise UnauthenticatedError("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'")


def authenticate(store: LeadStore, authorization: str | None, x_api_key: str | None) -> Principal:
    """The caller behind the request's key headers (a SQLite lookup: call it off the event loop)."""
    token = bearer_token(authorization, x_api_key)
    try:
        return Principal.from_key(store.authenticate(token))
    except InvalidKeyError as exc:
        raise UnauthenticatedError(str(exc)) from exc
