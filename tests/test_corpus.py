"""Corpus builder: determinism, split hygiene, ground-truth consistency, every family present."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import cv2
import pytest

from brandguard.evaluation.families import DISTRACTOR_FAMILIES, FAMILIES
from brandguard.datasets.augment.ops import jpeg
from brandguard.datasets.corpus import build_corpus, main
from brandguard.datasets.logos import split_of
from brandguard.errors import InputError


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "tiny"
    build_corpus(out, "tiny", seed=0, workers=1, progress=False)
    return out


def test_layout_and_every_family_present(tiny: Path) -> None:
    manifest = json.loads((tiny / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["size"] == "tiny"
    for split in ("train", "val", "test"):
        d = tiny / split
        for name in ("ground_truth.csv", "queries.csv", "references.csv"):
            assert (d / name).is_file()
        queries = _rows(d / "queries.csv")
        fams = {q["family"] for q in queries}
        assert fams == set(FAMILIES), (split, fams)
        for fam in FAMILIES:
            assert (d / f"contact_{fam}.png").is_file()
        counts = manifest["splits"][split]
        assert counts["queries"] == len(queries)
        assert sum(counts["families"].values()) == len(queries)
    assert manifest["sources"]["logos"]["excluded_for_license"]  # ND-licensed icons listed


def test_ground_truth_consistent_with_files(tiny: Path) -> None:
    for split in ("train", "val", "test"):
        d = tiny / split
        refs = _rows(d / "references.csv")
        ref_ids = {r["reference_id"] for r in refs}
        on_disk = {p.relative_to(d / "references").with_suffix("").as_posix() for p in (d / "references").rglob("*.png")}
        assert ref_ids == on_disk
        queries = {q["query_id"]: q for q in _rows(d / "queries.csv")}
        assert set(queries) == {p.stem for p in (d / "queries").glob("*.jpg")}
        gt = _rows(d / "ground_truth.csv")
        assert len({g["query_id"] for g in gt}) == len(gt)  # one row per query
        for g in gt:
            assert g["reference_id"] in ref_ids
            q = queries[g["query_id"]]
            assert q["family"] not in DISTRACTOR_FAMILIES
            assert g["reference_id"].split("/")[0] == q["brand"]
        with_gt = {g["query_id"] for g in gt}
        for qid, q in queries.items():
            assert (qid in with_gt) == (q["family"] not in DISTRACTOR_FAMILIES)
            assert (q["brand"] == "") == (q["family"] in DISTRACTOR_FAMILIES)
        for r in refs:
            assert r["license"] and r["source"] and r["kind"] in ("logo", "product")
        img = cv2.imread(str(d / "queries" / f"{next(iter(queries))}.jpg"))
        assert img is not None and img.ndim == 3


def test_no_brand_leaks_between_splits(tiny: Path) -> None:
    seen: dict[str, set[str]] = {}
    for split in ("train", "val", "test"):
        d = tiny / split
        brands = {r["brand"] for r in _rows(d / "references.csv")}
        unreg = {
            q["transform"].split("+")[0].split("=")[1]
            for q in _rows(d / "queries.csv")
            if q["family"] == "distractor_unregistered"
        }
        assert brands and unreg and brands.isdisjoint(unreg)
        assert all(split_of(b, 0) == split for b in brands | unreg)
        seen[split] = brands | unreg
    assert seen["train"].isdisjoint(seen["val"]) and seen["train"].isdisjoint(seen["test"])
    assert seen["val"].isdisjoint(seen["test"])


def test_same_seed_gives_identical_files(tiny: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build_corpus(again, "tiny", seed=0, workers=1, progress=False)
    assert _hashes(again) == _hashes(tiny)
    m1 = json.loads((tiny / "manifest.json").read_text())
    m2 = json.loads((again / "manifest.json").read_text())
    m1.pop("build"), m2.pop("build")
    assert m1 == m2
    other = tmp_path / "other"
    build_corpus(other, "tiny", seed=1, workers=1, splits=["test"], progress=False)
    assert _hashes(other / "test") != _hashes(tiny / "test")


def test_photo_folder_is_used(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(30):
        img = jpeg(__import__("numpy").full((120, 160, 3), (i * 8) % 255, "uint8"), 90)
        cv2.imwrite(str(photos / f"p{i:02d}.jpg"), img)
    (photos / "LICENSE").write_text("CC0 1.0 Universal")
    m = build_corpus(tmp_path / "c", "tiny", seed=0, photo_dirs=[photos], workers=1, splits=["train"], progress=False)
    manifest = json.loads(m.path.read_text())
    assert manifest["sources"]["photos"]["by_split"]["train"]["dir:photos"]["licenses"] == ["CC0-1.0"]
    used = [q["transform"] for q in _rows(tmp_path / "c" / "train" / "queries.csv") if "photo=photos/" in q["transform"]]
    assert used


def test_product_shots_use_reserved_photos_only(tmp_path: Path) -> None:
    """product_photo queries point at their brand's catalogue shot; a photo reserved for a shot
    is never another query's background or distractor (that would be an unlabelled true match)."""
    import numpy as np

    from brandguard.datasets.photos import is_catalogue_photo

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        cv2.imwrite(str(photos / f"p{i:02d}.jpg"), rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    (photos / "LICENSE").write_text("CC0 1.0 Universal")
    build_corpus(tmp_path / "c", "tiny", seed=0, photo_dirs=[photos], workers=1, splits=["train"], progress=False)
    d = tmp_path / "c" / "train"
    refs = {r["reference_id"]: r for r in _rows(d / "references.csv")}
    shots = {k: r for k, r in refs.items() if k.endswith("/product_shot")}
    assert shots and len(shots) < len({r["brand"] for r in refs.values()})  # a share of the brands
    shot_photos = [r["source"].split("printed on photo ")[1].split(" ")[0] for r in shots.values()]
    assert len(set(shot_photos)) == len(shot_photos) and all(is_catalogue_photo(p) for p in shot_photos)
    gt = {g["query_id"]: g["reference_id"] for g in _rows(d / "ground_truth.csv")}
    queries = _rows(d / "queries.csv")
    pp = [q for q in queries if q["family"] == "product_photo"]
    assert pp and all(gt[q["query_id"]] == f"{q['brand']}/product_shot" for q in pp)
    used = [t.split("=", 1)[1] for q in queries for t in q["transform"].split("+")
            if t.startswith(("photo=", "surface="))]
    assert used and not any(is_catalogue_photo(p) for p in used if p != "procedural")


def test_bad_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        build_corpus(tmp_path, "huge", progress=False)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        build_corpus(tmp_path, "tiny", photo_dirs=[tmp_path / "missing"], progress=False)
    assert main(["--size", "tiny", "--photos", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2


def test_cli_help_mentions_families(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "--photos" in text and "knockoff" in text and "standard" in text


def test_baselines_write_valid_predictions(tiny: Path, tmp_path: Path) -> None:
    from brandguard.datasets.baselines import run_baseline

    refs = {r["reference_id"] for r in _rows(tiny / "test" / "references.csv")}
    queries = {q["query_id"] for q in _rows(tiny / "test" / "queries.csv")}
    for method in ("phash", "tiny"):
        res = run_baseline(method, tiny / "test", tmp_path, k=3)
        preds = _rows(res.predictions_path)
        assert len(preds) == 3 * len(queries)
        assert {p["query_id"] for p in preds} == queries and {p["reference_id"] for p in preds} <= refs
        for q in queries:  # scores sorted best first within a query
            scores = [float(p["score"]) for p in preds if p["query_id"] == q]
            assert scores == sorted(scores, reverse=True)
        assert res.metrics is not None and 0.0 <= res.metrics["micro_ap"] <= 1.0
        # light copies are near-duplicates: even these baselines must find most of them
        assert res.metrics["per_family"]["copy_light"]["recall_at_1"] >= 0.6, (method, res.metrics)
