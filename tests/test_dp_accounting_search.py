"""The noise-multiplier root search on analytic stand-ins for an accountant."""

from __future__ import annotations

import math

import pytest

from fedrx.dp.accountants.search import (
    bracket,
    gdp_guess,
    single_grid_root,
    solve,
    two_grid_root,
)


def _eps(sigma: float) -> float:  # decreasing, smooth, like eps(sigma) of DP-SGD
    return 3.0 / sigma ** 1.5 + 0.2 / sigma


class _Counted:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, s: float) -> float:
        self.calls += 1
        return self.fn(s)


@pytest.mark.parametrize("target", [0.3, 1.0, 3.0, 8.0, 40.0])
def test_single_grid_root_from_above_within_tolerance(target):
    f = _Counted(_eps)
    s = single_grid_root(f, target, 0.01, guess=1.0, min_sigma=0.05, max_sigma=1e4)
    assert target - 0.01 < _eps(s) <= target
    assert f.calls <= 20


def test_two_grid_root_uses_few_exact_evaluations():
    coarse = _Counted(lambda s: 1.006 * _eps(s))  # pessimistic coarse grid: 0.6% above
    exact = _Counted(_eps)
    s = two_grid_root(coarse, exact, 2.0, 0.01, guess=3.0, min_sigma=0.05, max_sigma=1e4)
    assert 2.0 - 0.01 < _eps(s) <= 2.0
    assert exact.calls <= 3
    # a coarse grid BELOW the exact one (never for pessimistic PLDs) still ends right
    low = _Counted(lambda s: 0.99 * _eps(s))
    s = two_grid_root(low, _Counted(_eps), 2.0, 0.01, guess=0.5, min_sigma=0.05,
                      max_sigma=1e4)
    assert 2.0 - 0.01 < _eps(s) <= 2.0


def test_bracket_and_solve_refuse_out_of_range():
    with pytest.raises(ValueError, match="more noise"):
        bracket(_eps, 1e-4, 1.0, 0.05, 50.0)
    with pytest.raises(ValueError, match="looser"):
        bracket(_eps, 1e6, 1.0, 0.05, 50.0)
    lo, hi, e_lo, e_hi = bracket(_eps, 1.0, 1.0, 0.05, 1e4)
    assert e_lo > 1.0 >= e_hi
    lo, hi, e_lo, e_hi = solve(_eps, 1.0, 1e-6, lo, hi, e_lo, e_hi)
    assert 1.0 - 1e-6 < e_hi <= 1.0 and e_lo > 1.0


def test_gdp_guess_is_a_sensible_start():
    # Abadi et al.'s setting: q = 0.01, 10,000 steps, eps ~1 at delta 1e-5 for sigma ~4
    g = gdp_guess(1.0, 1e-5, 0.01, 10_000)
    assert 2.0 < g < 8.0
    assert gdp_guess(8.0, 1e-5, 0.05, 1000) < gdp_guess(1.0, 1e-5, 0.05, 1000)
    assert math.isfinite(gdp_guess(50.0, 1e-5, 0.5, 1))
