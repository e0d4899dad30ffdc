"""Per-hospital privacy accounting for patient-level DP-SGD.

A hospital's privacy loss is a function of its WHOLE history of mechanisms: each
:class:`Mechanism` is ``steps`` compositions of the Poisson-subsampled Gaussian mechanism
(sampling rate ``q`` over patients, noise multiplier ``sigma``). Epsilon is always
recomputed from the full history with a fresh Opacus accountant:

* ``"prv"`` (default): Opacus' PRV accountant (Gopi et al. 2021), numerically tight;
  its ``eps_error`` (0.01) is an upper-bound slack on epsilon;
* ``"rdp"``: Opacus' RDP accountant (Mironov et al. 2019), a looser upper bound.

Never used: summing per-round epsilons (overstates by 10x or more) and Opacus' GDP
accountant (a CLT approximation, not an upper bound).

Default delta rule (:func:`default_delta`): ``delta = min(1e-5, 10**floor(log10(1/(10 n))))``
for ``n`` patients, i.e. a power of ten at least 10x below ``1/n``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from fedrx.errors import ConfigError, FedrxError

ACCOUNTANTS = ("prv", "rdp")


class BudgetExceeded(FedrxError):
    """The next round would take the hospital past its epsilon budget (raised before noise)."""

    exit_code = 3


@dataclass(frozen=True)
class Mechanism:
    """``steps`` DP-SGD steps at patient sampling rate ``sample_rate`` and ``noise_multiplier``.

    Invariants: ``0 < sample_rate <= 1``, ``noise_multiplier > 0``, ``steps >= 0``.
    """

    sample_rate: float
    noise_multiplier: float
    steps: int

    def __post_init__(self) -> None:
        if not (0.0 < self.sample_rate <= 1.0):
            raise ConfigError(f"sample_rate must be in (0, 1], got {self.sample_rate}")
        if not (self.noise_multiplier > 0.0 and math.isfinite(self.noise_multiplier)):
            raise ConfigError(f"noise_multiplier must be > 0, got {self.noise_multiplier}")
        if self.steps < 0:
            raise ConfigError(f"steps must be >= 0, got {self.steps}")


def default_delta(n_patients: int) -> float:
    """``min(1e-5, 10**floor(log10(1/(10 n))))``: always at least 10x below ``1/n``."""
    if n_patients < 1:
        raise ConfigError(f"need at least one patient, got {n_patients}")
    return min(1e-5, 10.0 ** math.floor(math.log10(1.0 / (10.0 * n_patients))))


def _check_kind(kind: str) -> None:
    if kind not in ACCOUNTANTS:
        raise ConfigError(f"unknown accountant {kind!r} (expected one of {ACCOUNTANTS}; "
                          "GDP is not an upper bound and is not offered)")


def compute_epsilon(history: Iterable[Mechanism], delta: float, kind: str = "prv") -> float:
    """Epsilon of the composition of every mechanism in ``history`` at ``delta``.

    A fresh Opacus accountant is built from the whole history on every call (mechanisms
    with equal ``(sigma, q)`` are merged; order does not matter for these accountants).
    Returns 0.0 for an empty history.
    """
    _check_kind(kind)
    if not (0.0 < delta < 1.0):
        raise ConfigError(f"delta must be in (0, 1), got {delta}")
    merged: dict[tuple[float, float], int] = {}
    for m in history:
        if m.steps:
            key = (float(m.noise_multiplier), float(m.sample_rate))
            merged[key] = merged.get(key, 0) + int(m.steps)
    if not merged:
        return 0.0
    hist = [(s, q, n) for (s, q), n in merged.items()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RDP "optimal order is the largest alpha" notice
        if kind == "prv":
            from opacus.accountants import PRVAccountant

            acc = PRVAccountant()
            acc.history = hist
            return float(acc.get_epsilon(delta))
        from opacus.accountants import RDPAccountant

        racc = RDPAccountant()
        racc.history = hist
        return float(racc.get_epsilon(delta))


@dataclass(frozen=True)
class Budget:
    """A hospital's total (epsilon, delta) budget across all sessions on the same data."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ConfigError(f"budget epsilon must be > 0, got {self.epsilon}")
        if not (0.0 < self.delta < 1.0):
            raise ConfigError(f"budget delta must be in (0, 1), got {self.delta}")


def would_exceed(history: Sequence[Mechanism], next_mechanism: Mechanism, budget: Budget,
                 kind: str = "prv") -> bool:
    """True iff ``history + [next_mechanism]`` has epsilon above ``budget.epsilon``.

    Call BEFORE any data is sampled or noise drawn; it touches neither.
    """
    return compute_epsilon([*history, next_mechanism], budget.delta, kind) > budget.epsilon


@dataclass
class PrivacyAccountant:
    """One hospital's accountant: a replayable list of mechanisms, epsilon from all of it."""

    kind: str = "prv"
    history: list[Mechanism] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_kind(self.kind)

    def record(self, mechanism: Mechanism) -> None:
        """Append a mechanism that has been (or is being) run."""
        self.history.append(mechanism)

    def epsilon(self, delta: float) -> float:
        """Cumulative epsilon at ``delta`` over the whole recorded history."""
        return compute_epsilon(self.history, delta, self.kind)

    def epsilon_after(self, mechanism: Mechanism, delta: float) -> float:
        """Cumulative epsilon if ``mechanism`` were run next (history unchanged)."""
        return compute_epsilon([*self.history, mechanism], delta, self.kind)

    def would_exceed(self, mechanism: Mechanism, budget: Budget) -> bool:
        return would_exceed(self.history, mechanism, budget, self.kind)


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
    _check_kind(accountant)
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
