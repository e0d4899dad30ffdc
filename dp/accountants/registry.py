"""The offered accounting methods and epsilon of a whole history.

Each method is one module: :mod:`.pld` (the default, :data:`DEFAULT_ACCOUNTANT`: Google
dp_accounting's privacy loss distributions, composed incrementally with cached PLDs),
:mod:`.prv` and :mod:`.rdp` (accountant objects from Opacus' own registry,
``opacus.accountants.create_accountant``; PRV costs about a second per call, its domain
search evaluates RDP at fractional orders). Never offered: Opacus' GDP accountant (a CLT
approximation, not an upper bound) and summing per-round epsilons (overstates by 10x or
more).

:func:`compute_epsilon` memoises its answers by (method, merged history, delta): the
ledger's recomputation of the epsilon the accountant has just computed costs nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence

from fedrx.dp.accountants import pld, prv, rdp
from fedrx.dp.accountants.cache import LRU
from fedrx.dp.accountants.mechanism import Mechanism
from fedrx.errors import ConfigError

_METHODS: dict[str, Callable[[Sequence[tuple[float, float, int]], float], float]] = {
    pld.NAME: pld.epsilon,
    prv.NAME: prv.epsilon,
    rdp.NAME: rdp.epsilon,
}
ACCOUNTANTS = tuple(_METHODS)
DEFAULT_ACCOUNTANT = pld.NAME
_MEMO = LRU(1024)  # (kind, merged key, delta) -> epsilon


def check_kind(kind: str) -> None:
    """ConfigError unless ``kind`` is an offered method."""
    if kind not in _METHODS:
        raise ConfigError(f"unknown accountant {kind!r} (expected one of {ACCOUNTANTS}; "
                          "GDP is not an upper bound and is not offered)")


def merged_key(history: Iterable[Mechanism]) -> pld.Key:
    """The canonical merged form of ``history``: sorted ``(q, sigma, steps)``, equal
    ``(q, sigma)`` summed, zero-step mechanisms dropped."""
    return pld.merge((m.sample_rate, m.noise_multiplier, m.steps) for m in history)


def compute_epsilon(history: Iterable[Mechanism], delta: float, kind: str = "prv") -> float:
    """Epsilon of the composition of every mechanism in ``history`` at ``delta``.

    ``kind`` defaults to ``"prv"``, what this function computed before ``pld`` existed
    (callers written against it keep their values); every fedrx caller names the kind.

    Always a function of the WHOLE history (mechanisms with equal ``(sigma, q)`` are
    merged; order does not matter for these accountants); ``pld`` gets there by extending a
    cached shorter history, ``prv``/``rdp`` build a fresh Opacus accountant. Returns 0.0
    for an empty history.
    """
    check_kind(kind)
    if not (0.0 < delta < 1.0):
        raise ConfigError(f"delta must be in (0, 1), got {delta}")
    key = merged_key(history)
    if not key:
        return 0.0
    if kind == pld.NAME:
        return pld.epsilon_of_key(key, float(delta))
    memo = _MEMO.get((kind, key, float(delta)))
    if memo is not None:
        return float(memo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RDP "optimal order is the largest alpha" notice
        eps = float(_METHODS[kind]([(s, q, n) for q, s, n in key], delta))
    _MEMO.put((kind, key, float(delta)), eps)
    return eps
