"""The ONE federation runner: the multi-round loop of ``fedrx simulate`` and of
``fedrx aggregator serve``.

:class:`FederationRunner` owns round scheduling, model selection on the hospitals'
validation patients, the privacy-budget stop and the round records; it drives one
:class:`~fedrx.protocol.aggregator.RoundMachine` per round over whatever
:class:`~fedrx.protocol.transport.Transport` it is given (in-process calls or gRPC). What
differs between simulation and deployment is behind :class:`RunHooks`: which hospitals take
part in the next round (the gRPC aggregator waits for connections), what happens after a
round (checkpoint, signed receipts), and whether to stop (a signal).

Invariants: round numbers only grow (a round that aborts or is abandoned consumes its
number, since hospitals refuse any round not newer than one they have seen); the selected
model is the model of the round with the best pooled validation Jaccard so far
(:func:`~fedrx.protocol.results.select_round`); a round interrupted by a stop request is
neither recorded nor checkpointed.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fedrx.errors import ConfigError
from fedrx.protocol.aggregator import RoundMachine, RoundOutcome, ServerState
from fedrx.protocol.optim import ServerOptimizer
from fedrx.protocol.protection import Protection
from fedrx.protocol.results import Pool, select_round
from fedrx.protocol.task import FederatedTask
from fedrx.protocol.transport import Transport

log = logging.getLogger("fedrx.runner")

BUDGET_POLICIES = ("continue", "stop")


def initial_state(task: FederatedTask, seed: int, optimizer: ServerOptimizer) -> ServerState:
    """Round 0: the task's initial weights for ``seed``, a fresh copy of ``optimizer`` and
    a 32-byte session id from the OS, which the round machine replaces by the session
    derived from the pinned federation (:mod:`fedrx.protocol.context`) whenever its
    protection has one (every party built by :mod:`fedrx.protocol.registry`)."""
    return ServerState(0, task.initial_weights(seed), copy.deepcopy(optimizer),
                       os.urandom(32))


class RunHooks:
    """What the deployment adds around the loop. The defaults run every round with a fixed
    set of hospitals and keep nothing (the in-process simulation)."""

    def __init__(self, hospitals: list[str] | None = None):
        self.hospitals = sorted(hospitals or [])

    def schedule(self, state: ServerState) -> tuple[ServerState, list[str]] | None:
        """(state, participants) of the next round, or None to end the federation. A hook
        may move ``state.round`` forward (numbers burnt elsewhere), never back."""
        return state, list(self.hospitals)

    def round_starting(self, rnd: int, participants: list[str]) -> None:
        """Called before round ``rnd`` sends anything."""

    def annotate(self, record: dict[str, Any], outcome: RoundOutcome) -> None:
        """Add deployment-specific fields to a round record before it is stored."""

    def round_done(self, state: ServerState, rounds: list[dict[str, Any]],
                   selected: np.ndarray | None) -> None:
        """After a round is recorded: ``rounds[-1]`` is its record (checkpoint, receipts)."""

    def should_stop(self) -> bool:
        """True to stop now (a signal); the round in flight is then abandoned."""
        return False


@dataclass
class RunResult:
    """Where the loop ended: the last state, every round record, the selected model."""

    state: ServerState
    rounds: list[dict[str, Any]]
    selected: np.ndarray | None
    stopped: str = ""
    interrupted: bool = False


@dataclass
class FederationRunner:
    """Runs rounds ``state.round + 1 .. rounds`` of one federation.

    ``protection``: the aggregator's protection instance (long-lived across rounds);
    ``pool``: the task's metric pooling; ``personalize``: the last round also asks for
    personalised evaluation; ``on_budget_exhausted``: ``stop`` ends the federation at the
    first round any hospital refuses for its privacy budget, ``continue`` only when every
    participant refused.
    """

    protection: Protection
    transport: Transport
    pool: Pool | None
    rounds: int
    personalize: bool = True
    on_budget_exhausted: str = "continue"
    evaluate: bool = True
    hooks: RunHooks = field(default_factory=RunHooks)

    def __post_init__(self) -> None:
        if self.on_budget_exhausted not in BUDGET_POLICIES:
            raise ConfigError("on_budget_exhausted must be 'continue' or 'stop'")

    def run_round(self, state: ServerState, participants: list[str]
                  ) -> tuple[ServerState, RoundOutcome]:
        """One round with ``participants``; the state's round number always advances."""
        last = state.round + 1 == self.rounds
        machine = RoundMachine(self.protection, self.transport, self.pool)
        new_state, outcome = machine.run(state, participants, evaluate=self.evaluate,
                                         personalize=last and self.personalize)
        if outcome.status != "completed":
            new_state = dataclasses.replace(new_state, round=outcome.round)
        return new_state, outcome

    def run(self, state: ServerState, rounds: list[dict[str, Any]] | None = None,
            selected: np.ndarray | None = None,
            progress: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
        """Run until ``self.rounds`` rounds are done, the hooks end it, or the budget stop.

        ``rounds``/``selected``: the records and selected model of rounds already run (a
        resumed federation)."""
        records = list(rounds or [])
        res = RunResult(state, records, selected)
        hooks = self.hooks
        while res.state.round < self.rounds and not hooks.should_stop():
            nxt = hooks.schedule(res.state)
            if nxt is None:
                break
            res.state, participants = nxt
            if res.state.round >= self.rounds:
                break
            hooks.round_starting(res.state.round + 1, participants)
            new_state, outcome = self.run_round(res.state, participants)
            if hooks.should_stop():
                res.interrupted = True
                break
            res.state = new_state
            rec = asdict(outcome)
            hooks.annotate(rec, outcome)
            records.append(rec)
            if select_round(records) is rec:
                res.selected = new_state.weights.copy()
            hooks.round_done(new_state, records, res.selected)
            if progress is not None:
                progress(rec)
            if outcome.refused and (self.on_budget_exhausted == "stop"
                                    or len(outcome.refused) == len(outcome.participants)):
                res.stopped = (f"stopped after round {outcome.round}: privacy budget exhausted "
                               f"at {', '.join(sorted(outcome.refused))}")
                log.warning("%s", res.stopped)
                break
        res.interrupted = res.interrupted or hooks.should_stop()
        return res
