"""The demo's per-listing table: expected vs found, a wrong-brand flag counted as a miss."""

from __future__ import annotations

from brandguard.cli.demo import listing_table


def test_listing_table_marks_agreement_per_listing():
    expected = [{"listing_id": "l1", "family": "copy_light", "expected": "copy", "brand": "nike"},
                {"listing_id": "l2", "family": "knockoff", "expected": "knockoff", "brand": "puma"},
                {"listing_id": "l3", "family": "clean", "expected": "clear", "brand": ""},
                {"listing_id": "l4", "family": "logo_in_photo", "expected": "knockoff", "brand": "apple"}]
    results = {"l1": {"verdict": "copy", "brand": "nike", "score": 0.91},
               "l2": {"verdict": "knockoff", "brand": "adidas", "score": 0.7},
               "l3": {"verdict": "clear", "brand": None, "score": 0.2}}
    head, rule, *rows = listing_table(expected, results)
    assert head.split()[:3] == ["listing", "family", "expected"] and set(rule) == {"-"}
    by_id = {r.split()[0]: r for r in rows}
    assert by_id["l1"].endswith("yes") and "0.91" in by_id["l1"]
    assert by_id["l2"].endswith("NO")  # flagged, but for the wrong brand
    assert by_id["l3"].endswith("yes")
    assert "missing" in by_id["l4"] and by_id["l4"].endswith("NO")
    assert [r.split()[0] for r in rows] == ["l3", "l1", "l2", "l4"]  # grouped by family
