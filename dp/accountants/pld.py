"""The default method: Google dp_accounting's privacy loss distributions, composed incrementally.

Each mechanism ``(q, sigma, steps)`` is the PLD of the Poisson-subsampled Gaussian
(``dp_accounting.pld.privacy_loss_distribution.from_gaussian_mechanism(sigma,
sampling_prob=q)``, add-or-remove-one neighbouring, connect-the-dots, PESSIMISTIC
discretisation: the epsilon it returns is an upper bound on the true epsilon) self-composed
``steps`` times; a history is the composition of its mechanisms (order does not matter).

Cost. Nothing is recomputed from scratch on the hot path:

* the self-composed PLD of every ``(q, sigma, steps)`` is cached (a federation charges the
  same mechanism every round, so it is built once);
* composed histories are cached by their merged multiset of mechanisms; a history that
  extends a cached one (the usual case: one more round) is ONE convolution away from it;
* epsilons are cached by (history, delta), so the ledger's recomputation right after the
  accountant's is free.

* two of dp_accounting's Python loops over the whole support are done in numpy here, with
  the same arithmetic: the tail truncation after a convolution (:func:`_compose_dense`,
  bitwise the library's result) and the epsilon-for-delta walk
  (:func:`pld_epsilon_for_delta`, equal to 1e-9); the audit's recomputation
  (:mod:`.independent`) uses the library's own code for both.

All caches are small bounded LRUs (a few MB each entry at most), shared by the threads of
one process under a lock; they hold derived values only, the replayable truth stays the
list of mechanisms. :func:`calibrate` finds sigma for a planned schedule with one composed
history object: the search of :mod:`.search` on a coarse grid (``COARSE_DISCRETIZATION``,
also pessimistic), finished by a secant step or two on the recording grid, so the returned
sigma meets the target under exactly the accountant that will record the rounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fedrx.dp.accountants.cache import LRU
from fedrx.dp.accountants.search import gdp_guess, two_grid_root

NAME = "pld"
DISCRETIZATION = 1e-3  # value discretisation interval of the privacy loss (nats)
COARSE_DISCRETIZATION = 1e-2  # the calibration's first stage
_EMPTY: tuple[tuple[float, float, int], ...] = ()

# merged history: sorted ((sample_rate, noise_multiplier, steps), ...), steps summed
Key = tuple[tuple[float, float, int], ...]


_BASES = LRU(32)  # (q, sigma, d) -> PLD of one step
_SELF = LRU(32)  # (q, sigma, n, d) -> PLD of n steps
_STATES = LRU(16)  # (Key, d) -> PLD of a whole merged history
_EPS = LRU(1024)  # (Key, delta, d) -> epsilon


def clear_caches() -> None:
    """Forget every cached PLD and epsilon (tests and benchmarks of the cold path)."""
    for c in (_BASES, _SELF, _STATES, _EPS):
        c.clear()


def merge(history: Iterable[tuple[float, float, int]]) -> Key:
    """Canonical key of ``[(sample_rate, noise_multiplier, steps), ...]``: equal
    ``(q, sigma)`` merged, zero-step entries dropped, sorted."""
    merged: dict[tuple[float, float], int] = {}
    for q, s, n in history:
        if n:
            k = (float(q), float(s))
            merged[k] = merged.get(k, 0) + int(n)
    return tuple(sorted((q, s, n) for (q, s), n in merged.items()))


def _base(q: float, sigma: float, d: float) -> Any:
    pld = _BASES.get((q, sigma, d))
    if pld is None:
        from dp_accounting.pld import privacy_loss_distribution as pl  # lazy: heavy import

        pld = pl.from_gaussian_mechanism(sigma, sampling_prob=q, value_discretization_interval=d,
                                         pessimistic_estimate=True, use_connect_dots=True)
        _BASES.put((q, sigma, d), pld)
    return pld


def _self_composed(q: float, sigma: float, n: int, d: float) -> Any:
    pld = _SELF.get((q, sigma, n, d))
    if pld is None:
        base = _base(q, sigma, d)
        pld = base if n == 1 else base.self_compose(n)
        _SELF.put((q, sigma, n, d), pld)
    return pld


def _compose(a: Any, b: Any) -> Any:
    """``a.compose(b)`` (``b`` when ``a`` is None), truncation vectorised where it can be."""
    if a is None:
        return b
    from dp_accounting.pld import privacy_loss_distribution as pl

    remove = _compose_dense(getattr(a, "_pmf_remove", None), getattr(b, "_pmf_remove", None))
    if remove is None:
        return a.compose(b)
    if getattr(a, "_symmetric", False) and getattr(b, "_symmetric", False):
        return pl.PrivacyLossDistribution(remove)
    add = _compose_dense(getattr(a, "_pmf_add", None), getattr(b, "_pmf_add", None))
    return a.compose(b) if add is None else pl.PrivacyLossDistribution(remove, add)


def _compose_dense(a: Any, b: Any, tail_mass_truncation: float = 1e-15) -> Any:
    """dp_accounting's ``DensePLDPmf.compose`` with its tail truncation (a Python loop
    over the whole support there) done by ``cumsum``: the same sequential sums, so the
    same result. None unless both are dense PMFs."""
    import numpy as np
    from dp_accounting.pld import pld_pmf
    from scipy import signal

    layout = ("_probs", "_lower_loss", "_infinity_mass", "_discretization",
              "_pessimistic_estimate")
    dense = getattr(pld_pmf, "DensePLDPmf", None)
    if dense is None or type(a) is not dense or type(b) is not dense or \
            not all(hasattr(x, k) for x in (a, b) for k in layout):
        return None  # another dp_accounting layout: the caller uses the library's compose
    a.validate_composable(b)
    probs = signal.fftconvolve(a._probs, b._probs)
    inf_mass = a._infinity_mass + b._infinity_mass - a._infinity_mass * b._infinity_mass
    half = tail_mass_truncation / 2
    over = np.cumsum(probs) > half
    left = int(np.argmax(over)) if over.any() else len(probs)
    over = np.cumsum(probs[::-1]) > half
    right = len(probs) - (int(np.argmax(over)) if over.any() else len(probs))
    right = max(right, left + 1)
    left_mass, right_mass = np.sum(probs[:left]), np.sum(probs[right:])
    kept = probs[left:right]
    if a._pessimistic_estimate:
        kept[0] += left_mass
        right_tail = right_mass
    else:
        kept[-1] += right_mass
        right_tail = 0
    return dense(a._discretization, a._lower_loss + b._lower_loss + left, kept,
                 inf_mass + right_tail, a._pessimistic_estimate)


def _contains(big: Key, small: Key) -> int:
    """Total steps of ``small`` if it is a sub-multiset of ``big``, else -1."""
    have = {(q, s): n for q, s, n in big}
    total = 0
    for q, s, n in small:
        if have.get((q, s), 0) < n:
            return -1
        total += n
    return total


def composed(key: Key, d: float = DISCRETIZATION) -> Any:
    """The PLD of the merged history ``key`` (None when empty), extending the largest
    cached sub-history instead of composing from scratch."""
    if not key:
        return None
    hit = _STATES.get((key, d))
    if hit is not None:
        return hit
    best: Key = _EMPTY
    best_steps = 0
    for (k, kd), _ in _STATES.items():
        if kd == d:
            steps = _contains(key, k)
            if steps > best_steps:
                best, best_steps = k, steps
    pld = _STATES.get((best, d)) if best else None
    have = {(q, s): n for q, s, n in best}
    for q, s, n in key:
        extra = n - have.get((q, s), 0)
        if extra > 0:
            pld = _compose(pld, _self_composed(q, s, extra, d))
    _STATES.put((key, d), pld)
    return pld


def _dense_epsilon(pmf: Any, delta: float) -> float | None:
    """``pmf.get_epsilon_for_delta(delta)`` of a dense dp_accounting PMF, vectorised.

    dp_accounting walks the losses from the top in a Python loop; this is the same walk
    in numpy: for each loss (descending) the masses BEFORE adding it, the library's break
    test ``log((upper - delta) / lower) >= loss``, its underflow return ``max(0, loss)``,
    and its final formula. None (the caller asks the library) for a PMF without the
    dense layout or any non-finite intermediate.
    """
    import numpy as np

    probs = getattr(pmf, "_probs", None)
    lower = getattr(pmf, "_lower_loss", None)
    step = getattr(pmf, "_discretization", None)
    inf_mass = getattr(pmf, "_infinity_mass", None)
    if not isinstance(probs, np.ndarray) or probs.ndim != 1 or not len(probs) or \
            lower is None or step is None or inf_mass is None:
        return None
    if inf_mass > delta:
        return math.inf
    rp = probs[::-1]
    losses = (lower + len(probs) - 1 - np.arange(len(probs))) * step
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        w = np.exp(-losses) * rp
        up_after = inf_mass + np.cumsum(rp)
        low_after = np.cumsum(w)
        if not (np.all(np.isfinite(low_after)) and np.all(np.isfinite(up_after))):
            return None
        up = np.concatenate(([inf_mass], up_after[:-1]))
        low = np.concatenate(([0.0], low_after[:-1]))
        cand = np.log((up - delta) / low)
        brk = (up > delta) & (low > 0) & (cand >= losses)
        under = (up_after >= delta) & (low_after == 0)
    i_brk = int(np.argmax(brk)) if brk.any() else len(rp)
    i_under = int(np.argmax(under)) if under.any() else len(rp)
    if i_under < i_brk:
        return max(0.0, float(losses[i_under]))
    if i_brk < len(rp):
        u, lo_mass = float(up[i_brk]), float(low[i_brk])
    else:
        u, lo_mass = float(up_after[-1]), float(low_after[-1])
    if u <= lo_mass + delta:
        return 0.0
    return math.log((u - delta) / lo_mass)


def pld_epsilon_for_delta(pld: Any, delta: float) -> float:
    """``pld.get_epsilon_for_delta(delta)`` (max over the remove and add PMFs), with the
    vectorised walk where the PMF layout allows it."""
    out = 0.0
    pmfs = [getattr(pld, "_pmf_remove", None)]
    if not getattr(pld, "_symmetric", False):
        pmfs.append(getattr(pld, "_pmf_add", None))
    for pmf in pmfs:
        e = _dense_epsilon(pmf, delta) if pmf is not None else None
        if e is None:
            return float(pld.get_epsilon_for_delta(delta))
        out = max(out, e)
    return out


def epsilon_of_key(key: Key, delta: float, d: float = DISCRETIZATION) -> float:
    """Epsilon at ``delta`` of the merged history ``key`` (0.0 when empty), cached."""
    if not key:
        return 0.0
    eps = _EPS.get((key, delta, d))
    if eps is None:
        eps = pld_epsilon_for_delta(composed(key, d), delta)
        _EPS.put((key, delta, d), eps)
    return eps


def epsilon(history: Sequence[tuple[float, float, int]], delta: float) -> float:
    """PLD epsilon at ``delta`` of Opacus-style ``[(sigma, q, steps), ...]`` (the registry's
    calling convention)."""
    return epsilon_of_key(merge((q, s, n) for s, q, n in history), delta)


# -- calibration ------------------------------------------------------------------------


def calibrate(target: float, delta: float, q: float, steps: int, history: Key, tol: float,
              max_sigma: float, min_sigma: float) -> float:
    """Sigma with ``target - tol < eps <= target`` for ``history`` + ``steps`` steps of
    ``(q, sigma)``, eps from this accountant (recording grid), by
    :func:`~fedrx.dp.accountants.search.two_grid_root`. The caller checks inputs; raises
    ValueError when no sigma in ``[min_sigma, max_sigma]`` brackets the target."""
    def make(d: float) -> Callable[[float], float]:
        hist = composed(history, d)  # one composed object per grid, reused by every trial

        def eps(sigma: float) -> float:
            try:
                # cached: the rounds that follow charge the chosen sigma's one-step PLD
                trial = _base(q, sigma, d)
                if steps > 1:
                    trial = trial.self_compose(steps)
                return pld_epsilon_for_delta(_compose(hist, trial), delta)
            except (ValueError, ArithmeticError, MemoryError):
                return math.inf
        return eps

    # a hair below the target: later rounds compose the same PLDs along another path,
    # which may differ in the last few bits
    return two_grid_root(make(COARSE_DISCRETIZATION), make(DISCRETIZATION),
                         target * (1.0 - 1e-9), tol, gdp_guess(target, delta, q, steps),
                         min_sigma, max_sigma)
