"""Threshold selection by hand, and calibration end to end on a tiny generated corpus."""

from __future__ import annotations

import json

import pytest

from brandguard.evaluation.calibration import Judged, calibrate, threshold_at_precision
from brandguard.cli.main import EXIT_OK, main
from brandguard.engine.decide import Calibration


def test_threshold_at_precision_by_hand():
    scored = [(0.9, True), (0.8, True), (0.7, False), (0.6, True), (0.5, False), (0.4, False)]
    # precision at each cut: 1, 1, 2/3, 3/4, 3/5, 1/2
    assert threshold_at_precision(scored, 0.95) == (0.8, 1.0, 2)
    assert threshold_at_precision(scored, 0.75) == (0.6, 0.75, 3)
    t, p, n = threshold_at_precision([(0.5, False)], 0.9)
    assert t > 0.5 and n == 0  # nothing can be flagged


def test_ties_are_not_split():
    scored = [(0.9, True), (0.7, True), (0.7, False)]
    assert threshold_at_precision(scored, 0.95) == (0.9, 1.0, 1)


def test_calibrate_separates_flag_and_copy_thresholds():
    judged = [Judged(f"c{i}", "copy_light", "a", "a", 0.9 + i * 0.001, 30) for i in range(20)]
    judged += [Judged(f"k{i}", "knockoff", "a", "a", 0.7 + i * 0.001, 2) for i in range(20)]
    judged += [Judged(f"d{i}", "distractor_photo", "", "b", 0.5 + i * 0.001, 0) for i in range(20)]
    cal, report = calibrate(judged, 0.95)
    # 40 true flags admit 2 false ones at 95% (40/42 = 0.952; 40/43 < 0.95): the two top distractors
    assert cal.knockoff == pytest.approx(0.518)
    # 20 copies admit 1 knockoff above the copy threshold (20/21 = 0.952)
    assert cal.copy == pytest.approx(0.719)
    assert report["per_family"]["knockoff"]["recall"] == 1.0
    assert report["per_family"]["distractor_photo"]["flagged"] == 2 and report["flag_precision"] == pytest.approx(40 / 42, abs=1e-4)


def test_calibrate_cli_on_tiny_corpus(tiny_bundle, tmp_path):
    from brandguard.datasets.corpus import build_corpus

    build_corpus(tmp_path / "corpus", size="tiny", seed=0, workers=1, splits=("val",), progress=False)
    bundle = tmp_path / "bundle"
    assert main(["index", str(tmp_path / "corpus" / "val" / "references"), "--bundle", str(tiny_bundle),
                 "--out", str(bundle)]) == EXIT_OK
    assert main(["calibrate", "--bundle", str(bundle), "--split", str(tmp_path / "corpus" / "val"),
                 "--target", "0.9", "--report-split", str(tmp_path / "corpus" / "val")]) == EXIT_OK
    vr = json.loads((bundle / "verdicts_val.json").read_text())
    n = sum(sum(row.values()) for row in vr["confusion"].values())
    assert n == vr["n_queries"] == sum(f["n"] for f in vr["per_family"].values()) > 0
    assert set(vr["confusion"]) == {"copy", "knockoff", "clear"}
    cal = Calibration.load(bundle)
    assert cal.method.startswith("global, precision 0.90") and 0 <= cal.knockoff <= cal.copy <= 1.01
    report = json.loads((bundle / "calibration_report.json").read_text())
    assert report["flag_precision"] >= 0.9 and set(report["per_family"]) >= {"copy_light", "knockoff"}


def test_verified_copies_are_flagged_below_the_similarity_threshold():
    # Copies the embedding ranks low (0.55-0.65) but keypoints verify; distractors 0.5-0.9, no inliers.
    judged = [Judged(f"c{i}", "copy_strong", "a", "a", 0.55 + i * 0.005, 40) for i in range(20)]
    judged += [Judged(f"d{i}", "distractor_photo", "", "b", 0.5 + i * 0.02, 0) for i in range(20)]
    judged += [Judged(f"x{i}", "distractor_photo", "", "b", 0.52, 20) for i in range(1)]  # one bad verification
    cal, report = calibrate(judged, 0.95, max_verify_share=0.9)
    assert cal.knockoff > 0.88  # similarity alone cannot flag anything precisely
    assert cal.verify_floor is not None and cal.verify_floor <= 0.55
    assert report["per_family"]["copy_strong"]["recall"] == 1.0
    assert report["precision_all_flags"] >= 0.95
    # the cost bound: with verification allowed for only 20% of distractors, the floor stays high
    cal2, _ = calibrate(judged, 0.95, max_verify_share=0.2)
    assert cal2.verify_floor is None or cal2.verify_floor >= 0.5 + 16 * 0.02 - 1e-9


