"""A Python API in the spirit of TensorFlow Federated's iterative processes.

    process = fedrx.build_federated_averaging_process(
        task, client_optimizer=ClientOptimizer("adam", lr=1e-3),
        server_optimizer=fedrx.fedavg(), protection="mask")
    state = process.initialize()
    state, metrics = process.next(state, hospitals)   # hospitals: {id: private data}

``next`` runs ONE real round: the same :class:`RoundMachine` and protection code as the
gRPC deployment, over an in-process transport. Hospitals are enrolled the first time
``next`` sees them: each gets a long-term identity and its own protection instance, and
the federation pins their public keys; a hospital not enrolled then is refused later.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedrx.errors import ConfigError
from fedrx.protocol.aggregator import RoundMachine, RoundOutcome, ServerState
from fedrx.protocol.faults import FaultPlan, parse_drops, validate_drops
from fedrx.protocol.hospital import HospitalParty
from fedrx.protocol.messages import EVALUATE, TRAIN
from fedrx.protocol.optim import ServerOptimizer, fedavg
from fedrx.protocol.protection import Protection
from fedrx.protocol.registry import make_protection
from fedrx.protocol.task import ClientOptimizer, FederatedTask
from fedrx.protocol.transport import InProcessTransport
from fedrx.secagg.identity import Federation, Identity


@dataclass
class FederatedProcess:
    """An iterative process: ``initialize()`` then ``next(state, hospitals)`` per round."""

    task: FederatedTask
    client_optimizer: ClientOptimizer = field(default_factory=ClientOptimizer)
    server_optimizer: ServerOptimizer = field(default_factory=fedavg)
    protection: str = "none"
    protection_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    dp: Any = None  # None, or a factory (hospital, identity, data) -> HospitalDP
    drops: str | None = None
    evaluate: bool = True
    metrics_from_sums: Any = None
    parties: dict[str, HospitalParty] = field(default_factory=dict, repr=False)
    federation: Federation | None = field(default=None, repr=False)
    _identities: dict[str, Identity] = field(default_factory=dict, repr=False)
    _server_protection: Protection | None = field(default=None, repr=False)

    def initialize(self) -> ServerState:
        """Round 0: initial weights for the seed, fresh optimizer state, new session id."""
        self.parties.clear()
        self.federation = None
        self._server_protection = None
        return ServerState(0, self.task.initial_weights(self.seed),
                           copy.deepcopy(self.server_optimizer), os.urandom(32))

    @property
    def stages(self) -> tuple[str, ...]:
        """Every stage of a round, in order (needs :meth:`enroll` first)."""
        if self._server_protection is None:
            raise ConfigError("stages are known once hospitals are enrolled")
        return (TRAIN, *self._server_protection.stages, EVALUATE)

    def enroll(self, hospitals: Mapping[str, Any]) -> None:
        """Create identities and protection instances; pin the federation's keys."""
        if self.federation is not None:
            unknown = sorted(set(hospitals) - set(self.parties))
            if unknown:
                raise ConfigError(f"hospital(s) {', '.join(unknown)} joined after enrollment")
            return
        if not hospitals:
            raise ConfigError("no hospitals: a federation needs at least one")
        for h in sorted(hospitals):
            self._identities[h] = Identity.generate(h)
        self.federation = Federation.of(list(self._identities.values()))
        server_proto = make_protection(self.protection, federation=self.federation,
                                       params=self.protection_params)
        n_params = self.task.initial_weights(self.seed).size
        server_proto.validate(len(hospitals), n_params + 1)
        for h in sorted(hospitals):
            proto = make_protection(self.protection, federation=self.federation,
                                    identity=self._identities[h],
                                    params=self.protection_params)
            dp = (self.dp(h, self._identities[h], hospitals[h]) if callable(self.dp)
                  else self.dp)
            self.parties[h] = HospitalParty(h, self.task, hospitals[h], proto,
                                            self.client_optimizer, seed=self.seed, dp=dp)
        self._server_protection = server_proto

    def identity(self, hospital: str) -> Identity:
        return self._identities[hospital]

    def next(self, state: ServerState, hospitals: Mapping[str, Any], *,
             personalize: bool = False) -> tuple[ServerState, RoundOutcome]:
        """Run one round with every hospital in ``hospitals`` selected."""
        self.enroll(hospitals)
        drops = parse_drops(self.drops)
        faults = FaultPlan(drops, self.stages) if drops else None
        transport = InProcessTransport({h: self.parties[h] for h in hospitals}, faults)
        machine = RoundMachine(self._server_protection, transport, self.metrics_from_sums)
        return machine.run(state, sorted(hospitals), evaluate=self.evaluate,
                           personalize=personalize)

    def validate_drops(self, rounds: int) -> None:
        validate_drops(parse_drops(self.drops), self.parties or self._identities,
                       self.stages, rounds)


def build_federated_averaging_process(
    task: FederatedTask, *, client_optimizer: ClientOptimizer | None = None,
    server_optimizer: ServerOptimizer | None = None, protection: str = "none",
    protection_params: Mapping[str, Any] | None = None, seed: int = 0, dp: Any = None,
    drops: str | None = None, evaluate: bool = True, metrics_from_sums: Any = None,
) -> FederatedProcess:
    """FedAvg (or FedAdam) over hospitals, weighted by local example count."""
    return FederatedProcess(
        task, client_optimizer or ClientOptimizer(), server_optimizer or fedavg(),
        protection, dict(protection_params or {}), seed, dp, drops, evaluate,
        metrics_from_sums,
    )
