"""The aggregator's round state machine, shared by simulation and deployment.

One round walks these phases, each transition checked against :data:`ALLOWED`:

``SELECT`` (choose participants) -> ``TRAIN`` (send the global model + hash; hospitals
train and prepare their protected input) -> ``PROTECT`` (one sub-step per protection
stage, dropouts allowed at each) -> ``UPDATE`` (unprotected SUM -> weighted average delta
-> server optimizer step) -> ``EVALUATE`` (optional: hospitals report metric sums on
their own held-out patients) -> ``DONE``. Any phase may go to ``ABORTED`` with a reason;
an aborted round leaves the global model unchanged and the federation continues.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedrx.errors import ConfigError, ProtocolAbort, ProtocolError
from fedrx.protocol.messages import EVALUATE, TRAIN, EvalReport, EvalRequest, TrainAck, TrainRequest
from fedrx.protocol.optim import ServerOptimizer
from fedrx.protocol.protection import Protection, RoundContext
from fedrx.protocol.task import model_hash
from fedrx.protocol.transport import Transport

log = logging.getLogger("fedrx.aggregator")


class Phase(enum.Enum):
    SELECT = "select"
    TRAIN = "train"
    PROTECT = "protect"
    UPDATE = "update"
    EVALUATE = "evaluate"
    DONE = "done"
    ABORTED = "aborted"


ALLOWED: dict[Phase, set[Phase]] = {
    Phase.SELECT: {Phase.TRAIN, Phase.ABORTED},
    Phase.TRAIN: {Phase.PROTECT, Phase.ABORTED},
    Phase.PROTECT: {Phase.PROTECT, Phase.UPDATE, Phase.ABORTED},
    Phase.UPDATE: {Phase.EVALUATE, Phase.DONE, Phase.ABORTED},
    Phase.EVALUATE: {Phase.DONE},
    Phase.DONE: set(),
    Phase.ABORTED: {Phase.EVALUATE},
}


@dataclass
class ServerState:
    """Everything the aggregator carries between rounds (checkpointable)."""

    round: int
    weights: np.ndarray
    optimizer: ServerOptimizer
    session_id: bytes

    @property
    def model_hash(self) -> str:
        return model_hash(self.weights)


@dataclass
class RoundOutcome:
    """What happened in one round; ``metrics`` are pooled over hospitals' test patients,
    ``val_metrics`` over their validation patients (model selection)."""

    round: int
    status: str = "running"
    reason: str = ""
    participants: list[str] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    contributors: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    examples: float = 0.0
    update_norm: float = 0.0
    model_hash: str = ""
    protection_stats: dict[str, Any] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    val_metrics: dict[str, float] = field(default_factory=dict)
    hospital_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    ledger_heads: dict[str, str] = field(default_factory=dict)
    phases: list[str] = field(default_factory=list)


class RoundMachine:
    """Drives ONE round for the aggregator over any :class:`Transport`."""

    def __init__(self, protection: Protection, transport: Transport,
                 pool: Callable[[list[dict]], dict[str, float]] | None = None):
        self.protection = protection
        self.transport = transport
        self.pool = pool
        self.phase = Phase.SELECT

    def _go(self, phase: Phase, out: RoundOutcome) -> None:
        if phase not in ALLOWED[self.phase] and not (phase is Phase.PROTECT
                                                     and self.phase is Phase.PROTECT):
            raise ProtocolError(f"invalid round transition {self.phase.value} -> {phase.value}")
        self.phase = phase
        out.phases.append(phase.value)

    def run(self, state: ServerState, participants: Sequence[str], *, evaluate: bool = True,
            personalize: bool = False, params: dict[str, Any] | None = None,
            ) -> tuple[ServerState, RoundOutcome]:
        rnd = state.round + 1
        t0 = time.perf_counter()
        pinned = self.protection.pinned
        if pinned is not None and state.session_id != pinned.session_id:
            # the session is derived from the pinned federation, never chosen (hospitals
            # refuse any other); a state made before the federation was known gets it here
            state = dataclasses.replace(state, session_id=pinned.session_id)
        out = RoundOutcome(round=rnd, participants=sorted(participants))
        out.phases.append(Phase.SELECT.value)
        try:
            state = self._train_and_aggregate(state, rnd, out, params or {})
        except ProtocolAbort as exc:
            self._go(Phase.ABORTED, out)
            out.status, out.reason = "aborted", str(exc)
            log.warning("round %d aborted: %s", rnd, exc)
            # the round number is consumed (hospitals refuse to reuse it: replay protection);
            # the global model and optimizer state are unchanged
            state = ServerState(rnd, state.weights, state.optimizer, state.session_id)
        if evaluate:
            self._evaluate(state, rnd, out, personalize)
        if out.status == "running":
            out.status = "completed"
            self._go(Phase.DONE, out)
        out.model_hash = state.model_hash
        out.seconds = time.perf_counter() - t0
        out.stages = [vars(s) | {"failures": dict(s.failures)}
                      for s in self.transport.take_stats()]
        for st in out.stages:
            for h, why in st["failures"].items():
                if h not in out.dropped and h not in out.refused:
                    out.dropped[h] = f"{st['stage']}: {why}"
        return state, out

    def _train_and_aggregate(self, state: ServerState, rnd: int, out: RoundOutcome,
                             params: dict[str, Any]) -> ServerState:
        n_params = state.weights.size
        pinned = self.protection.pinned
        if pinned is not None and len(out.participants) < pinned.min_round_size:
            raise ProtocolAbort(f"{len(out.participants)} participant(s), the pinned minimum "
                                f"round size is {pinned.min_round_size}")
        try:
            need = self.protection.min_survivors(len(out.participants))
        except ConfigError as exc:  # a round this configuration must not run
            raise ProtocolAbort(f"round of {len(out.participants)} refused: {exc}") from None
        self._go(Phase.TRAIN, out)
        req = TrainRequest(state.session_id, rnd, tuple(out.participants), state.weights,
                           state.model_hash, self.protection.name, n_params + 1, dict(params))
        acks = self.transport.exchange(TRAIN, rnd, {h: req for h in out.participants})
        alive = []
        for h in sorted(acks):
            ack = acks[h]
            if not isinstance(ack, TrainAck) or ack.round != rnd or ack.hospital != h:
                out.dropped[h] = "train: malformed acknowledgement"
                continue
            if ack.status == "trained":
                alive.append(h)
                if ack.ledger_head:
                    out.ledger_heads[h] = ack.ledger_head
            else:
                out.refused[h] = ack.reason or ack.status
        out.trained = list(alive)
        if len(alive) < need:
            raise ProtocolAbort(f"only {len(alive)} hospital(s) trained, "
                                  f"{self.protection.name} needs {need}")
        ctx = RoundContext(state.session_id, rnd, tuple(out.participants), n_params + 1,
                           {}, model_hash=state.model_hash)
        server = self.protection.new_server(ctx)
        for stage in self.protection.stages:
            self._go(Phase.PROTECT, out)
            requests = server.requests(stage, alive)
            # each reply is folded into the running sum as it arrives (ServerProtection.absorb)
            replies = self.transport.exchange(stage, rnd, requests,
                                              functools.partial(server.absorb, stage))
            server.collect(stage, replies)
            # hospitals asked but silent have dropped; those not asked stay alive
            alive = [h for h in alive if h in replies or h not in requests]
        result = server.result()
        self._go(Phase.UPDATE, out)
        total = np.asarray(result.total, dtype=np.float64)
        examples = float(total[-1])
        if not examples > 0.5:
            raise ProtocolAbort(f"aggregate example count {examples:.3f} is not positive")
        bound = pinned.max_examples if pinned is not None else None
        if bound is not None and examples > len(result.contributors) * bound:
            raise ProtocolAbort(f"aggregate example count {examples:.0f} exceeds "
                                f"{len(result.contributors)} contributors x the pinned "
                                f"bound {bound}")
        avg_delta = total[:-1] / examples
        if not np.all(np.isfinite(avg_delta)):
            raise ProtocolAbort("aggregate contains non-finite values")
        out.contributors = list(result.contributors)
        out.examples = examples
        out.update_norm = float(np.linalg.norm(avg_delta))
        out.protection_stats = dict(result.stats)
        new_weights = state.optimizer.step(state.weights, avg_delta)
        return ServerState(rnd, new_weights, state.optimizer, state.session_id)

    def _evaluate(self, state: ServerState, rnd: int, out: RoundOutcome,
                  personalize: bool) -> None:
        self._go(Phase.EVALUATE, out)
        req = EvalRequest(rnd, state.weights, state.model_hash, "test", personalize)
        reports = self.transport.exchange(EVALUATE, rnd, {h: req for h in out.participants})
        sums = []
        for h in sorted(reports):
            rep = reports[h]
            if isinstance(rep, EvalReport) and rep.hospital == h:
                out.hospital_metrics[h] = dict(rep.sums)
                sums.append(rep.sums)
        if self.pool is not None and sums:
            out.metrics = self.pool(sums)
            val = [{"global": s["val"]} for s in sums if "val" in s]
            if val:
                out.val_metrics = self.pool(val)
