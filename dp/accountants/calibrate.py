"""The noise multiplier that meets a target epsilon over a planned schedule.

One composed accountant object serves the whole search: the prior history is composed once
and every trial sigma is composed onto it. ``pld`` (the default) searches on a coarse PLD
grid first and finishes on the recording grid (:func:`fedrx.dp.accountants.pld.calibrate`,
well under a second for 1,000 planned steps); ``prv``/``rdp`` use the same root search
(Illinois on ``log eps`` against ``log sigma``) over fresh Opacus accountants.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fedrx.dp.accountants import pld
from fedrx.dp.accountants.mechanism import Mechanism
from fedrx.dp.accountants.registry import (
    DEFAULT_ACCOUNTANT,
    check_kind,
    compute_epsilon,
    merged_key,
)
from fedrx.dp.accountants.search import gdp_guess, single_grid_root
from fedrx.errors import ConfigError

MIN_SIGMA = 0.05  # below this the PLD grids explode; no useful schedule needs it


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    total_steps: int,
    accountant: str = DEFAULT_ACCOUNTANT,
    *,
    history: Sequence[Mechanism] = (),
    epsilon_tolerance: float = 0.01,
    max_sigma: float = 1e4,
) -> float:
    """Smallest noise multiplier (up to ``epsilon_tolerance``) meeting ``target_epsilon``.

    ``total_steps`` is the hospital's WHOLE planned schedule (rounds x local steps per
    round), so the returned sigma keeps the final cumulative epsilon, including any
    prior ``history``, at most ``target_epsilon``: it satisfies
    ``target - tolerance < eps(sigma) <= target`` with ``eps`` the accountant's own
    :func:`~fedrx.dp.accountants.registry.compute_epsilon`.
    """
    check_kind(accountant)
    if not target_epsilon > 0:
        raise ConfigError(f"target_epsilon must be > 0, got {target_epsilon}")
    if total_steps < 1:
        raise ConfigError(f"total_steps must be >= 1, got {total_steps}")
    if not (0.0 < delta < 1.0):
        raise ConfigError(f"delta must be in (0, 1), got {delta}")
    Mechanism(sample_rate, 1.0, total_steps)  # validates the sample rate
    if history and compute_epsilon(history, delta, accountant) >= target_epsilon:
        raise ConfigError(f"the recorded history alone already reaches target epsilon "
                          f"{target_epsilon}")
    try:
        if accountant == pld.NAME:
            return pld.calibrate(target_epsilon, delta, sample_rate, total_steps,
                                 merged_key(history), epsilon_tolerance, max_sigma, MIN_SIGMA)
        return _calibrate_generic(target_epsilon, delta, sample_rate, total_steps, accountant,
                                  list(history), epsilon_tolerance, max_sigma)
    except ValueError as exc:
        raise ConfigError(f"target epsilon {target_epsilon} unreachable with sigma in "
                          f"[{MIN_SIGMA}, {max_sigma}] (q={sample_rate}, "
                          f"steps={total_steps}): {exc}") from None


def _calibrate_generic(target: float, delta: float, q: float, steps: int, kind: str,
                       history: list[Mechanism], tol: float, max_sigma: float) -> float:
    def eps(sigma: float) -> float:
        try:
            return compute_epsilon([*history, Mechanism(q, sigma, steps)], delta, kind)
        except (ValueError, ArithmeticError, RuntimeError):
            return math.inf  # numerically degenerate at tiny sigma: treat as not private

    return single_grid_root(eps, target, tol, gdp_guess(target, delta, q, steps), MIN_SIGMA,
                            max_sigma)
