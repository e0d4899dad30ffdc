"""The noise multiplier that meets a target epsilon over a planned schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence

from fedrx.dp.accountants.mechanism import Mechanism
from fedrx.dp.accountants.registry import check_kind, compute_epsilon
from fedrx.errors import ConfigError


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    total_steps: int,
    accountant: str = "prv",
    *,
    history: Sequence[Mechanism] = (),
    epsilon_tolerance: float = 0.01,
    max_sigma: float = 1e4,
) -> float:
    """Smallest noise multiplier (up to ``epsilon_tolerance``) meeting ``target_epsilon``.

    ``total_steps`` is the hospital's WHOLE planned schedule (rounds x local steps per
    round), so the returned sigma keeps the final cumulative epsilon, including any
    prior ``history``, at most ``target_epsilon``. Binary search like Opacus'
    ``get_noise_multiplier``; the returned sigma satisfies
    ``target - tolerance < eps(sigma) <= target``.
    """
    check_kind(accountant)
    if not target_epsilon > 0:
        raise ConfigError(f"target_epsilon must be > 0, got {target_epsilon}")
    if total_steps < 1:
        raise ConfigError(f"total_steps must be >= 1, got {total_steps}")

    def eps(sigma: float) -> float:
        try:
            return compute_epsilon([*history, Mechanism(sample_rate, sigma, total_steps)],
                                   delta, accountant)
        except (ValueError, ArithmeticError, RuntimeError):
            return math.inf  # numerically degenerate at tiny sigma: treat as not private

    if history and compute_epsilon(history, delta, accountant) >= target_epsilon:
        raise ConfigError(f"the recorded history alone already reaches target epsilon "
                          f"{target_epsilon}")
    lo, hi = 0.0, 1.0
    while eps(hi) > target_epsilon:
        lo, hi = hi, 2.0 * hi
        if hi > max_sigma:
            raise ConfigError(f"target epsilon {target_epsilon} unreachable with sigma <= "
                              f"{max_sigma} (q={sample_rate}, steps={total_steps})")
    while True:
        mid = 0.5 * (lo + hi)
        e = eps(mid)
        if e > target_epsilon:
            lo = mid
        else:
            hi = mid
            if target_epsilon - e < epsilon_tolerance:
                return hi
        if hi - lo < 1e-6:
            return hi
