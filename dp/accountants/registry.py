"""The offered accounting methods and epsilon of a whole history.

Each method is one module (:mod:`.prv`, :mod:`.rdp`) whose accountant object comes from
Opacus' own registry (``opacus.accountants.create_accountant``). Never offered: Opacus'
GDP accountant (a CLT approximation, not an upper bound) and summing per-round epsilons
(overstates by 10x or more).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence

from fedrx.dp.accountants import prv, rdp
from fedrx.dp.accountants.mechanism import Mechanism
from fedrx.errors import ConfigError

_METHODS: dict[str, Callable[[Sequence[tuple[float, float, int]], float], float]] = {
    prv.NAME: prv.epsilon,
    rdp.NAME: rdp.epsilon,
}
ACCOUNTANTS = tuple(_METHODS)


def check_kind(kind: str) -> None:
    """ConfigError unless ``kind`` is an offered method."""
    if kind not in _METHODS:
        raise ConfigError(f"unknown accountant {kind!r} (expected one of {ACCOUNTANTS}; "
                          "GDP is not an upper bound and is not offered)")


def compute_epsilon(history: Iterable[Mechanism], delta: float, kind: str = "prv") -> float:
    """Epsilon of the composition of every mechanism in ``history`` at ``delta``.

    A fresh accountant is built from the whole history on every call (mechanisms with
    equal ``(sigma, q)`` are merged; order does not matter for these accountants).
    Returns 0.0 for an empty history.
    """
    check_kind(kind)
    if not (0.0 < delta < 1.0):
        raise ConfigError(f"delta must be in (0, 1), got {delta}")
    merged: dict[tuple[float, float], int] = {}
    for m in history:
        if m.steps:
            key = (float(m.noise_multiplier), float(m.sample_rate))
            merged[key] = merged.get(key, 0) + int(m.steps)
    if not merged:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RDP "optimal order is the largest alpha" notice
        return _METHODS[kind]([(s, q, n) for (s, q), n in merged.items()], delta)
