"""Model bundles: a folder holding ``model.onnx`` and the ``model_card.json`` that describes it.

Like timm's pretrained config, the card carries everything needed to feed the model correctly
(input size, resize rule, mean/std) so preprocessing always travels with the weights. Loading
a bundle re-hashes the ONNX file and refuses it when the hash, or any card field, is off.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from brandguard.artifacts import atomic_write_bytes, sha256_file
from brandguard.errors import BundleError

MODEL_FILE = "model.onnx"
CARD_FILE = "model_card.json"
CARD_SCHEMA_VERSION = 1
RESIZE_MODES = ("squash",)
INTERPOLATIONS = ("area", "linear")


@dataclass(frozen=True)
class ModelCard:
    """What a model expects and what it was trained on; stored as ``model_card.json``."""

    name: str
    architecture: str
    input_size: int
    embedding_dim: int
    sha256: str
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resize: str = "squash"
    interpolation: str = "area"
    input_name: str = "image"
    output_name: str = "embedding"
    opset: int = 17
    version: str = "0"
    created_at: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    schema_version: int = CARD_SCHEMA_VERSION
    # The local-feature stage (``vision.local.LocalConfig``): extractor, parameters, and any
    # network file it loads with licence and sha256. Empty: the bundle has global features only.
    local_features: dict[str, Any] = field(default_factory=dict)
    # The text stage (``vision.text.TextConfig``): the OCR graphs it loads, with licence and
    # sha256 (checked on load), and its reading parameters. Empty: no brand names read in photos.
    text_marks: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise :class:`BundleError` on any field a pipeline could not honour."""
        problems = []
        if not isinstance(self.input_size, int) or not 16 <= self.input_size <= 1024:
            problems.append(f"input_size {self.input_size!r} not an int in [16, 1024]")
        if not isinstance(self.embedding_dim, int) or not 8 <= self.embedding_dim <= 4096:
            problems.append(f"embedding_dim {self.embedding_dim!r} not an int in [8, 4096]")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            problems.append("mean/std must have 3 channels and std > 0")
        if self.resize not in RESIZE_MODES:
            problems.append(f"resize {self.resize!r} not one of {RESIZE_MODES}")
        if self.interpolation not in INTERPOLATIONS:
            problems.append(f"interpolation {self.interpolation!r} not one of {INTERPOLATIONS}")
        if len(self.sha256) != 64:
            problems.append("sha256 must be 64 hex characters")
        if self.schema_version != CARD_SCHEMA_VERSION:
            problems.append(f"card schema {self.schema_version} unsupported (want {CARD_SCHEMA_VERSION})")
        if problems:
            raise BundleError("invalid model card: " + "; ".join(problems))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise BundleError(f"model card has unknown fields {sorted(unknown)}")
        try:
            card = cls(**{**data, "mean": tuple(data.get("mean", cls.mean)),
                          "std": tuple(data.get("std", cls.std))})
        except TypeError as exc:
            raise BundleError(f"model card is incomplete: {exc}") from exc
        card.validate()
        return card


@dataclass(frozen=True)
class Bundle:
    """A verified bundle folder. Build it with :meth:`Bundle.load`, never by hand."""

    path: Path
    card: ModelCard

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @classmethod
    def load(cls, path: str | os.PathLike[str], verify_hash: bool = True) -> "Bundle":
        """Open a bundle folder, parse its card, and check the model file's sha256."""
        root = Path(path)
        if not root.is_dir():
            raise BundleError(f"bundle {root} is not a folder")
        card_path, model_path = root / CARD_FILE, root / MODEL_FILE
        for p in (card_path, model_path):
            if not p.is_file():
                raise BundleError(f"bundle {root} has no {p.name}")
        try:
            data = json.loads(card_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{card_path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise BundleError(f"{card_path} must hold a JSON object")
        card = ModelCard.from_dict(data)
        if verify_hash:
            actual = sha256_file(model_path)
            if actual != card.sha256:
                raise BundleError(
                    f"{model_path} sha256 {actual[:12]}… does not match its card "
                    f"({card.sha256[:12]}…): the model file is corrupted or was replaced"
                )
        return cls(path=root, card=card)


def write_bundle(dest: str | os.PathLike[str], model_bytes: bytes, card: ModelCard) -> Bundle:
    """Write ``model.onnx`` and its card (sha256 filled in from the bytes) into ``dest``."""
    dest = Path(dest)
    digest = hashlib.sha256(model_bytes).hexdigest()
    card = ModelCard.from_dict({**asdict(card), "sha256": digest})
    atomic_write_bytes(dest / MODEL_FILE, model_bytes)
    atomic_write_bytes(dest / CARD_FILE, card.to_json().encode("utf-8"))
    return Bundle.load(dest)


def default_bundle_path() -> Path:
    """The bundle shipped inside the package (``brandguard/assets/default_bundle``)."""
    import brandguard

    return Path(brandguard.__file__).resolve().parent / "assets" / "default_bundle"
