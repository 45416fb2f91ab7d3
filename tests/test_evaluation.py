"""µAP, recall@P90 and recall@1 against values computed by hand."""

from __future__ import annotations

import pytest

from brandguard.errors import InputError
from brandguard.evaluation.metrics import (Prediction, evaluate, micro_ap, read_ground_truth, read_predictions,
                                   recall_at_1, write_predictions)

GT = {"q1": {"r1"}, "q2": {"r2"}, "q3": {"r3"}}
PREDS = [Prediction("q1", "r1", 0.9), Prediction("q4", "r1", 0.8), Prediction("q2", "r9", 0.7),
         Prediction("q2", "r2", 0.6), Prediction("q3", "r1", 0.5)]


def test_micro_ap_by_hand():
    # ranks: TP(p=1, r=1/3), FP, FP, TP(p=2/4, r=2/3), FP  ->  µAP = 1/3*1 + 1/3*1/2 = 0.5
    ap, r90 = micro_ap(PREDS, GT)
    assert ap == pytest.approx(0.5)
    assert r90 == pytest.approx(1 / 3)


def test_recall_at_1_by_hand():
    assert recall_at_1(PREDS, GT) == pytest.approx(1 / 3)


def test_perfect_and_empty():
    perfect = [Prediction(q, next(iter(r)), 1.0 - i * 0.1) for i, (q, r) in enumerate(sorted(GT.items()))]
    assert micro_ap(perfect, GT) == (pytest.approx(1.0), pytest.approx(1.0))
    assert micro_ap([], GT) == (0.0, 0.0)


def test_duplicate_pairs_count_once():
    dup = [Prediction("q1", "r1", 0.9), Prediction("q1", "r1", 0.8)]
    ap, _ = micro_ap(dup, {"q1": {"r1"}})
    assert ap == pytest.approx(1.0)


def test_evaluate_per_family_includes_distractors():
    fams = {"q1": "copy", "q2": "copy", "q3": "knockoff", "q4": "distractor"}
    m = evaluate(PREDS, GT, ["q1", "q2", "q3", "q4"], fams)
    assert m["micro_ap"] == pytest.approx(0.5)
    # copy family: q1,q2 + distractor q4. Ranked: q1r1 TP(1, 1/2), q4r1 FP, q2r9 FP, q2r2 TP(2/4, 2/2)
    assert m["per_family"]["copy"]["micro_ap"] == pytest.approx(0.5 * 1 + 0.5 * 0.5)
    # knockoff: q3 + q4. Ranked: q4r1 FP, q3r1 FP -> 0
    assert m["per_family"]["knockoff"]["micro_ap"] == pytest.approx(0.0)
    assert m["per_family"]["distractor"]["n_queries"] == 1


def test_unknown_query_ids_are_refused():
    with pytest.raises(InputError):
        evaluate(PREDS, GT, ["q1", "q2"])


def test_csv_roundtrip_and_validation(tmp_path):
    p = tmp_path / "predictions.csv"
    assert write_predictions(p, PREDS) == 5
    assert p.read_text().splitlines()[0] == "query_id,reference_id,score"
    back = read_predictions(p)
    assert [(x.query_id, x.reference_id) for x in back] == [(x.query_id, x.reference_id) for x in PREDS]
    bad = tmp_path / "bad.csv"
    bad.write_text("query,ref,score\nq1,r1,0.5\n")
    with pytest.raises(InputError):
        read_predictions(bad)
    bad.write_text("query_id,reference_id,score\nq1,r1,high\n")
    with pytest.raises(InputError):
        read_predictions(bad)
    gt = tmp_path / "gt.csv"
    gt.write_text("query_id,reference_id\nq1,r1\nq1,r5\nq2,r2\n")
    assert read_ground_truth(gt) == {"q1": {"r1", "r5"}, "q2": {"r2"}}


def test_a_folder_of_references_takes_its_kinds_from_the_table_beside_it(tmp_path):
    """A corpus split's ``references/`` has its kinds in ``references.csv`` (what the shape
    stage needs to leave product photos unstretched, in calibration as in a scan); a folder
    without one is all ``image``; a table without the columns is a typed error."""
    from PIL import Image

    from brandguard.errors import InputError
    from brandguard.inputs import folder_kinds, read_references

    refs = tmp_path / "references"
    for ident in ("acme/logo_clean", "acme/product_shot", "bolt/logo_clean"):
        (refs / ident).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), "white").save(refs / f"{ident}.png")
    assert {r.kind for r in read_references(refs)} == {"image"}
    (tmp_path / "references.csv").write_text("reference_id,brand,kind\nacme/logo_clean,acme,logo\n"
                                             "acme/product_shot,acme,product\n", encoding="utf-8")
    assert folder_kinds(refs) == {"acme/logo_clean": "logo", "acme/product_shot": "product"}
    assert {r.reference_id: r.kind for r in read_references(refs)} == {
        "acme/logo_clean": "logo", "acme/product_shot": "product", "bolt/logo_clean": "image"}
    (tmp_path / "references.csv").write_text("reference_id,brand\nacme/logo_clean,acme\n", encoding="utf-8")
    with pytest.raises(InputError, match="kind"):
        read_references(refs)
