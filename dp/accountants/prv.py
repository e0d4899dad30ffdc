"""The default method: Opacus' PRV accountant (Gopi et al. 2021), numerically tight.

Its ``eps_error`` (Opacus' default, 0.01) is an upper-bound slack on epsilon: the
returned value is at least the true epsilon of the composition.
"""

from __future__ import annotations

from collections.abc import Sequence

NAME = "prv"


def epsilon(history: Sequence[tuple[float, float, int]], delta: float) -> float:
    """PRV epsilon at ``delta`` of Opacus-style ``[(sigma, q, steps), ...]`` (non-empty)."""
    from opacus.accountants import create_accountant  # lazy: importing fedrx.dp is light

    acc = create_accountant(NAME)
    acc.history = list(history)
    return float(acc.get_epsilon(delta))
