"""One calibrated score per (listing, reference) from the global and the local evidence.

A naive max of the global cosine and a saturating inlier score lost to local features alone on
held-out data (DESIGN.md): the two scales mean different things for different images. Instead
logistic regressions, fitted on the validation split's candidates (brands never trained on), one
for candidates with a geometric match and one for those with the global score alone, turn the
evidence into a probability that the pair is a true match; thresholds on that probability are
then set at the target precision, like the global ones.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from brandguard.errors import BundleError

# The evidence one (listing, reference) pair has. "global" is the background-normalised cosine
# (when the reference was not among the global top-k, the lowest top-k score minus a margin and
# ``global_absent`` = 1).
FEATURES = ("global", "global_absent", "log_inliers", "inliers_ge8", "inliers_ge15", "inliers_ge30",
            "inlier_ratio", "coverage", "mirrored", "log_votes", "area_share", "instances", "global_gap",
            "inlier_gap", "coverage_gap", "outline_share", "outline_fits",
            # dense agreement of the reference laid over the listing (vision/agreement.py)
            "dense", "ncc", "grad_ncc", "agree_share", "agree_frac", "textured_frac", "inside_share",
            "agree_gap",
            # the reference's mark laid over the listing where its outline fits (vision/shapes.py)
            "shape", "shape_iou", "shape_excess", "shape_part_iou", "shape_mirrored", "shape_area",
            "shape_complexity", "shape_multi", "shape_stretch")
SHAPE_KNEE = 0.75  # shape IoU above this is where outlines stop agreeing by chance (val)
MIN_VARIED = 20  # rows a feature must depart from its usual value in for its weight to be fitted


@dataclass(frozen=True)
class PairEvidence:
    """The inputs of the fused score for one candidate reference of one listing."""

    global_score: float
    global_absent: bool
    inliers: int = 0
    inlier_ratio: float = 0.0
    coverage: float = 0.0
    mirrored: bool = False
    votes: int = 0
    area_share: float = 0.0
    instances: int = 0
    # Against the listing's other candidates: a brand's logo and its product photo both match a
    # copy of one of them; the one that explains the listing best is the copy's source.
    global_gap: float = 0.0  # this global score minus the listing's best
    inlier_gap: float = 0.0  # log1p(inliers) minus the listing's best
    coverage_gap: float = 0.0  # coverage minus the listing's best
    # The reference's projected outline over the listing's area: about 1 when the listing is that
    # image (a copy), far below when a mark inside another picture matched.
    outline_share: float = 0.0
    # Dense agreement (``brandguard.vision.agreement``); ``dense`` False: not measured.
    dense: bool = False
    ncc: float = 0.0
    grad_ncc: float = 0.0
    agree_share: float = 0.0
    agree_frac: float = 0.0
    textured_frac: float = 0.0
    inside_share: float = 0.0
    agree_gap: float = 0.0  # agree_share minus the listing's best
    # The shape stage: ``shape`` False: no placement of the reference's mark was measured.
    shape: bool = False
    shape_iou: float = 0.0  # the whole mark against the listing's colour class where it fits
    shape_part_iou: float = 0.0  # the mark's largest part against the listing part it was aligned on
    shape_mirrored: bool = False
    shape_area: float = 0.0  # the placed mark's share of the listing
    shape_complexity: float = 0.0  # spread of the mark's radial profile (0: a disc)
    shape_parts: int = 0  # parts of the mark (letters, stripes)
    shape_stretch: float = 1.0  # the placement's longer axis over its shorter (an affine fit; 1: a similarity)

    def vector(self) -> list[float]:
        # Inlier steps let a linear model say "8 agreeing points is a lot more than 5".
        return [self.global_score, float(self.global_absent), math.log1p(self.inliers), float(self.inliers >= 8),
                float(self.inliers >= 15), float(self.inliers >= 30), self.inlier_ratio, self.coverage,
                float(self.mirrored), math.log1p(self.votes), self.area_share, float(min(self.instances, 3)),
                self.global_gap, self.inlier_gap, self.coverage_gap, min(self.outline_share, 4.0),
                float(0.5 <= self.outline_share <= 2.5), float(self.dense), self.ncc, self.grad_ncc,
                self.agree_share, self.agree_frac, self.textured_frac, self.inside_share, self.agree_gap,
                float(self.shape), self.shape_iou, max(0.0, self.shape_iou - SHAPE_KNEE), self.shape_part_iou,
                float(self.shape_mirrored), math.log(max(self.shape_area, 1e-4)) if self.shape else 0.0,
                self.shape_complexity, float(self.shape_parts > 1),
                math.log(max(self.shape_stretch, 1.0)) if self.shape else 0.0]


@dataclass(frozen=True)
class DeepCalibration:
    """Fusion weights and the thresholds of the deep (global + local) verdicts.

    ``flag``: fused probability from which a listing is flagged (target precision on val).
    ``copy_inliers`` / ``copy_area``: a flagged match is a ``copy`` when the reference agrees
    geometrically as a whole, not mirrored, with at least this many inliers, and its outline
    covers at least this share of the listing (a mark small inside a photo is not a copy of
    the reference image); or when the global score alone is at copy level.
    ``auto_gate``: in ``auto`` depth, listings whose best global score reaches this go deep.
    ``geometry_inliers``: a match with this many inliers is flagged whatever the probability.
    """

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    flag: float = 0.5
    copy_inliers: int = 15
    copy_area: float = 0.25
    auto_gate: float = -1.0
    # A local match this strong flags on its own (geometry is rarely wrong at that count, even
    # where the global score is far off, e.g. a small mark on an unusual photo).
    geometry_inliers: int = 10**6
    # Which of a brand's references a listing was made from (:func:`prefer_sources`): another
    # reference of the brand takes the first place when it agrees (grey NCC >= ``source_ncc``)
    # on at least ``source_beyond`` of the listing outside the first one's outline.
    source_ncc: float = 0.6
    source_beyond: float = 0.06
    # ... and the brand's other references are scaled by this (1: left as they are).
    sibling_factor: float = 1.0
    # The evidence the weights belong to, by name: a calibration fitted before a feature
    # existed keeps working on the features it knows.
    features: tuple[str, ...] = FEATURES
    method: str = "default"
    report: dict = field(default_factory=dict)
    # A second model ({weights, bias, mean, scale} over the same features) for candidates with no
    # geometric match, whose evidence is the global score alone; None: one model for all. Two
    # unweighted models give probabilities that compare across listings (a pooled ranking).
    global_only: dict | None = None
    # A third model, same form, for candidates found by the shape stage without a geometric
    # match (their evidence is an outline that fits, which chance meets more often than inliers);
    # None: they go to ``global_only``.
    shape_only: dict | None = None
    # Candidates of the shape model flag from this probability (>= ``flag``): the target precision
    # among those flags alone on val, so an outline fit is as trustworthy a flag as the rest
    # (val: shape-model flags were right 84% of the time at ``flag``, geometric ones 97%).
    # None: ``flag``.
    shape_flag: float | None = None

    def __post_init__(self) -> None:
        n = len(self.features)
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown or not n or len(set(self.features)) != n:
            raise BundleError(f"deep calibration features must be distinct names from {FEATURES}; got {unknown or n}")
        if len(self.weights) != n or len(self.mean) != n or len(self.scale) != n:
            raise BundleError(f"deep calibration needs one weight, mean and scale per feature ({n})")
        if not 0.0 <= self.flag <= 1.0:
            raise BundleError(f"deep calibration flag {self.flag} not a probability")
        if self.shape_flag is not None and not self.flag <= self.shape_flag <= 1.0:
            raise BundleError(f"deep calibration shape_flag {self.shape_flag} must lie between flag and 1")
        for name in ("global_only", "shape_only"):
            g = getattr(self, name)
            if g is not None and (not all(len(g.get(k, ())) == n for k in ("weights", "mean", "scale"))
                                  or "bias" not in g):
                raise BundleError(f"deep calibration {name} needs bias and one weight, mean and scale per feature ({n})")

    def probability(self, evidence: list[PairEvidence]) -> np.ndarray:
        if not evidence:
            return np.zeros(0)
        cols = [FEATURES.index(f) for f in self.features]
        x = np.array([e.vector() for e in evidence], np.float64)[:, cols]
        z = ((x - self.mean) / self.scale) @ np.asarray(self.weights) + self.bias
        alone = np.array([e.inliers == 0 for e in evidence])
        if self.global_only is not None:
            z = np.where(alone, _linear(self.global_only, x), z)
        if self.shape_only is not None:
            z = np.where(alone & np.array([e.shape for e in evidence]), _linear(self.shape_only, x), z)
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def flag_for(self, evidence: PairEvidence) -> float:
        """The probability a candidate with this evidence flags from: ``shape_flag`` for the
        shape model's candidates (an outline fit, no geometric match), ``flag`` otherwise."""
        if self.shape_flag is not None and self.shape_only is not None and evidence.inliers == 0 and evidence.shape:
            return self.shape_flag
        return self.flag

    def confidence(self, p: float, flagged: bool, threshold: float | None = None) -> float:
        """How sure a deep verdict is of itself, on the fast path's scale: the fused probability's
        log-odds margin over the flag threshold it was held to (``flag`` unless given; 0.5 at the
        threshold, a near miss either way), so confidences mean the same whatever the
        calibration's base rate puts the threshold at."""
        eps = 1e-6
        t = self.flag if threshold is None else threshold
        margin = math.log((p + eps) / (1 - p + eps)) - math.log((t + eps) / (1 - t + eps))
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, margin if flagged else -margin))))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DeepCalibration":
        try:
            return cls(**{**d, "weights": tuple(d["weights"]), "mean": tuple(d["mean"]),
                          "scale": tuple(d["scale"]), "features": tuple(d.get("features", FEATURES))})
        except (KeyError, TypeError) as exc:
            raise BundleError(f"invalid deep calibration: {exc}") from exc


