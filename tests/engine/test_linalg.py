"""Least squares on rank-deficient parity designs (spex.engine.linalg)."""

from __future__ import annotations

import numpy as np

from spex.engine.linalg import independent_columns, least_squares


def test_dependent_columns_are_found_wherever_they_sit():
    rng = np.random.default_rng(0)
    a = rng.choice([-1.0, 1.0], size=(20, 4))
    design = np.column_stack([a[:, 0], a[:, 1], a[:, 0] * 1.0, a[:, 2], a[:, 1] - a[:, 2], a[:, 3]])
    assert independent_columns(design).tolist() == [True, True, False, True, False, True]


def test_more_columns_than_rows_marks_the_excess_dependent():
    design = np.random.default_rng(1).choice([-1.0, 1.0], size=(3, 5))
    kept = independent_columns(design)
    assert kept.sum() <= 3 and not kept[3:].any()


def test_least_squares_gives_no_weight_to_unseen_directions():
    rng = np.random.default_rng(2)
    a = rng.choice([-1.0, 1.0], size=(30, 3))
    design = np.column_stack([a, a[:, 0] * a[:, 1] * 0 + a[:, 0]])  # column 3 duplicates column 0
    y = a @ np.array([1.0, -2.0, 0.5])
    coef = least_squares(design, y)
    np.testing.assert_allclose(design @ coef, y, atol=1e-9)
    assert np.abs(coef).max() < 3  # the duplicate shares the weight instead of cancelling at 1e13
    np.testing.assert_allclose(coef[0] + coef[3], 1.0, atol=1e-9)
