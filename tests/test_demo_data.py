"""Demo catalogue: consistent files, all verdict kinds, registry packages only, deterministic."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import cv2

from brandguard.datasets.demo_catalogue import build_demo_catalogue


def test_demo_catalogue_is_consistent(tmp_path: Path) -> None:
    d = build_demo_catalogue(tmp_path / "demo", seed=0)
    refs = [json.loads(line) for line in d.references_path.read_text().splitlines()]
    cat = [json.loads(line) for line in d.catalogue_path.read_text().splitlines()]
    with d.expected_path.open(newline="") as f:
        expected = list(csv.DictReader(f))
    assert 6 <= len(d.brands) <= 8 and len(refs) == d.n_references
    assert 35 <= len(cat) <= 50
    for r in refs:
        assert set(r) == {"reference_id", "brand", "sku", "kind", "path"}
        assert r["brand"] in d.brands
        assert cv2.imread(str(d.out_dir / r["path"])) is not None
    for row in cat:
        assert set(row) == {"listing_id", "seller_id", "title", "price", "image"}
        assert isinstance(row["price"], float) and row["price"] > 0
        img = cv2.imread(str(d.catalogue_path.parent / row["image"]))
        assert img is not None and min(img.shape[:2]) >= 32
    assert [e["listing_id"] for e in expected] == [c["listing_id"] for c in cat]
    kinds = {e["expected"] for e in expected}
    assert kinds == {"copy", "knockoff", "clear"}
    for e in expected:
        assert (e["brand"] == "") == (e["expected"] == "clear")
        if e["brand"]:
            assert e["brand"] in d.brands
    assert len({e["family"] for e in expected}) == 6
    assert d.expected_counts["clear"] >= 6
    manifest = json.loads((d.out_dir / "demo_manifest.json").read_text())
    photos = manifest["photos"]
    assert photos == "procedural only" or all(not k.startswith("dir:") for k in photos)  # no local folders


def test_demo_is_deterministic(tmp_path: Path) -> None:
    def digest(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}

    a = build_demo_catalogue(tmp_path / "a", seed=3)
    b = build_demo_catalogue(tmp_path / "b", seed=3)
    assert digest(a.out_dir) == digest(b.out_dir)
