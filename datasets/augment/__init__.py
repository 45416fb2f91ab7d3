"""Augmentations that mimic what sellers and counterfeiters do to brand imagery.

Why here and not in training: the same functions generate benchmark queries (so ground truth
knows the transform family) and training views (so the model learns exactly those
invariances). Every generator is ``fn(rng, ...) -> HxWx3 uint8 RGB`` and pure numpy/OpenCV,
cheap enough to run on the fly (a few ms at 256 px, see ``ops.measure_cost``).

- :mod:`~brandguard.datasets.augment.ops`: image basics (``ensure_rgb``, ``resize_max``, ``jpeg``,
  ``compose``), geometric and photometric edits, overlays (text, emoji, screenshot frames,
  borders, collages).
- :mod:`~brandguard.datasets.augment.families`: the query families (``copy_light``, ``copy_strong``,
  ``logo_in_photo``, ``knockoff``, ``distractor_photo``, ``distractor_unregistered``); the
  vocabulary itself is defined once in :mod:`brandguard.evaluation.families`.
- :mod:`~brandguard.datasets.augment.views`: the brand's genuine imagery (``reference_views``) and
  on-the-fly training views (``training_view``).

Import names from those modules; this package re-exports nothing.
"""
