"""A Python API in the spirit of TensorFlow Federated's iterative processes.

    process = fedrx.build_federated_averaging_process(
        task, client_optimizer=ClientOptimizer("adam", lr=1e-3),
        server_optimizer=fedrx.fedavg(), protection="mask")
    state = process.initialize()
    state, outcome = process.next(state, hospitals)   # hospitals: {id: private data}
    outcome.metrics                                   # pooled test metrics of the new model

``next`` runs ONE real round: the same :class:`RoundMachine` and protection code as the
gRPC deployment, over an in-process transport, and (unless ``evaluate=False``) asks every
hospital to evaluate the new global model on its own patients; ``outcome.metrics`` are the
task's pooled metrics (:meth:`FederatedTask.pool_metrics`). :meth:`FederatedProcess.evaluate`
evaluates any state without training. Hospitals are enrolled the first time ``next`` sees
them: each gets a long-term identity and its own protection instance, and the federation
pins their public keys; a hospital not enrolled then is refused later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedrx.errors import ConfigError
from fedrx.protocol.aggregator import RoundOutcome, ServerState
from fedrx.protocol.faults import FaultPlan, FaultyParty, parse_drops, validate_drops
from fedrx.protocol.hospital import HospitalParty
from fedrx.protocol.messages import EVALUATE, TRAIN, EvalReport, EvalRequest
from fedrx.protocol.optim import ServerOptimizer, fedavg
from fedrx.protocol.protection import Protection
from fedrx.protocol.registry import make_party, make_server_protection
from fedrx.protocol.runner import FederationRunner, initial_state
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
    evaluate_rounds: bool = True
    parties: dict[str, HospitalParty] = field(default_factory=dict, repr=False)
    federation: Federation | None = field(default=None, repr=False)
    _identities: dict[str, Identity] = field(default_factory=dict, repr=False)
    _server_protection: Protection | None = field(default=None, repr=False)

    def initialize(self) -> ServerState:
        """Round 0: initial weights for the seed, fresh optimizer state, new session id."""
        self.parties.clear()
        self.federation = None
        self._server_protection = None
        return initial_state(self.task, self.seed, self.server_optimizer)

    @property
    def server_protection(self) -> Protection:
        """The aggregator's protection instance (after :meth:`enroll`)."""
        if self._server_protection is None:
            raise ConfigError("hospitals are not enrolled yet")
        return self._server_protection

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
        n_params = self.task.initial_weights(self.seed).size
        server = make_server_protection(self.protection, self.federation,
                                        self.protection_params, len(hospitals), n_params + 1)
        for h in sorted(hospitals):
            ident = self._identities[h]
            dp = self.dp(h, ident, hospitals[h]) if callable(self.dp) else self.dp
            self.parties[h] = make_party(
                h, self.task, hospitals[h], protection=self.protection,
                federation=self.federation, identity=ident, params=self.protection_params,
                client_optimizer=self.client_optimizer, seed=self.seed, dp=dp)
        self._server_protection = server

    def identity(self, hospital: str) -> Identity:
        return self._identities[hospital]

    def transport(self, hospitals: Mapping[str, Any]) -> InProcessTransport:
        """The in-process transport to ``hospitals``' parties, with ``drops`` applied."""
        self.enroll(hospitals)
        drops = parse_drops(self.drops)
        plan = FaultPlan(drops, self.stages) if drops else None
        return InProcessTransport({h: FaultyParty(self.parties[h], plan) if plan
                                   else self.parties[h] for h in hospitals})

    def runner(self, hospitals: Mapping[str, Any], rounds: int, **kw: Any) -> FederationRunner:
        """The federation runner over this process's in-process transport (``kw``:
        :class:`FederationRunner` settings such as ``personalize``, ``hooks``)."""
        transport = self.transport(hospitals)
        return FederationRunner(self.server_protection, transport, self.task.pool_metrics,
                                rounds, evaluate=self.evaluate_rounds, **kw)

    def next(self, state: ServerState, hospitals: Mapping[str, Any], *,
             personalize: bool = False) -> tuple[ServerState, RoundOutcome]:
        """Run one round with every hospital in ``hospitals`` selected."""
        runner = self.runner(hospitals, state.round + 1, personalize=personalize)
        return runner.run_round(state, sorted(hospitals))

    def evaluate(self, state: ServerState, hospitals: Mapping[str, Any],
                 part: str = "test") -> dict[str, float]:
        """Pooled metrics of ``state``'s model on the hospitals' ``part`` patients (no
        training, nothing protected: evaluation reports are metric sums)."""
        transport = self.transport(hospitals)
        req = EvalRequest(state.round, state.weights, state.model_hash, part, False)
        replies = transport.exchange(EVALUATE, state.round, {h: req for h in hospitals})
        return self.task.pool_metrics([r.sums for r in replies.values()
                                       if isinstance(r, EvalReport)])

    def validate_drops(self, rounds: int) -> None:
        validate_drops(parse_drops(self.drops), self.parties or self._identities,
                       self.stages, rounds)


def build_federated_averaging_process(
    task: FederatedTask, *, client_optimizer: ClientOptimizer | None = None,
    server_optimizer: ServerOptimizer | None = None, protection: str = "none",
    protection_params: Mapping[str, Any] | None = None, seed: int = 0, dp: Any = None,
    drops: str | None = None, evaluate: bool = True,
) -> FederatedProcess:
    """FedAvg (or FedAdam) over hospitals, weighted by local example count; ``evaluate``:
    every round ends with the hospitals' evaluation of the new model."""
    return FederatedProcess(
        task, client_optimizer or ClientOptimizer(), server_optimizer or fedavg(),
        protection, dict(protection_params or {}), seed, dp, drops, evaluate,
    )
