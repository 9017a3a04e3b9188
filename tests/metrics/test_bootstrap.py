"""Two-way bootstrap intervals over seeds and cases."""

import numpy as np
import pytest

from liverseg_monai.metrics.bootstrap import bootstrap_ci, paired_difference_ci, verdict


def test_interval_covers_the_mean_and_narrows_with_more_cases():
    rng = np.random.default_rng(0)
    few = rng.normal(0.6, 0.1, size=(3, 10))
    many = rng.normal(0.6, 0.1, size=(3, 400))
    m_few, (lo_few, hi_few) = bootstrap_ci(few)
    m_many, (lo_many, hi_many) = bootstrap_ci(many)
    assert lo_few < m_few < hi_few and lo_many < m_many < hi_many
    assert hi_many - lo_many < 0.5 * (hi_few - lo_few)
    assert abs(m_many - 0.6) < 0.02


def test_seed_to_seed_variation_widens_the_interval():
    rng = np.random.default_rng(1)
    cases = rng.normal(0.0, 0.05, size=400)
    same = np.stack([0.6 + cases] * 3)
    spread = np.stack([0.5 + cases, 0.6 + cases, 0.7 + cases])
    width = lambda t: np.subtract(*bootstrap_ci(t)[1][::-1])  # noqa: E731
    assert width(spread) > 3 * width(same)


def test_paired_difference_removes_shared_variation():
    rng = np.random.default_rng(2)
    hardness = rng.normal(0.0, 0.2, size=(3, 100))  # per-case difficulty both arms share
    a, b = 0.62 + hardness, 0.60 + hardness + rng.normal(0, 0.005, size=(3, 100))
    diff, ci = paired_difference_ci(a, b)
    assert diff == pytest.approx(0.02, abs=0.005) and verdict(ci) == "shown"
    assert verdict(bootstrap_ci(a - 0.6 - hardness)[1]) == "shown"
    assert verdict((-0.01, 0.02)) == "not shown" and verdict((-0.03, -0.01)) == "reversed"
    with pytest.raises(ValueError, match="same"):
        paired_difference_ci(a, b[:, :50])


def test_nan_cases_are_left_out_and_results_repeat_for_a_seed():
    t = np.array([[0.5, np.nan, 0.7], [0.6, 0.6, np.nan]])
    assert bootstrap_ci(t) == bootstrap_ci(t)
    assert bootstrap_ci(t)[0] == pytest.approx(0.6)
    with pytest.raises(ValueError):
        bootstrap_ci(np.full((2, 2), np.nan))
