"""A hospital's accountant: a replayable list of mechanisms, epsilon from all of it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fedrx.dp.accountants.mechanism import Budget, Mechanism
from fedrx.dp.accountants.registry import DEFAULT_ACCOUNTANT, check_kind, compute_epsilon


def would_exceed(history: Sequence[Mechanism], next_mechanism: Mechanism, budget: Budget,
                 kind: str = DEFAULT_ACCOUNTANT) -> bool:
    """True iff ``history + [next_mechanism]`` has epsilon above ``budget.epsilon``.

    Call BEFORE any data is sampled or noise drawn; it touches neither.
    """
    return compute_epsilon([*history, next_mechanism], budget.delta, kind) > budget.epsilon


@dataclass
class PrivacyAccountant:
    """One hospital's accountant (method ``kind``): epsilon is always a function of the
    whole recorded ``history``, so replaying a ledger's history restores it exactly.

    The object holds only that list; with ``pld`` each epsilon extends the cached PLD of
    the history one round shorter by one convolution (see :mod:`.pld`), so a round costs
    milliseconds however long the history is."""

    kind: str = DEFAULT_ACCOUNTANT
    history: list[Mechanism] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_kind(self.kind)

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
