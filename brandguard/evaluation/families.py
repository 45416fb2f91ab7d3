"""The query-family vocabulary: what kind of listing a labelled query is, and the verdict it
should get. One definition, read by the corpus and demo builders, calibration, the
benchmarks and the tests. No dependencies, so anything may import it."""

from __future__ import annotations

FAMILIES: tuple[str, ...] = (
    "copy_light",
    "copy_strong",
    "logo_in_photo",
    "knockoff",
    "distractor_photo",
    "distractor_unregistered",
)
#: Queries made from a registered brand's imagery (they have a ground-truth reference).
MARK_FAMILIES = ("copy_light", "copy_strong", "logo_in_photo", "knockoff")
#: Re-uses of a reference image itself.
COPY_FAMILIES = ("copy_light", "copy_strong")
#: Queries with no registered mark (no ground-truth row).
DISTRACTOR_FAMILIES = ("distractor_photo", "distractor_unregistered")
#: The verdict each family should get: a mark on a product photo is not a copy of any
#: reference image, so ``logo_in_photo`` expects ``knockoff``.
FAMILY_VERDICT = {
    "copy_light": "copy",
    "copy_strong": "copy",
    "knockoff": "knockoff",
    "logo_in_photo": "knockoff",
    "distractor_photo": "clear",
    "distractor_unregistered": "clear",
}
