"""Google dp-accounting's accountants: the audit's reference, independent of Opacus.

Each entry ``(sample_rate q, noise_multiplier sigma, steps n)`` is
``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))`` self-composed ``n`` times, under
add-or-remove-one neighbouring. :func:`pld_epsilon` is the PLD accountant (discretisation
1e-4), numerically tight like PRV; :func:`rdp_epsilon` dp-accounting's own RDP accountant,
to check entries recorded with ``accountant="rdp"``. Nothing here imports Opacus or the
rest of :mod:`fedrx.dp.accountants`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PLD_DISCRETIZATION = 1e-4


def _events(history: Sequence[tuple[float, float, int]]) -> Any:
    import dp_accounting

    return dp_accounting.ComposedDpEvent([
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(s)), n)
        for q, s, n in history
    ])


def pld_epsilon(history: Sequence[tuple[float, float, int]], delta: float) -> float:
    """dp_accounting PLD epsilon of ``[(sample_rate, noise_multiplier, steps), ...]``."""
    from dp_accounting import pld

    if not history:
        return 0.0
    acc = pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    acc.compose(_events(history))
    return float(acc.get_epsilon(delta))


def rdp_epsilon(history: Sequence[tuple[float, float, int]], delta: float) -> float:
    """dp_accounting RDP epsilon (for checking entries recorded with ``accountant="rdp"``)."""
    from dp_accounting import rdp

    if not history:
        return 0.0
    acc = rdp.RdpAccountant()
    acc.compose(_events(history))
    return float(acc.get_epsilon(delta))
