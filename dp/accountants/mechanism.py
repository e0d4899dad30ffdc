"""What the accountants account: DP-SGD mechanisms, budgets, and the default delta.

A hospital's privacy loss is a function of its WHOLE history of mechanisms: each
:class:`Mechanism` is ``steps`` compositions of the Poisson-subsampled Gaussian mechanism
(sampling rate ``q`` over patients, noise multiplier ``sigma``).

Default delta rule (:func:`default_delta`): ``delta = min(1e-5, 10**floor(log10(1/(10 n))))``
for ``n`` patients, i.e. a power of ten at least 10x below ``1/n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedrx.errors import ConfigError


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


def default_delta(n_patients: int) -> float:
    """``min(1e-5, 10**floor(log10(1/(10 n))))``: always at least 10x below ``1/n``."""
    if n_patients < 1:
        raise ConfigError(f"need at least one patient, got {n_patients}")
    return min(1e-5, 10.0 ** math.floor(math.log10(1.0 / (10.0 * n_patients))))
