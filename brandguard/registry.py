"""Model registry: versioned, verified bundles on disk, and which one each deployment serves.

Why a registry: retraining for one brand must never silently replace what production scans
with. Every candidate becomes an immutable ``versions/vNNNN/`` folder, the serving pointer
(``current.json``) only moves through :meth:`Registry.promote` / :meth:`Registry.rollback`,
and every move is appended to ``history.jsonl`` so a rollback knows where to go back to.

Layout::

    REG/versions/v0001/   model.onnx, model_card.json, [calibration.json, index.json, index.faiss,
                          references.sqlite, references/...], [weights.pt], version.json
    REG/current.json      {"default": "v0003", "eu": "v0002"}       (one entry per deployment)
    REG/history.jsonl     one JSON object per promote/rollback, append-only
    REG/.lock             flock'd while the registry is being changed

``version.json`` records the version, its parent, when it was made, hashes of the training data,
metrics, the gate report, and the sha256 of every file in the folder, so tampering with any
artifact (not only the model, which the bundle's card already covers) is detected on promote.

This module is deliberately torch-free (numpy/FAISS/onnxruntime only through ``Bundle`` and the
index), so the scanner and the service can resolve ``current`` without the training extra.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from brandguard.errors import BrandguardError, BundleError
from brandguard.artifacts import atomic_write_bytes, sha256_file
from brandguard.vision.bundle import Bundle

VERSIONS_DIR = "versions"
CURRENT_FILE = "current.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".lock"
VERSION_FILE = "version.json"
WEIGHTS_FILE = "weights.pt"  # torch state dict of the version's model (what fine-tuning starts from)
DEFAULT_DEPLOYMENT = "default"
_VERSION_RE = re.compile(r"^v(\d{4,})$")
_DEPLOYMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class RegistryError(BrandguardError):
    """The registry is missing, inconsistent, or was asked for something it cannot do."""


class UnknownVersionError(RegistryError):
    """A version (or a deployment's current version) does not exist."""


class TamperedVersionError(RegistryError):
    """A registered version's files no longer match the checksums recorded at registration."""


class NothingToRollBackError(RegistryError):
    """The deployment has no earlier promoted version to go back to."""


class GateNotPassedError(RegistryError):
    """A version without a passing evaluation gate was to be promoted without ``force``."""


@dataclass(frozen=True)
class VersionInfo:
    """Contents of ``version.json``."""

    version: str
    parent: str | None
    created_at: str
    model_sha256: str
    model_name: str
    files: dict[str, str]  # relative path -> sha256 (version.json itself excluded)
    training_data: dict[str, Any] = field(default_factory=dict)  # source -> hash / description
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VersionInfo":
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as exc:
            raise RegistryError(f"version.json is incomplete: {exc}") from exc


@dataclass(frozen=True)
class HistoryEntry:
    """One line of ``history.jsonl``."""

    at: str
    deployment: str
    action: str  # "promote" | "rollback"
    version: str
    previous: str | None
    note: str = ""
    forced: bool = False  # promoted without a passing gate (``--force``): recorded, never silent


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


# Files that readers create at run time (SQLite's WAL and shared memory, the service's write
# lock): they are not content, and hashing them would flag every opened version as tampered.
_RUNTIME_SUFFIXES = (".tmp", "-wal", "-shm", ".lock")


def _tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every regular file under ``root`` except ``version.json`` and run-time files."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != VERSION_FILE and not p.name.endswith(_RUNTIME_SUFFIXES):
            out[p.relative_to(root).as_posix()] = sha256_file(p)
    return out


def validate_deployment(name: str) -> str:
    if not isinstance(name, str) or not _DEPLOYMENT_RE.match(name):
        raise RegistryError(f"invalid deployment name {name!r}: letters, digits, '_', '.', '-' (max 64)")
    return name


def verify_bundle_dir(path: Path, check_index: bool = True) -> Bundle:
    """Bundle.load (model sha256 vs card) plus, when the bundle has an index, loading it
    (refuses an index built with another model). Raises BundleError / ReferenceIndexError."""
    bundle = Bundle.load(path)
    if check_index:
        from brandguard.index.manifest import MANIFEST_FILE
        from brandguard.index.store import ReferenceIndex

        if (bundle.path / MANIFEST_FILE).is_file():
            ReferenceIndex.load(bundle.path, bundle.card, threads=1).close()
    return bundle


class Registry:
    """A registry folder. Cheap to construct; every method re-reads the files it needs."""

    def __init__(self, root: str | os.PathLike[str], create: bool = False) -> None:
        self.root = Path(root)
        if create:
            (self.root / VERSIONS_DIR).mkdir(parents=True, exist_ok=True)
        elif not (self.root / VERSIONS_DIR).is_dir():
            raise RegistryError(f"{self.root} is not a model registry (no {VERSIONS_DIR}/ folder)")

    # ------------------------------------------------------------------ locking and files
    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive lock across processes for anything that changes the registry."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _read_current(self) -> dict[str, str]:
        path = self.root / CURRENT_FILE
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistryError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise RegistryError(f"{path} must map deployment names to versions")
        return data

    def _write_current(self, data: dict[str, str]) -> None:
        atomic_write_bytes(self.root / CURRENT_FILE, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

    def _append_history(self, entry: HistoryEntry) -> None:
        """Append one line and fsync: the history is what rollback replays."""
        line = json.dumps(asdict(entry), sort_keys=True) + "\n"
        with open(self.root / HISTORY_FILE, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def history(self, deployment: str | None = None) -> list[HistoryEntry]:
        path = self.root / HISTORY_FILE
        if not path.is_file():
            return []
        out = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                e = HistoryEntry(**json.loads(line))
            except (json.JSONDecodeError, TypeError) as exc:
                raise RegistryError(f"{path}:{n} is not a history entry: {exc}") from exc
            if deployment is None or e.deployment == deployment:
                out.append(e)
        return out

    # ------------------------------------------------------------------ versions
    def version_dir(self, version: str) -> Path:
        if not _VERSION_RE.match(version or ""):
            raise UnknownVersionError(f"{version!r} is not a version name (vNNNN)")
        path = self.root / VERSIONS_DIR / version
        if not (path / VERSION_FILE).is_file():
            raise UnknownVersionError(f"version {version} is not in the registry {self.root}")
        return path

    def list_versions(self) -> list[VersionInfo]:
        """Every registered version, oldest first."""
        out = []
        for p in sorted((self.root / VERSIONS_DIR).iterdir()):
            if _VERSION_RE.match(p.name) and (p / VERSION_FILE).is_file():
                out.append(self.info(p.name))
        return out

    def info(self, version: str) -> VersionInfo:
        path = self.version_dir(version) / VERSION_FILE
        try:
            return VersionInfo.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistryError(f"{path} is not valid JSON: {exc}") from exc

    def _next_version(self) -> str:
        nums = [int(m.group(1)) for p in (self.root / VERSIONS_DIR).iterdir() if (m := _VERSION_RE.match(p.name))]
        return f"v{(max(nums) + 1 if nums else 1):04d}"

    def register(self, bundle_dir: str | os.PathLike[str], parent: str | None = None,
                 metadata: dict[str, Any] | None = None) -> str:
        """Copy a verified bundle folder in as the next version; returns its name.

        ``metadata`` may hold ``training_data``, ``metrics``, ``gate`` and ``notes``. The bundle is
        verified before copying and the copy again before it becomes visible (a rename), so a
        version folder either exists complete and verified, or not at all.
        """
        src = Path(bundle_dir)
        verify_bundle_dir(src)
        if parent is not None:
            self.version_dir(parent)
        meta = dict(metadata or {})
        unknown = set(meta) - {"training_data", "metrics", "gate", "notes"}
        if unknown:
            raise RegistryError(f"unknown metadata keys {sorted(unknown)}")
        with self._locked():
            version = self._next_version()
            tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=self.root / VERSIONS_DIR))
            try:
                shutil.copytree(src, tmp, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns(VERSION_FILE, "*.tmp", "__pycache__"))
                bundle = verify_bundle_dir(tmp)
                info = VersionInfo(
                    version=version, parent=parent, created_at=_now(), model_sha256=bundle.card.sha256,
                    model_name=bundle.card.name, files=_tree_hashes(tmp),
                    training_data=dict(meta.get("training_data", {})), metrics=dict(meta.get("metrics", {})),
                    gate=dict(meta.get("gate", {})), notes=dict(meta.get("notes", {})),
                )
                atomic_write_bytes(tmp / VERSION_FILE, info.to_json().encode("utf-8"))
                os.chmod(tmp, 0o755)
                os.rename(tmp, self.root / VERSIONS_DIR / version)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return version

    def verify(self, version: str) -> Bundle:
        """Re-hash every file of a version against ``version.json`` and load its bundle."""
        path = self.version_dir(version)
        info = self.info(version)
        actual = _tree_hashes(path)
        if actual != info.files:
            changed = sorted(k for k in set(actual) | set(info.files) if actual.get(k) != info.files.get(k))
            raise TamperedVersionError(f"version {version} was modified after registration: {changed[:5]}")
        try:
            bundle = verify_bundle_dir(path)
        except BundleError as exc:
            raise TamperedVersionError(f"version {version} no longer loads: {exc}") from exc
        if bundle.card.sha256 != info.model_sha256:
            raise TamperedVersionError(f"version {version}: model sha256 differs from version.json")
        return bundle

    # ------------------------------------------------------------------ deployments
    def deployments(self) -> dict[str, str]:
        return dict(self._read_current())

    def current_version(self, deployment: str = DEFAULT_DEPLOYMENT) -> str:
        validate_deployment(deployment)
        cur = self._read_current()
        if deployment not in cur:
            raise UnknownVersionError(f"deployment {deployment!r} has no promoted version in {self.root}")
        return cur[deployment]

    def current(self, deployment: str = DEFAULT_DEPLOYMENT) -> Path:
        """The bundle folder the deployment serves (what ``Pipeline.from_bundle`` should load)."""
        return self.version_dir(self.current_version(deployment))

    def promote(self, version: str, deployment: str = DEFAULT_DEPLOYMENT, note: str = "",
                force: bool = False) -> HistoryEntry:
        """Point ``deployment`` at ``version`` after re-verifying every file of it.

        Only a version whose evaluation gate decided ``promote`` may be promoted; ``force``
        promotes one without (a first base model, an emergency) and is recorded in the history."""
        validate_deployment(deployment)
        self.verify(version)
        decision = self.info(version).gate.get("decision")
        if decision != "promote" and not force:
            raise GateNotPassedError(
                f"version {version} has {'no evaluation gate' if decision is None else f'gate decision {decision!r}'}: "
                "it is not promoted; pass --force to promote it anyway (recorded in the history)")
        with self._locked():
            cur = self._read_current()
            entry = HistoryEntry(_now(), deployment, "promote", version, cur.get(deployment), note,
                                 forced=decision != "promote")
            self._append_history(entry)
            cur[deployment] = version
            self._write_current(cur)
        return entry

    def _promotion_stack(self, deployment: str) -> list[str]:
        """Replay the deployment's history: promotions push, rollbacks pop."""
        stack: list[str] = []
        for e in self.history(deployment):
            if e.action == "promote":
                stack.append(e.version)
            elif e.action == "rollback" and stack:
                stack.pop()
        return stack

    def rollback(self, deployment: str = DEFAULT_DEPLOYMENT, note: str = "") -> HistoryEntry:
        """Go back to the version that was promoted before the current one (verified first)."""
        validate_deployment(deployment)
        with self._locked():
            stack = self._promotion_stack(deployment)
            cur = self._read_current()
            if len(stack) < 2 or cur.get(deployment) != stack[-1]:
                raise NothingToRollBackError(f"deployment {deployment!r} has no earlier promoted version")
            target = stack[-2]
            self.verify(target)
            entry = HistoryEntry(_now(), deployment, "rollback", target, stack[-1], note)
            self._append_history(entry)
            cur[deployment] = target
            self._write_current(cur)
        return entry

    # ------------------------------------------------------------------ convenience
    def weights(self, version: str) -> Path | None:
        """The version's torch weights file, when it has one (needed to fine-tune from it)."""
        p = self.version_dir(version) / WEIGHTS_FILE
        return p if p.is_file() else None

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary for ``brandguard registry list``."""
        cur = self._read_current()
        served: dict[str, list[str]] = {}
        for dep, v in cur.items():
            served.setdefault(v, []).append(dep)
        rows = []
        for info in self.list_versions():
            rows.append({"version": info.version, "parent": info.parent, "created_at": info.created_at,
                         "model_sha256": info.model_sha256[:12], "name": info.model_name,
                         "deployments": sorted(served.get(info.version, [])),
                         "gate": info.gate.get("decision"), "brand": info.notes.get("brand")})
        return {"registry": str(self.root), "current": cur, "versions": rows}


def resolve_bundle(bundle: str | os.PathLike[str] | None, registry: str | os.PathLike[str] | None,
                   deployment: str = DEFAULT_DEPLOYMENT) -> Path | None:
    """``--bundle`` or ``--registry REG [--deployment NAME]`` -> a bundle folder (None = shipped default).

    For the scanner and the service: the deployment's current version, verified file by file."""
    if bundle is not None and registry is not None:
        raise RegistryError("give --bundle or --registry, not both")
    if registry is None:
        return Path(bundle) if bundle is not None else None
    reg = Registry(registry)
    version = reg.current_version(deployment)
    reg.verify(version)
    return reg.version_dir(version)
