"""Google dp-accounting's accountants: the audit's reference, independent of fedrx's own.

Each entry ``(sample_rate q, noise_multiplier sigma, steps n)`` is
``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))`` self-composed ``n`` times, under
add-or-remove-one neighbouring.

* :func:`reference_pld_epsilon`: dp_accounting's ``PLDAccountant`` on those events
  (discretisation :data:`PLD_DISCRETIZATION` = 1e-4), built from scratch; the yardstick of
  the recorded-epsilon bound (tests/test_dp_accounting_bound.py).
* :func:`pld_epsilon`: the same PLD construction (``from_gaussian_mechanism`` with the
  accountant's arguments, pessimistic, connect-the-dots), on the audit's grid
  :data:`AUDIT_DISCRETIZATION` = 5e-4 unless told otherwise, INCREMENTAL: an audit walking
  a ledger asks for every prefix of one history, and each answer extends the cached PLD of
  the previous prefix by one convolution (one-step and self-composed PLDs cached too), so
  an entry costs one convolution, not a rebuild of the whole history.
* :func:`rdp_epsilon`: dp_accounting's own RDP accountant, to check entries recorded with
  ``accountant="rdp"``.

Nothing here imports Opacus or the rest of :mod:`fedrx.dp.accountants` (in particular not
fedrx's ``pld`` accountant, its caches or its merging; only the generic
:class:`~fedrx.dp.accountants.cache.LRU` container): the audit rebuilds every value from
the ledger's numbers. Same library as the default ``pld`` accountant, different grid and
code path; ``prv`` entries (Opacus) are checked across libraries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedrx.dp.accountants.cache import LRU

PLD_DISCRETIZATION = 1e-4
AUDIT_DISCRETIZATION = 5e-4

Key = tuple[tuple[float, float, int], ...]
_ONE = LRU(16)  # (q, sigma, d) -> one-step PLD
_PARTS = LRU(16)  # (q, sigma, n, d) -> n-step PLD
_PREFIX = LRU(8)  # (key, d) -> PLD of the merged history key
_EPS = LRU(256)  # (key, delta, d) -> epsilon


def clear_caches() -> None:
    """Forget every cached PLD and epsilon (benchmarks of a cold audit)."""
    for c in (_ONE, _PARTS, _PREFIX, _EPS):
        c.clear()


def _events(history: Sequence[tuple[float, float, int]]) -> Any:
    import dp_accounting

    return dp_accounting.ComposedDpEvent([
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(s)), n)
        for q, s, n in history
    ])


def reference_pld_epsilon(history: Sequence[tuple[float, float, int]], delta: float,
                          discretization: float = PLD_DISCRETIZATION) -> float:
    """dp_accounting ``PLDAccountant`` epsilon of ``[(q, sigma, steps), ...]``, from scratch."""
    from dp_accounting import pld

    if not any(n for _, _, n in history):
        return 0.0
    acc = pld.PLDAccountant(value_discretization_interval=discretization)
    acc.compose(_events([h for h in history if h[2]]))
    return float(acc.get_epsilon(delta))


def _key(history: Sequence[tuple[float, float, int]]) -> Key:
    merged: dict[tuple[float, float], int] = {}
    for q, s, n in history:
        if int(n) > 0:
            merged[(float(q), float(s))] = merged.get((float(q), float(s)), 0) + int(n)
    return tuple(sorted((q, s, n) for (q, s), n in merged.items()))


def _part(q: float, s: float, n: int, d: float) -> Any:
    part = _PARTS.get((q, s, n, d))
    if part is None:
        from dp_accounting.pld import privacy_loss_distribution as pl

        one = _ONE.get((q, s, d))
        if one is None:
            one = pl.from_gaussian_mechanism(standard_deviation=s,
                                             value_discretization_interval=d, sampling_prob=q)
            _ONE.put((q, s, d), one)
        part = one if n == 1 else one.self_compose(n)
        _PARTS.put((q, s, n, d), part)
    return part


def _pld_of(key: Key, d: float) -> Any:
    hit = _PREFIX.get((key, d))
    if hit is not None:
        return hit
    want = {(q, s): n for q, s, n in key}
    base: Key = ()
    for (k, kd), _ in _PREFIX.items():  # the largest cached sub-history of key
        if kd == d and all(want.get((q, s), 0) >= n for q, s, n in k) and \
                sum(n for *_, n in k) > sum(n for *_, n in base):
            base = k
    out = _PREFIX.get((base, d)) if base else None
    have = {(q, s): n for q, s, n in base}
    for q, s, n in key:
        if n > have.get((q, s), 0):
            part = _part(q, s, n - have.get((q, s), 0), d)
            out = part if out is None else out.compose(part)
    _PREFIX.put((key, d), out)
    return out


def pld_epsilon(history: Sequence[tuple[float, float, int]], delta: float,
                discretization: float = AUDIT_DISCRETIZATION) -> float:
    """dp_accounting PLD epsilon of ``[(sample_rate, noise_multiplier, steps), ...]``
    (merged: order does not matter), extending the cached PLD of a shorter prefix."""
    key = _key(history)
    if not key:
        return 0.0
    eps = _EPS.get((key, delta, discretization))
    if eps is None:
        eps = float(_pld_of(key, discretization).get_epsilon_for_delta(delta))
        _EPS.put((key, delta, discretization), eps)
    return eps


def rdp_epsilon(history: Sequence[tuple[float, float, int]], delta: float) -> float:
    """dp_accounting RDP epsilon (for checking entries recorded with ``accountant="rdp"``)."""
    from dp_accounting import rdp

    if not any(n for _, _, n in history):
        return 0.0
    acc = rdp.RdpAccountant()
    acc.compose(_events([h for h in history if h[2]]))
    return float(acc.get_epsilon(delta))
