"""Exact discrete noise from OS randomness: Bernoulli, discrete Laplace, discrete Gaussian.

The algorithms are those of Canonne, Kamath and Steinke, "The Discrete Gaussian for
Differential Privacy" (NeurIPS 2020), Algorithms 1-3, run on integers and rationals only
(no floating point anywhere in a decision), vectorised over numpy arrays:

* :func:`bernoulli_ratio` ``Bernoulli(num/den)``: a uniform integer in ``[0, den)`` (rejection
  sampling of 64-bit words, no modulo bias) compared with ``num``; for denominators beyond
  int64 a lazy exact comparison of the binary expansion of a uniform with ``num/den``.
* :func:`bernoulli_exp` ``Bernoulli(exp(-num/den))``: Algorithm 1 (``K`` counts successes of
  ``Bernoulli(gamma/K)``, decided as ``Bernoulli(gamma) AND Bernoulli(1/K)``; output ``K``
  odd) for the fractional part, ``floor(gamma)`` independent ``Bernoulli(exp(-1))`` for the
  rest.
* :func:`discrete_laplace` ``P(x) ~ exp(-|x|/t)`` on the integers (Algorithm 2, ``s = 1``).
* :func:`discrete_gaussian` ``P(x) ~ exp(-x^2 / (2 S))`` on the integers for an integer
  variance parameter ``S`` (Algorithm 3 with ``t = floor(sqrt(S)) + 1``).

The random words come from a :class:`WordSource` (:class:`fedrx.csprng.KeyStream`: ChaCha20
keyed by ``os.urandom``; tests pass a keyed stream to pin outputs). Every output is exact:
its distribution is the stated one, with no float rounding (Mironov's floating-point attack
has nothing to read).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from fedrx.csprng import KeyStream
from fedrx.errors import ConfigError

_INT64_DEN = 1 << 62  # denominators below this take the fast integer path


class WordSource(Protocol):
    """Uniform 64-bit words (little-endian uint64)."""

    def words64(self, n: int) -> np.ndarray: ...


def os_source() -> WordSource:
    """A fresh ChaCha20 stream keyed by ``os.urandom`` (the only source for deployments)."""
    return KeyStream()


def uniform_below(src: WordSource, bound: np.ndarray) -> np.ndarray:
    """Uniform integers in ``[0, bound_i)`` for an int64 array ``1 <= bound < 2**62``.

    Rejection: a word ``w`` is used iff ``w < 2**64 - (2**64 mod bound)``, then ``w mod
    bound``; so every value has probability exactly ``1 / bound``.
    """
    b = np.asarray(bound, dtype=np.int64)
    if b.size and (b.min() < 1 or b.max() >= _INT64_DEN):
        raise ConfigError("uniform_below needs 1 <= bound < 2**62")
    ub = b.astype(np.uint64).ravel()
    out = np.empty(ub.size, dtype=np.uint64)
    todo = np.arange(ub.size)
    # 2**64 mod b, computed in wrapping uint64: (2**64 - b) mod b
    rem = (np.uint64(0) - ub) % ub
    while todo.size:
        w = src.words64(todo.size)
        r = rem[todo]
        ok = (r == 0) | (w < np.uint64(0) - r)
        idx = todo[ok]
        out[idx] = w[ok] % ub[idx]
        todo = todo[~ok]
    return out.astype(np.int64).reshape(b.shape)


def _lazy_less(src: WordSource, num: int, den: int) -> bool:
    """Exactly ``U < num/den`` for ``U`` uniform in [0, 1), reading 64 bits at a time."""
    acc, scale = 0, 1
    while True:
        acc = (acc << 64) | int(src.words64(1)[0])
        scale <<= 64
        # U lies in [acc, acc + 1) / scale
        if (acc + 1) * den <= num * scale:
            return True
        if acc * den >= num * scale:
            return False


def bernoulli_ratio(src: WordSource, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Exact coins with ``P(True) = num/den`` (``0 <= num <= den``, ``den >= 1``).

    int64 arrays take the integer path; object arrays of Python ints (any size) the lazy
    exact comparison (one word per coin, a second with probability ``2**-64``).
    """
    num = np.asarray(num)
    den = np.asarray(den)
    if num.dtype != object and den.dtype != object and (den.size == 0 or den.max() < _INT64_DEN):
        return uniform_below(src, np.broadcast_to(den, num.shape)) < num
    numo = np.broadcast_to(num.astype(object), np.broadcast_shapes(num.shape, den.shape))
    deno = np.broadcast_to(den.astype(object), numo.shape)
    w = src.words64(numo.size).astype(object).reshape(numo.shape)
    two64 = 1 << 64
    sure_yes = (w + 1) * deno <= numo * two64
    sure_no = w * deno >= numo * two64
    out = sure_yes.astype(bool)
    for i in np.flatnonzero(~(sure_yes | sure_no).ravel()):
        ix = np.unravel_index(i, numo.shape)
        # U in [w, w+1) / 2**64 straddles num/den: refine with more words
        w0 = int(w[ix])
        n_, d_ = int(numo[ix]) * two64 - w0 * int(deno[ix]), int(deno[ix])
        out[ix] = _lazy_less(src, n_, d_)
    return out


