"""Model registry: register / promote / rollback / history, tamper refusal, torch-free reading.

Real ONNX bundles (``conftest.tiny_bundle`` and a variant), real FAISS index, real files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from brandguard.errors import BundleError
from brandguard.registry import (
    CURRENT_FILE,
    HISTORY_FILE,
    VERSION_FILE,
    NothingToRollBackError,
    Registry,
    RegistryError,
    TamperedVersionError,
    UnknownVersionError,
    resolve_bundle,
)
from brandguard.vision.bundle import Bundle, ModelCard, write_bundle


@pytest.fixture()
def other_bundle(tmp_path: Path) -> Path:
    """A second, different model (4x4 thumbnails instead of 8x8)."""
    from conftest import make_tiny_onnx

    dest = tmp_path / "other_bundle"
    card = ModelCard(name="tiny-image-4", architecture="avgpool4x4+centre+l2", input_size=64, embedding_dim=48,
                     sha256="0" * 64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    write_bundle(dest, make_tiny_onnx(grid=4), card)
    return dest


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "reg", create=True)


def test_register_promote_rollback_and_history(reg: Registry, tiny_bundle: Path, other_bundle: Path) -> None:
    passed = {"decision": "promote", "reasons": ["test"]}
    v1 = reg.register(tiny_bundle, metadata={"notes": {"kind": "base"}, "metrics": {"x": 1}, "gate": passed})
    v2 = reg.register(other_bundle, parent=v1, metadata={"training_data": {"refs": "abc"}, "gate": passed})
    assert (v1, v2) == ("v0001", "v0002")
    infos = reg.list_versions()
    assert [i.version for i in infos] == [v1, v2]
    assert infos[1].parent == v1 and infos[1].training_data == {"refs": "abc"}
    assert infos[0].model_sha256 == Bundle.load(tiny_bundle).card.sha256
    assert "model.onnx" in infos[0].files and VERSION_FILE not in infos[0].files

    with pytest.raises(UnknownVersionError):
        reg.current()
    reg.promote(v1)
    assert reg.current() == reg.root / "versions" / v1
    reg.promote(v2, note="better")
    assert json.loads((reg.root / CURRENT_FILE).read_text()) == {"default": v2}
    assert Bundle.load(reg.current()).card.name == "tiny-image-4"

    back = reg.rollback()
    assert (back.version, back.previous) == (v1, v2)
    assert reg.current_version() == v1
    with pytest.raises(NothingToRollBackError):
        reg.rollback()
    hist = [json.loads(line) for line in (reg.root / HISTORY_FILE).read_text().splitlines()]
    assert [(h["action"], h["version"], h["previous"]) for h in hist] == [
        ("promote", v1, None), ("promote", v2, v1), ("rollback", v1, v2)]
    # Promote again after a rollback, then roll back: goes to v1 (the promotion before), not v2.
    reg.promote(v2)
    assert reg.rollback().version == v1


def test_only_a_passing_gate_promotes_unless_forced_and_forcing_is_recorded(reg: Registry, tiny_bundle: Path,
                                                                           other_bundle: Path) -> None:
    from brandguard.registry import GateNotPassedError

    none = reg.register(tiny_bundle)
    rejected = reg.register(other_bundle, metadata={"gate": {"decision": "reject", "reasons": ["worse"]}})
    with pytest.raises(GateNotPassedError, match="no evaluation gate.*--force"):
        reg.promote(none)
    with pytest.raises(GateNotPassedError, match="gate decision 'reject'"):
        reg.promote(rejected)
    with pytest.raises(UnknownVersionError):
        reg.current()  # nothing was promoted
    entry = reg.promote(none, note="first base model", force=True)
    assert entry.forced and reg.current_version() == none
    hist = [json.loads(line) for line in (reg.root / HISTORY_FILE).read_text().splitlines()]
    assert hist == [{**hist[0], "action": "promote", "version": none, "forced": True, "note": "first base model"}]


def test_deployments_are_independent(reg: Registry, tiny_bundle: Path, other_bundle: Path) -> None:
    v1, v2 = reg.register(tiny_bundle), reg.register(other_bundle)
    reg.promote(v1, "default", force=True)
    reg.promote(v2, "eu", force=True)
    reg.promote(v1, "eu", force=True)
    assert reg.deployments() == {"default": v1, "eu": v1}
    assert reg.rollback("eu").version == v2
    assert reg.current_version("default") == v1
    with pytest.raises(NothingToRollBackError):
        reg.rollback("default")
    with pytest.raises(RegistryError):
        reg.promote(v1, "bad name/..", force=True)
    assert reg.describe()["current"] == {"default": v1, "eu": v2}


def test_register_refuses_a_tampered_bundle(reg: Registry, tiny_bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        reg.register(bad)
    assert reg.list_versions() == []
    assert not [p for p in (reg.root / "versions").iterdir()]  # no half-written folder left behind


def test_promote_refuses_a_version_modified_after_registration(reg: Registry, tiny_bundle: Path,
                                                              other_bundle: Path) -> None:
    v1, v2 = reg.register(tiny_bundle), reg.register(other_bundle)
    reg.promote(v1, force=True)
    # A file the model card does not cover (calibration) is still covered by version.json.
    (reg.version_dir(v2) / "calibration.json").write_text('{"copy": 0.1, "knockoff": 0.05}')
    with pytest.raises(TamperedVersionError, match="calibration.json"):
        reg.promote(v2, force=True)
    # The model itself replaced by another valid bundle's model + card: hashes differ too.
    shutil.copyfile(tiny_bundle / "model.onnx", reg.version_dir(v2) / "model.onnx")
    with pytest.raises(TamperedVersionError):
        reg.verify(v2)
    assert reg.current_version() == v1
    # Rollback also verifies its target.
    reg2 = Registry(reg.root)
    (reg.version_dir(v2) / "calibration.json").unlink()
    shutil.copyfile(other_bundle / "model.onnx", reg.version_dir(v2) / "model.onnx")
    reg2.promote(v2, force=True)
    (reg.version_dir(v1) / "model_card.json").write_text("{}")
    with pytest.raises(TamperedVersionError):
        reg2.rollback()
    assert reg2.current_version() == v2


def test_indexed_version_serves_through_resolve_bundle(reg: Registry, tiny_bundle: Path, tmp_path: Path) -> None:
    from tests_helpers import blob_image, save

    from brandguard.inputs import read_references
    from brandguard.references import build_index, new_bundle_from
    from brandguard.engine.pipeline import Pipeline

    refs = tmp_path / "refs"
    for i in range(4):
        save(blob_image(i), refs / "acme" / f"r{i}.png")
    b = new_bundle_from(Bundle.load(tiny_bundle), tmp_path / "indexed")
    build_index(Pipeline.from_bundle(b), read_references(refs))[0].close()
    v = reg.register(b)
    reg.promote(v, force=True)
    path = resolve_bundle(None, reg.root)
    pipe = Pipeline.from_bundle(path, require_index=True)
    assert len(pipe.index) == 4 and pipe.index.brands() == ["acme"]
    verdict, = pipe.check([str(refs / "acme" / "r2.png")])
    assert verdict.verdict == "copy" and verdict.top[0].reference_id == "acme/r2"
    # While a reader holds the index open (SQLite WAL files appear), the version still verifies.
    assert resolve_bundle(None, reg.root) == path
    pipe.index.close()
    assert resolve_bundle(tiny_bundle, None) == tiny_bundle
    with pytest.raises(RegistryError):
        resolve_bundle(tiny_bundle, reg.root)
    with pytest.raises(RegistryError):
        Registry(tmp_path / "not_a_registry")
    # The service takes a registry instead of a bundle and serves the current version.
    from brandguard.serve.settings import Settings

    settings = Settings(registry=reg.root, leads_db=tmp_path / "leads.sqlite")
    assert settings.bundle_path() == path
    with pytest.raises(ValueError):
        Settings(registry=reg.root, bundle=tiny_bundle, leads_db=tmp_path / "l.sqlite")


def test_registry_and_gate_import_without_torch() -> None:
    """The scanner and service resolve ``current`` without the training extra."""
    code = ("import sys; import brandguard.registry, brandguard.training.retrain.gate; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
