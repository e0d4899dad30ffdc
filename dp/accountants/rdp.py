"""Opacus' RDP accountant (Mironov et al. 2019): a looser upper bound than PRV.

Epsilon is converted from Renyi DP over Opacus' default order grid (when the optimum is
the largest order Opacus warns; :func:`~.registry.compute_epsilon` silences that notice,
the value is still a valid upper bound).
"""

from __future__ import annotations

from collections.abc import Sequence

NAME = "rdp"


def epsilon(history: Sequence[tuple[float, float, int]], delta: float) -> float:
    """RDP epsilon at ``delta`` of Opacus-style ``[(sigma, q, steps), ...]`` (non-empty)."""
    from opacus.accountants import create_accountant  # lazy: importing fedrx.dp is light

    acc = create_accountant(NAME)
    acc.history = list(history)
    return float(acc.get_epsilon(delta))