def test_per_brand_thresholds_pick_the_brand_that_clears_its_own_threshold():
    from brandguard.engine.decide import BrandThresholds, ReferenceHit, decide

    cal = Calibration(copy=0.97, knockoff=0.95, per_brand={"b": BrandThresholds(copy=0.85, knockoff=0.80)},
                      method="test")
    hits = [ReferenceHit("a/r", "a", "", "", 0.90), ReferenceHit("b/r", "b", "", "", 0.89)]
    v = decide(hits, cal)
    assert v.verdict == "copy" and v.brand == "b"  # 0.89 clears b's own 0.85; 0.90 misses the global 0.95
    only_global = decide(hits, Calibration(copy=0.97, knockoff=0.95, method="test"))
    assert only_global.verdict == "clear"


def test_background_normalises_scores_and_is_verified(tiny_bundle, tmp_path):
    import numpy as np

    from brandguard.errors import BundleError
    from brandguard.engine.background import Background
    from brandguard.vision.bundle import Bundle
    from brandguard.engine.pipeline import Pipeline
    from tests_helpers import blob_image, save

    for i in range(3):
        save(blob_image(60 + i), tmp_path / "refs" / f"b{i}" / "logo.png")
    for i in range(12):
        save(blob_image(300 + i), tmp_path / "bg" / f"{i}.jpg")
    bundle = tmp_path / "bundle"
    assert main(["index", str(tmp_path / "refs"), "--bundle", str(tiny_bundle), "--out", str(bundle)]) == EXIT_OK
    raw = Pipeline.from_bundle(bundle).check([str(tmp_path / "refs" / "b1" / "logo.png")])[0]
    assert main(["background", "--bundle", str(bundle), "--images", str(tmp_path / "bg"), "--k", "3"]) == EXIT_OK
    pipe = Pipeline.from_bundle(bundle)
    assert pipe.background is not None and pipe.background.meta.count == 12
    (norm,) = pipe.check([str(tmp_path / "refs" / "b1" / "logo.png")])
    q = pipe.embed_crops(pipe.prepare(str(tmp_path / "refs" / "b1" / "logo.png")).crops)
    expected = raw.score - pipe.background.meta.beta * float(np.sort(q @ pipe.background.vectors.T, axis=1)[0, -3:].mean())
    assert norm.score == pytest.approx(expected, abs=1e-4) and norm.evidence["cosine"] == pytest.approx(raw.score,
                                                                                                        abs=1e-5)
    # a background built with another model is refused
    other = Bundle.load(tiny_bundle).card
    with pytest.raises(BundleError, match="built with model"):
        Background.load(bundle, type(other)(**{**other.__dict__, "sha256": "f" * 64}))


def test_verdict_report_by_hand():
    from brandguard.evaluation.calibration import verdict_report

    judged = [Judged("a", "copy_light", "x", "x", 0.9, 30, "copy"),
              Judged("b", "knockoff", "x", "x", 0.8, 0, "copy"),       # knockoff called copy
              Judged("c", "logo_in_photo", "y", "z", 0.7, 0, "knockoff"),  # wrong brand
              Judged("d", "distractor_photo", "", "x", 0.2, 0, "clear"),
              Judged("e", "distractor_photo", "", "x", 0.96, 0, "knockoff")]  # false flag
    r = verdict_report(judged)
    assert r["confusion"]["copy"]["copy"] == 1 and r["confusion"]["knockoff"]["copy"] == 1
    assert r["confusion"]["knockoff"]["knockoff"] == 1 and r["confusion"]["clear"]["knockoff"] == 1
    assert r["flag_precision"] == pytest.approx(2 / 4) and r["copy_precision"] == pytest.approx(1 / 2)
    assert r["per_family"]["distractor_photo"]["false_flag_rate"] == 0.5
    assert r["per_family"]["logo_in_photo"]["recall"] == 0.0


def test_pooled_average_precision_counts_every_candidate_and_every_true_pair():
    import numpy as np

    from brandguard.evaluation.calibration import DeepJudged, pooled_average_precision

    judged = [DeepJudged("q1", "copy_light", frozenset({"a/1"}), "a",
                         (("a/1", "a", None, None, None), ("b/1", "b", None, None, None))),
              DeepJudged("q2", "copy_light", frozenset({"c/1"}), "c", (("d/1", "d", None, None, None),))]
    # ranked: q2's wrong 0.95, q1's right 0.90 (precision 1/2), q1's wrong 0.80; q2's truth never found
    assert pooled_average_precision(judged, [np.array([0.9, 0.8]), np.array([0.95])]) == 0.25
    assert pooled_average_precision(judged, [np.array([0.9, 0.8]), np.array([0.5])]) == 0.5
    assert pooled_average_precision(judged, [None, None]) == 0.0