def bernoulli_exp(src: WordSource, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Exact coins with ``P(True) = exp(-num/den)`` (``num >= 0``, ``den >= 1``; int64 or
    object arrays of Python ints). CKS Algorithm 1 on the fractional part, times
    ``floor(num/den)`` coins of ``exp(-1)``."""
    num = np.asarray(num)
    den = np.broadcast_to(np.asarray(den), num.shape)
    if num.dtype == object or den.dtype == object:
        no, do = num.astype(object), den.astype(object)
        q = (no // do).astype(np.int64)
        r = no % do
        big = True
    else:
        q, r = np.divmod(num.astype(np.int64), den.astype(np.int64))
        big = False
    alive = np.ones(num.shape, dtype=bool)
    # floor(gamma) coins of exp(-1), stopping at the first failure
    j = 0
    while True:
        todo = np.flatnonzero((alive & (q > j)).ravel())
        if todo.size == 0:
            break
        alive.ravel()[todo] = _exp_minus_one(src, todo.size)
        j += 1
    # fractional part r/den in [0, 1): Algorithm 1
    todo = np.flatnonzero(alive.ravel())
    if todo.size:
        rr = r.ravel()[todo]
        dd = den.ravel()[todo]
        if big:
            rr, dd = rr.astype(object), dd.astype(object)
        alive.ravel()[todo] = _alg1(src, rr, dd)
    return alive


def _alg1(src: WordSource, r: np.ndarray, d: np.ndarray) -> np.ndarray:
    """CKS Algorithm 1: Bernoulli(exp(-r/d)) for ``0 <= r/d <= 1`` (1-D arrays)."""
    k = np.ones(r.shape, dtype=np.int64)
    running = np.arange(r.size)
    while running.size:
        a = bernoulli_ratio(src, r[running], d[running])
        if a.any():
            a[a] = uniform_below(src, k[running[a]]) == 0  # and Bernoulli(1/K)
        k[running[a]] += 1
        running = running[a]
    return (k % 2) == 1


def _exp_minus_one(src: WordSource, n: int) -> np.ndarray:
    """``n`` coins of Bernoulli(exp(-1)) (Algorithm 1 with gamma = 1)."""
    k = np.ones(n, dtype=np.int64)
    running = np.arange(n)
    while running.size:
        a = uniform_below(src, k[running]) == 0  # Bernoulli(1/K)
        k[running[a]] += 1
        running = running[a]
    return (k % 2) == 1


def discrete_laplace(src: WordSource, t: int, n: int) -> np.ndarray:
    """``n`` i.i.d. draws with ``P(x) = (e^{1/t} - 1)/(e^{1/t} + 1) * exp(-|x|/t)`` (int64)."""
    if not isinstance(t, int) or t < 1 or t >= _INT64_DEN:
        raise ConfigError("discrete Laplace scale t must be an integer in [1, 2**62)")
    out = np.empty(n, dtype=np.int64)
    todo = np.arange(n)
    tt = np.int64(t)
    while todo.size:
        m = todo.size
        u = uniform_below(src, np.full(m, tt))
        keep = bernoulli_exp(src, u, np.full(m, tt))
        u = u[keep]
        idx = todo[keep]
        v = _geometric_exp1(src, u.size)
        x = u + tt * v
        b = uniform_below(src, np.full(u.size, 2, dtype=np.int64)) == 1
        ok = ~(b & (x == 0))
        out[idx[ok]] = np.where(b[ok], -x[ok], x[ok])
        done = np.zeros(m, dtype=bool)
        done[np.flatnonzero(keep)[ok]] = True
        todo = todo[~done]
    return out


def _geometric_exp1(src: WordSource, n: int) -> np.ndarray:
    """Number of successes of Bernoulli(exp(-1)) before the first failure (int64)."""
    v = np.zeros(n, dtype=np.int64)
    running = np.arange(n)
    while running.size:
        a = _exp_minus_one(src, running.size)
        v[running[a]] += 1
        running = running[a]
    return v


def discrete_gaussian(src: WordSource, variance: int, n: int) -> np.ndarray:
    """``n`` i.i.d. draws of N_Z(0, S): ``P(x) ~ exp(-x^2 / (2 S))`` for integer ``S >= 1``.

    CKS Algorithm 3 with ``t = floor(sqrt(S)) + 1``: a discrete Laplace ``Y`` is kept with
    probability ``exp(-(|Y| - S/t)^2 / (2 S)) = exp(-(|Y| t - S)^2 / (2 S t^2))``, decided
    exactly with Python integers. The variance of N_Z(0, S) is below ``S`` (CKS Prop. 19)
    and within ``1e-300`` of it for ``S >= 10``.
    """
    if not isinstance(variance, int) or variance < 1 or variance >= 1 << 100:
        raise ConfigError("discrete Gaussian variance parameter must be an integer in "
                          "[1, 2**100)")
    s = variance
    t = math.isqrt(s) + 1
    den = 2 * s * t * t
    out = np.empty(n, dtype=np.int64)
    todo = np.arange(n)
    while todo.size:
        y = discrete_laplace(src, t, todo.size)
        a = np.abs(y).astype(object) * t - s
        acc = bernoulli_exp(src, a * a, np.full(y.size, den, dtype=object))
        out[todo[acc]] = y[acc]
        todo = todo[~acc]
    return out


def tail_bound(variance: int, margin: float) -> float:
    """An upper bound on ``P(|X| > margin * sqrt(S))`` for X ~ N_Z(0, S): the discrete
    Gaussian is sub-Gaussian with variance proxy S (CKS Prop. 23), so
    ``P(|X| >= m sqrt(S)) <= 2 exp(-m^2 / 2)``."""
    if variance < 1 or margin <= 0:
        raise ConfigError("tail_bound needs S >= 1 and margin > 0")
    return min(1.0, 2.0 * math.exp(-margin * margin / 2.0))
