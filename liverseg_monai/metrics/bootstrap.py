"""Bootstrap confidence intervals over held-out cases and training seeds.

A benchmark arm is trained once per seed and scored on the same held-out cases, giving a
``[n_seeds, n_cases]`` table of per-case scores. The interval reported is the percentile bootstrap of
the grand mean, resampling seeds and cases independently (a two-way bootstrap: seed-to-seed variation
of training and case-to-case variation of the data both widen it). For an ablation the same is done on
the paired differences ``arm_a - arm_b`` (same seed, same case), which removes the variation both arms
share. scipy's ``scipy.stats.bootstrap`` resamples along one axis only, so the two-way resampling is
written here.
"""

from __future__ import annotations

import numpy as np


def bootstrap_ci(
    scores: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """Mean of ``scores`` ``[n_seeds, n_cases]`` and its percentile-bootstrap interval.

    Seeds (rows) and cases (columns) are resampled with replacement, independently; NaN scores (a case
    a metric is undefined for) are left out of each mean.

    Args:
        scores: per-seed, per-case scores (a 1-D array is one seed).
        n_boot: bootstrap resamples.
        level: coverage of the interval.
        seed: the resampling's random seed (the interval is deterministic for a seed).

    Returns:
        ``(mean, (low, high))``.

    Example:
        >>> m, (lo, hi) = bootstrap_ci(np.array([[0.5, 0.7, 0.6], [0.55, 0.65, 0.6]]))
        >>> round(m, 3), lo <= m <= hi
        (0.6, True)
    """
    table = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if table.size == 0 or np.all(np.isnan(table)):
        raise ValueError("no finite scores to bootstrap")
    rng = np.random.default_rng(seed)
    n_seeds, n_cases = table.shape
    rows = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    cols = rng.integers(0, n_cases, size=(n_boot, n_cases))
    means = np.array([np.nanmean(table[np.ix_(r, c)]) for r, c in zip(rows, cols)])
    alpha = (1.0 - level) / 2.0
    low, high = np.nanquantile(means, [alpha, 1.0 - alpha])
    return float(np.nanmean(table)), (float(low), float(high))


def paired_difference_ci(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """Mean of ``a - b`` (same seed, same case) and its two-way bootstrap interval (:func:`bootstrap_ci`)."""
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same [seeds, cases] shape, got {a.shape} and {b.shape}")
    return bootstrap_ci(a - b, n_boot=n_boot, level=level, seed=seed)


def verdict(ci95: tuple[float, float]) -> str:
    """``"shown"`` when the interval of an effect lies above zero, ``"reversed"`` below, else ``"not shown"``."""
    low, high = ci95
    return "shown" if low > 0 else "reversed" if high < 0 else "not shown"
