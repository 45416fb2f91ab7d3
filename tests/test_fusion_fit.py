"""The fusion's logistic fit: a feature seen in its rare state a couple of times decides nothing."""

from __future__ import annotations

import numpy as np

from brandguard.engine.fusion import MIN_VARIED, fit_logistic


def _data(rare_rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Column 0 carries the label (noisy); column 1 is 1 everywhere except ``rare_rows``
    positive rows, where it is 0 (as "dense check done" was on the validation split)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(2000) < 0.3).astype(float)
    x0 = y * 1.5 + rng.normal(0, 1, len(y))
    x1 = np.ones(len(y))
    x1[np.flatnonzero(y)[:rare_rows]] = 0.0
    return np.column_stack([x0, x1]), y


def _probability(w: np.ndarray, b: float, mean: np.ndarray, scale: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(((x - mean) / scale) @ w + b)))


def test_rare_state_gets_no_weight() -> None:
    x, y = _data(rare_rows=2)
    w, b, mean, scale = fit_logistic(x, y, class_weight=False)
    assert w[1] == 0.0 and mean[1] == 1.0 and scale[1] == 1.0
    assert w[0] > 0.5  # the informative feature is still fitted
    # a negative-looking pair in the rare state scores as it would in the usual one
    p = _probability(w, b, mean, scale, np.array([[-1.0, 0.0], [-1.0, 1.0]]))
    assert abs(p[0] - p[1]) < 1e-12 and p[0] < 0.2


def test_without_the_guard_the_rare_state_decides() -> None:
    """What the guard prevents: standardised, the two rare rows sit ~30 deviations out and
    lift a negative-looking pair that shows the state over the flag line."""
    x, y = _data(rare_rows=2)
    w, b, mean, scale = fit_logistic(x, y, class_weight=False, min_varied=0)
    p = _probability(w, b, mean, scale, np.array([[-1.0, 0.0], [-1.0, 1.0]]))
    assert p[0] > 0.5 > 0.2 > p[1]


def test_a_feature_varied_often_enough_is_fitted() -> None:
    x, y = _data(rare_rows=MIN_VARIED + 40)
    w, _b, mean, _scale = fit_logistic(x, y, class_weight=False)
    assert w[1] < -0.1  # the state is seen on positives only: its absence counts against a match
    assert 0.9 < mean[1] < 1.0
