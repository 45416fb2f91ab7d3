"""The query-family vocabulary: what kind of listing a labelled query is, and the verdict it
should get. One definition, read by the corpus and demo builders, calibration, the
benchmarks and the tests. No dependencies, so anything may import it."""

from __future__ import annotations

FAMILIES: tuple[str, ...] = (
    "copy_light",
    "copy_strong",
    "logo_in_photo",
    "knockoff",
    "product_photo",
    "distractor_photo",
    "distractor_unregistered",
)
#: Queries made from a registered brand's imagery (they have a ground-truth reference).
MARK_FAMILIES = ("copy_light", "copy_strong", "logo_in_photo", "knockoff", "product_photo")
#: Edits of one of the reference images every brand has (``product_photo`` re-uses a shot only a
#: share of the brands have, so the corpus builds it apart).
COPY_FAMILIES = ("copy_light", "copy_strong")
#: Queries with no registered mark (no ground-truth row).
DISTRACTOR_FAMILIES = ("distractor_photo", "distractor_unregistered")
#: The verdict each family should get: a mark on a product photo is not a copy of any
#: reference image, so ``logo_in_photo`` expects ``knockoff``. ``product_photo`` is a brand's
#: catalogue shot photographed again (a phone photo of the product as the shot shows it, of a
#: screen or of a print): its pixels are the shot's, so it is a re-use, a ``copy``.
FAMILY_VERDICT = {
    "copy_light": "copy",
    "copy_strong": "copy",
    "knockoff": "knockoff",
    "logo_in_photo": "knockoff",
    "product_photo": "copy",
    "distractor_photo": "clear",
    "distractor_unregistered": "clear",
}
