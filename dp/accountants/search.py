"""Root search for the noise multiplier: ``eps(sigma) = target`` from just above.

``eps`` is decreasing in ``sigma`` and smooth in ``log sigma``, so the search works on
``log eps`` against ``log sigma``:

* :func:`gdp_guess`: a closed-form first guess, the CLT (Gaussian DP) approximation of
  Poisson-subsampled DP-SGD, ``mu = q sqrt(T (e^(1/sigma^2) - 1))`` (Bu, Dong, Long & Su,
  2020), inverted at the target ``(eps, delta)``; only a starting point, never a bound;
* :func:`bracket`: widens geometrically around the guess until ``eps(lo) > target >=
  eps(hi)``;
* :func:`solve`: Illinois (regula falsi that halves a stale end's weight) on that bracket;
* :func:`two_grid_root`: the search on a cheap coarse accountant, then the secant on the
  exact one from the coarse root and the coarse slope, usually two exact evaluations.

Every answer ``sigma`` satisfies ``target - tol < eps(sigma) <= target`` for the exact
``eps`` given.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Eps = Callable[[float], float]


def gdp_guess(target: float, delta: float, q: float, steps: int) -> float:
    """Sigma at which the GDP approximation of ``steps`` steps at rate ``q`` reaches
    ``(target, delta)``."""
    from scipy.stats import norm

    def delta_of(mu: float) -> float:
        return float(norm.cdf(-target / mu + mu / 2)
                     - math.exp(target) * norm.cdf(-target / mu - mu / 2))

    lo, hi = 1e-3, 50.0
    for _ in range(60):  # delta_of is increasing in mu
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if delta_of(mid) < delta else (lo, mid)
    r = hi / (q * math.sqrt(steps))
    return 1.0 / math.sqrt(math.log1p(r * r))


def bracket(eps: Eps, target: float, guess: float, min_sigma: float, max_sigma: float
            ) -> tuple[float, float, float, float]:
    """``(lo, hi, eps(lo), eps(hi))`` with ``eps(lo) > target >= eps(hi)``; ValueError if
    none lies in ``[min_sigma, max_sigma]``."""
    s = min(max(guess, min_sigma), max_sigma)
    e = eps(s)
    step = 1.25
    if e > target:
        while True:
            t = min(s * step, max_sigma)
            et = eps(t)
            if et <= target:
                return s, t, e, et
            if t >= max_sigma:
                raise ValueError("needs more noise than max_sigma")
            s, e, step = t, et, step * step
    while True:
        t = max(s / step, min_sigma)
        et = eps(t)
        if et > target:
            return t, s, et, e
        if t <= min_sigma:
            raise ValueError("target looser than sigma = min_sigma gives")
        s, e, step = t, et, step * step


def solve(eps: Eps, target: float, tol: float, lo: float, hi: float, e_lo: float,
          e_hi: float) -> tuple[float, float, float, float]:
    """Illinois search on the bracket ``eps(lo) > target >= eps(hi)``; stops when
    ``target - tol < eps(hi)``. Returns the final bracket ``(lo, hi, eps(lo), eps(hi))``."""
    lt = math.log(target)
    a, b = math.log(lo), math.log(hi)
    fa, fb = math.log(e_lo) - lt, math.log(max(e_hi, 1e-300)) - lt
    side = 0  # +1: the last step moved lo, -1: it moved hi
    for _ in range(100):
        if target - e_hi < tol or b - a < 1e-12:
            break
        x = b - fb * (b - a) / (fb - fa) if math.isfinite(fa) and fb != fa else 0.5 * (a + b)
        if not (a < x < b):
            x = 0.5 * (a + b)
        e = eps(math.exp(x))
        f = math.log(e) - lt if e > 0 else -math.inf
        if e > target:
            a, fa, e_lo = x, f, e
            if side == 1:
                fb *= 0.5  # hi kept twice: halve its weight
            side = 1
        else:
            b, fb, e_hi = x, f, e
            if side == -1:
                fa *= 0.5
            side = -1
    return math.exp(a), math.exp(b), e_lo, e_hi


def single_grid_root(eps: Eps, target: float, tol: float, guess: float, min_sigma: float,
                     max_sigma: float) -> float:
    """Bracket from ``guess``, then :func:`solve`."""
    return solve(eps, target, tol, *bracket(eps, target, guess, min_sigma, max_sigma))[1]


def two_grid_root(coarse: Eps, exact: Eps, target: float, tol: float, guess: float,
                  min_sigma: float, max_sigma: float) -> float:
    """Root of ``exact`` within ``tol`` from below, most of the work on ``coarse`` (a
    cheaper, close approximation of ``exact``)."""
    lo, hi, e_lo, e_hi = bracket(coarse, target, guess, min_sigma, max_sigma)
    lo, hi, e_lo, e_hi = solve(coarse, target, max(tol, 0.003 * target), lo, hi, e_lo, e_hi)
    slope = (math.log(e_hi) - math.log(e_lo)) / (math.log(hi) - math.log(lo)) \
        if math.isfinite(e_lo) and hi > lo else -1.0
    if not (slope < 0 and math.isfinite(slope)):
        slope = -1.0
    aim = target - tol / 3
    above: tuple[float, float] | None = None  # exact(s) > target
    below: tuple[float, float] | None = None  # exact(s) <= target
    s = hi
    for _ in range(6):
        e = exact(s)
        if target - tol < e <= target:
            return s
        if e > target:
            above = (s, e) if above is None or s > above[0] else above
        else:
            below = (s, e) if below is None or s < below[0] else below
        if above is not None and below is not None:
            return solve(exact, target, tol, above[0], below[0], above[1], below[1])[1]
        if not math.isfinite(e):
            s *= 1.25
            continue
        s = min(max(s * math.exp((math.log(aim) - math.log(e)) / slope), min_sigma), max_sigma)
    return single_grid_root(exact, target, tol, s, min_sigma, max_sigma)
