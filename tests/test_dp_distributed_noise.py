"""Exact discrete samplers of distributed DP (fedrx.dp.distributed.discrete): statistical
tests against the exact probability mass functions, and a pinned known-answer vector."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrx.csprng import KeyStream
from fedrx.dp.distributed.discrete import (
    bernoulli_exp,
    bernoulli_ratio,
    discrete_gaussian,
    discrete_laplace,
    os_source,
    tail_bound,
    uniform_below,
)
from fedrx.errors import ConfigError


def _src(tag: int = 0) -> KeyStream:
    return KeyStream(bytes([tag]) * 32)


def _chi2_ok(samples: np.ndarray, pmf: dict[int, float], lo: int, hi: int) -> None:
    """Pearson chi-square over bins lo..hi plus the two tails; p-value > 1e-4 (the
    chi-square quantile via Wilson-Hilferty, so no scipy needed)."""
    n = samples.size
    obs, exp = [], []
    for x in range(lo, hi + 1):
        obs.append(np.count_nonzero(samples == x))
        exp.append(n * pmf[x])
    tail = 1.0 - sum(pmf[x] for x in range(lo, hi + 1))
    obs.append(np.count_nonzero((samples < lo) | (samples > hi)))
    exp.append(n * tail)
    obs_a, exp_a = np.array(obs, float), np.array(exp, float)
    keep = exp_a > 5
    stat = float(((obs_a[keep] - exp_a[keep]) ** 2 / exp_a[keep]).sum())
    k = int(keep.sum()) - 1
    z = 3.72  # one-sided 1e-4
    crit = k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3
    assert stat < crit, (stat, crit)


def _dgauss_pmf(s: float, span: int = 200) -> dict[int, float]:
    w = {x: math.exp(-x * x / (2 * s)) for x in range(-span, span + 1)}
    z = sum(w.values())
    return {x: v / z for x, v in w.items()}


def test_uniform_below_is_uniform_and_in_range():
    u = uniform_below(_src(1), np.full(120_000, 6, dtype=np.int64))
    assert u.min() == 0 and u.max() == 5
    _chi2_ok(u, {x: 1 / 6 for x in range(6)}, 0, 5)
    with pytest.raises(ConfigError):
        uniform_below(_src(), np.array([0]))


def test_bernoulli_ratio_int_and_big_denominators():
    n = 100_000
    b = bernoulli_ratio(_src(2), np.full(n, 3, dtype=np.int64), np.full(n, 7, dtype=np.int64))
    assert abs(b.mean() - 3 / 7) < 4 * math.sqrt(3 / 7 * 4 / 7 / n)
    den = 3 * (1 << 90)  # beyond int64: the lazy exact comparison
    num = np.full(n, 1 << 90, dtype=object)
    b = bernoulli_ratio(_src(3), num, np.full(n, den, dtype=object))
    assert abs(b.mean() - 1 / 3) < 4 * math.sqrt(2 / 9 / n)
    # certain outcomes are exact
    assert bernoulli_ratio(_src(), np.zeros(50, np.int64), np.full(50, 9, np.int64)).sum() == 0
    assert bernoulli_ratio(_src(), np.full(50, 9, np.int64), np.full(50, 9, np.int64)).all()


@pytest.mark.parametrize(("num", "den"), [(0, 1), (2, 5), (1, 1), (7, 5), (31, 10)])
def test_bernoulli_exp_frequency(num, den):
    n = 80_000
    b = bernoulli_exp(_src(4), np.full(n, num, dtype=np.int64), np.full(n, den, dtype=np.int64))
    p = math.exp(-num / den)
    assert abs(b.mean() - p) < 4.5 * math.sqrt(max(p * (1 - p), 1e-9) / n) + 1e-12


def test_bernoulli_exp_big_integers_match_small():
    n = 60_000
    scale = 1 << 80  # same ratio 7/5 with object (Python int) arithmetic
    b = bernoulli_exp(_src(5), np.full(n, 7 * scale, dtype=object),
                      np.full(n, 5 * scale, dtype=object))
    p = math.exp(-1.4)
    assert abs(b.mean() - p) < 4.5 * math.sqrt(p * (1 - p) / n)


def test_discrete_laplace_matches_its_pmf():
    t = 3
    x = discrete_laplace(_src(6), t, 150_000)
    a = math.exp(1 / t)
    pmf = {k: (a - 1) / (a + 1) * math.exp(-abs(k) / t) for k in range(-200, 201)}
    _chi2_ok(x, pmf, -12, 12)
    assert x.dtype == np.int64


@pytest.mark.parametrize("s", [1, 4, 30])
def test_discrete_gaussian_matches_its_pmf(s):
    x = discrete_gaussian(_src(7), s, 150_000)
    span = int(4 * math.sqrt(s)) + 1
    _chi2_ok(x, _dgauss_pmf(s), -span, span)


def test_discrete_gaussian_large_variance_moments():
    s = 1 << 40  # sigma = 2**20, the scale of a real share
    n = 200_000
    x = discrete_gaussian(os_source(), s, n)
    assert x.dtype == np.int64
    ratio = float(np.var(x.astype(np.float64))) / s
    assert abs(ratio - 1) < 5 * math.sqrt(2 / n)  # variance within a 5-sigma bound
    assert abs(float(np.mean(x))) < 5 * math.sqrt(s / n)
    # symmetric and sub-Gaussian: nothing beyond 7 sigma in 2e5 draws (p < 3e-6)
    assert np.max(np.abs(x)) < 7 * math.sqrt(s)


def test_pinned_known_answer_vector():
    """Regression vector: the keyed stream of key 0x2a*32 gives these draws (CKS Algorithm 3,
    S = 100, t = 11). Values are plausible N_Z(0, 100) draws and integers, nothing more:
    any change of the algorithms' word consumption shows up here."""
    x = discrete_gaussian(KeyStream(bytes([0x2A]) * 32), 100, 12)
    again = discrete_gaussian(KeyStream(bytes([0x2A]) * 32), 100, 12)
    assert np.array_equal(x, again)
    assert x.tolist() == PINNED


PINNED = [17, 1, -16, -16, -13, 16, -4, -21, 1, 3, 15, 8]


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError):
        discrete_gaussian(_src(), 0, 3)
    with pytest.raises(ConfigError):
        discrete_gaussian(_src(), 2.5, 3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        discrete_laplace(_src(), 0, 3)
    assert tail_bound(100, 40) < 1e-300