def _linear(model: dict, x: np.ndarray) -> np.ndarray:
    return ((x - np.asarray(model["mean"])) / np.asarray(model["scale"])) @ np.asarray(model["weights"]) + float(model["bias"])


def with_gaps(evidence: list[PairEvidence]) -> list[PairEvidence]:
    """The same evidence with each candidate's gaps to the listing's best candidate filled in."""
    if not evidence:
        return evidence
    g = max(e.global_score for e in evidence)
    li = max(math.log1p(e.inliers) for e in evidence)
    cov = max(e.coverage for e in evidence)
    ag = max(e.agree_share for e in evidence)
    return [replace(e, global_gap=e.global_score - g, inlier_gap=math.log1p(e.inliers) - li,
                    coverage_gap=e.coverage - cov, agree_gap=e.agree_share - ag) for e in evidence]


def prefer_sources(brands: list[str], probs: np.ndarray, agreements: list, min_ncc: float,
                   min_beyond: float, sibling_factor: float = 1.0) -> tuple[np.ndarray, dict[int, tuple[int, float]]]:
    """Per brand, the reference the listing was made from takes the brand's first place.

    A listing that copies a brand's product photo matches the brand's bare logo as well, and
    the fusion often prefers the logo (its keypoints are all on the mark, so its coverage is
    high). Another reference of the brand wins when it agrees densely (grey NCC >= ``min_ncc``)
    on at least ``min_beyond`` of the listing *outside* the first reference's outline: it
    explains pixels the first cannot. The two swap probabilities, so a listing's score is
    unchanged. The brand's other references are then scaled by ``sibling_factor``: they match
    because they share the first one's mark, which is weaker evidence that the listing was made
    from them. Returns the new probabilities and {new first: (old first, share beyond)}.
    """
    out = np.array(probs, np.float64, copy=True)
    swaps: dict[int, tuple[int, float]] = {}
    for brand in dict.fromkeys(brands):
        idx = [i for i, b in enumerate(brands) if b == brand]
        if len(idx) < 2:
            continue
        top = max(idx, key=lambda i: (probs[i], -i))
        best, share = None, min_beyond
        for i in idx:
            a = agreements[i]
            if i == top or a is None or a.ncc < min_ncc:
                continue
            other = agreements[top]
            s = a.beyond(other) if other is not None else a.agree_share
            if s > share:
                best, share = i, s
        first = top
        if best is not None:
            out[best], out[top] = probs[top], min(probs[top], probs[best]) - 1e-6
            swaps[best] = (top, share)
            first = best
        for i in idx:
            if i != first:
                out[i] *= sibling_factor
    return out, swaps


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50,
                 class_weight: bool = True, min_varied: int = MIN_VARIED
                 ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """L2-regularised logistic regression by Newton's method on standardised features.

    Returns (weights, bias, mean, scale). Positives are rare (one true reference among many
    candidates), so by default each class carries half the total weight.

    A feature that departs from its most common value in fewer than ``min_varied`` rows gets
    weight 0 (mean = that value, scale 1): standardised, its rare value sits tens of deviations
    out, so a small weight learnt from a couple of rows decides every pair that shows it. (Val:
    2 of 2,263 matched pairs had no dense check, both true; on test, a 5-inlier false match
    without one was lifted to probability 0.96.)
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError("need a non-empty N x F matrix and N labels")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    mode = np.array([_mode(col) for col in x.T]) if x.shape[1] else np.zeros(0)
    rare = (x != mode).sum(axis=0) < min_varied
    mean[rare], scale[rare] = mode[rare], 1.0
    xs = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    xs[:, :-1][:, rare] = 0.0  # no signal to fit: the weight stays at 0
    sw = np.ones(len(y))
    if class_weight and 0 < y.sum() < len(y):
        sw = np.where(y > 0, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    w = np.zeros(xs.shape[1])
    reg = np.full(xs.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xs @ w, -50, 50)))
        grad = xs.T @ (sw * (p - y)) / len(y) + reg * w
        hess = (xs * (sw * p * (1 - p))[:, None]).T @ xs / len(y) + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1]), mean, scale


def _mode(values: np.ndarray) -> float:
    """The most common value (the smallest of equally common ones)."""
    u, counts = np.unique(values, return_counts=True)
    return float(u[int(np.argmax(counts))])
