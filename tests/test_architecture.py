"""The layer rules of the README's layout section, enforced by walking every import in the tree.

Imports are read from the source (``ast``), function-level ones included, so a lazy import
that breaks a rule is caught as surely as a top-level one. Each module is named by its
installed name (``vision/decode.py`` is ``brandguard.vision.decode``).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Installed package -> folder in the checkout (pyproject's package-dir).
PACKAGE_DIRS = {
    "brandguard": "brandguard",
    "brandguard.vision": "vision",
    "brandguard.index": "index",
    "brandguard.serve": "serve",
    "brandguard.training": "training",
    "brandguard.datasets": "datasets",
}
TOP_LEVEL = {"vision", "index", "serve", "training", "datasets"}

# layer -> layers it must never import. A layer is the first name under ``brandguard``
# (``engine``, ``scan``, ...); modules directly in ``brandguard/`` are layers of their own.
FORBIDDEN: dict[str, set[str]] = {
    # images in, vectors and keypoints out: no index, no decisions, no product code
    "vision": {"index", "engine", "scan", "cases", "evaluation", "cli", "serve", "training", "datasets",
               "references", "registry", "inputs"},
    # vectors and rows: knows a model only by hash and width
    "index": {"vision", "engine", "scan", "cases", "evaluation", "cli", "serve", "training", "datasets",
              "references", "registry", "inputs"},
    "engine": {"scan", "cases", "evaluation", "cli", "serve", "training", "datasets", "registry", "references"},
    "inputs": {"vision", "index", "engine", "scan", "cases", "evaluation", "cli", "serve", "training"},
    "cases": {"vision", "index", "engine", "scan", "evaluation", "cli", "serve", "training", "datasets"},
    "references": {"scan", "cases", "evaluation", "cli", "serve", "training"},
    "registry": {"engine", "scan", "cases", "evaluation", "cli", "serve", "training"},
    "scan": {"evaluation", "cli", "serve", "training", "datasets"},
    "evaluation": {"scan", "cases", "cli", "serve", "training"},
    "serve": {"scan", "evaluation", "cli", "training", "datasets"},
    "datasets": {"index", "engine", "scan", "cases", "cli", "serve", "training", "references", "registry"},
    "training": {"cli", "serve", "scan"},
    "artifacts": {"vision", "index", "engine", "scan", "cases", "evaluation", "cli", "serve", "training",
                  "datasets", "references", "registry", "inputs"},
    "errors": {"vision", "index", "engine", "scan", "cases", "evaluation", "cli", "serve", "training",
               "datasets", "references", "registry", "inputs", "artifacts"},
}
TORCH = {"torch", "torchvision"}


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if package == "brandguard" and parts and parts[0] in TOP_LEVEL:
                continue
            name = ".".join([package, *parts])
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # ``from brandguard import registry`` imports the module brandguard.registry
            if node.module == "brandguard":
                found.update(f"brandguard.{alias.name}" for alias in node.names)
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "brandguard":
        return None
    return parts[1] if len(parts) > 1 else "brandguard"


MODULES = _modules()


def test_the_walk_sees_the_whole_tree():
    """Guard against the rules passing because nothing was read."""
    for expected in ("brandguard.engine.pipeline", "brandguard.vision.decode", "brandguard.index.store",
                     "brandguard.serve.app", "brandguard.scan.scanner", "brandguard.training.train",
                     "brandguard.cli.main"):
        assert expected in MODULES
    assert len(MODULES) > 50
    assert "torch" in _imports(MODULES["brandguard.training.model"])


def test_layers_point_one_way():
    wrong = []
    for module, path in MODULES.items():
        banned = FORBIDDEN.get(_layer(module), set())
        wrong += [f"{module} -> {t}" for t in sorted(_imports(path)) if _layer(t) in banned]
    assert not wrong, "imports against the layer rules (README, layout section):\n" + "\n".join(wrong)


def test_nothing_but_training_imports_torch():
    wrong = [f"{module} -> {t}" for module, path in MODULES.items() if _layer(module) != "training"
             for t in sorted(_imports(path)) if t.split(".")[0] in TORCH]
    assert not wrong, f"only brandguard.training may use torch: {wrong}"


def test_no_private_names_cross_modules():
    """``from x import _private`` across modules is a missing public function."""
    wrong = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("brandguard") \
                    and node.module != module:
                wrong += [f"{module} -> {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.endswith("__")]
    assert not wrong, f"private names imported across modules: {wrong}"


def test_rules_catch_a_violation(tmp_path):
    """The checker itself: a vision module importing the engine is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from brandguard.engine.pipeline import Pipeline\n")
    assert _layer(next(iter(_imports(bad)))) in FORBIDDEN["vision"]
