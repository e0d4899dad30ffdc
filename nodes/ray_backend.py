"""``fedrx simulate --backend ray``: the same federation, its hospitals hosted by a pool of
Ray worker actors.

The driver runs the ONE :class:`~fedrx.protocol.runner.FederationRunner` (the same
``RoundMachine``, the same aggregator protection) over a :class:`RayTransport`
(:mod:`fedrx.nodes.ray_transport`); each hospital lives in exactly one
:class:`HospitalWorker` actor (one actor per available CPU, as in Flower's virtual-client
engine), which builds it with the same code as the in-process simulation
(:func:`fedrx.medrx.prepare.prepare`, :func:`fedrx.protocol.registry.make_party`, the
fault plan's :class:`~fedrx.protocol.faults.FaultyParty`) from a JSON build description:
the simulation settings and the hospital ids it owns. The hospital's private data, its
long-term private identity (generated inside the actor, from the OS) and its per-round
protection state never leave the actor: what crosses an actor boundary is that JSON
description, the federation's PUBLIC identities (JSON), and the protocol messages encoded
by the wire codec (:mod:`fedrx.nodes.codec`, the bytes the gRPC deployment sends; no
pickle of a protocol object). Ray is imported here only (an optional extra, ``fedrx[ray]``).

Invariants: every hospital is owned by exactly one actor for the whole run; an actor
refuses to start when the task it prepared differs from the driver's (initial model hash
and vocabulary), so a cluster node with other data cannot join silently.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedrx.errors import ConfigError, ProtocolError
from fedrx.medrx.prepare import Prepared, prepare
from fedrx.nodes.party import client_optimizer, protection_params
from fedrx.nodes.ray_transport import DEFAULT_STAGE_DEADLINE_S, RayTransport, call_actor, fetch
from fedrx.nodes.simulate import SimulationConfig
from fedrx.protocol.aggregator import ServerState
from fedrx.protocol.faults import FaultPlan, FaultyParty, parse_drops, validate_drops
from fedrx.protocol.messages import EVALUATE, TRAIN
from fedrx.protocol.optim import ServerOptimizer
from fedrx.protocol.registry import make_party, make_server_protection
from fedrx.protocol.runner import FederationRunner, initial_state
from fedrx.protocol.task import model_hash
from fedrx.secagg.identity import Federation, Identity, PublicIdentity

OBJECT_STORE_BYTES = 200 * 1024 * 1024
"""Object store of a local Ray started here (messages only: one model per round)."""


class HospitalWorker:
    """A Ray actor's body: the hospitals it owns, built inside the actor.

    ``spec``: JSON ``{"config": <SimulationConfig fields>, "hospitals": [ids], "params":
    <protection parameters, the aggregator's>}``. Methods take and return only str / bytes
    / ints."""

    def __init__(self, spec: str):
        import torch

        torch.set_num_threads(1)  # one core per actor
        doc = json.loads(spec)
        self.cfg = SimulationConfig(**doc["config"])
        prep = prepare(self.cfg)
        owned = sorted(doc["hospitals"])
        missing = sorted(set(owned) - set(prep.hospitals))
        if missing:
            raise ConfigError(f"worker: hospital(s) {', '.join(missing)} not in the data")
        self.n = len(prep.hospitals)
        self.params = dict(doc["params"])
        self.task = prep.task
        self.data = {h: prep.hospitals[h] for h in owned}  # the others' data is dropped
        del prep
        self.identities = {h: Identity.generate(h) for h in owned}
        self.parties: dict[str, Any] = {}

    def describe(self) -> str:
        """JSON: the task fingerprint and the owned hospitals' PUBLIC identities."""
        return json.dumps({
            "initial_model_hash": model_hash(self.task.initial_weights(self.cfg.seed)),
            "vocabulary": list(self.task.vocab.sizes),
            "public": [self.identities[h].public.to_json() for h in sorted(self.identities)],
        })

    def enroll(self, federation: str) -> int:
        """Build every owned hospital's party for the pinned ``federation`` (JSON)."""
        fed = Federation.from_json(json.loads(federation))
        cfg = self.cfg
        params = self.params
        drops = parse_drops(cfg.drop)
        for h in sorted(self.data):
            party = make_party(h, self.task, self.data[h], protection=cfg.protection,
                               federation=fed, identity=self.identities[h], params=params,
                               client_optimizer=client_optimizer(cfg), seed=cfg.seed)
            if drops:
                plan = FaultPlan(drops, (TRAIN, *party.protection.stages, EVALUATE))
                party = FaultyParty(party, plan)
            self.parties[h] = party
        return len(self.parties)

    def handle(self, stage: str, hospital: str, request: bytes) -> tuple[bytes, str]:
        """One hospital's answer to one encoded request: (encoded reply, "") or
        (b"", reason) when it refused (a ProtocolError, e.g. a fault-injected drop)."""
        from fedrx.nodes import codec

        party = self.parties.get(hospital)
        if party is None:
            return b"", "unknown hospital"
        try:
            req = codec.from_bytes(request)
            return codec.to_bytes(party.handle(stage, req)), ""
        except ProtocolError as exc:
            return b"", str(exc)


@dataclass
class RemoteHospital:
    """The driver's handle of one hospital: its id and the actor that owns it."""

    hospital: str
    actor: Any
    dp: Any = None


@dataclass
class RayProcess:
    """The driver side of a Ray federation: what :func:`run_simulation` uses of a
    :class:`~fedrx.protocol.api.FederatedProcess` (parties, federation, runner)."""

    cfg: SimulationConfig
    federation: Federation
    server_protection: Any
    task: Any
    actors: list[Any]
    parties: dict[str, RemoteHospital] = field(default_factory=dict)
    started_ray: bool = False
    deadline_s: float = DEFAULT_STAGE_DEADLINE_S

    @property
    def stages(self) -> tuple[str, ...]:
        return (TRAIN, *self.server_protection.stages, EVALUATE)

    def validate_drops(self, rounds: int) -> None:
        validate_drops(parse_drops(self.cfg.drop), self.parties, self.stages, rounds)

    def runner(self, hospitals: Any, rounds: int, **kw: Any) -> FederationRunner:
        owners = {h: self.parties[h].actor for h in hospitals}
        return FederationRunner(self.server_protection, RayTransport(owners, self.deadline_s),
                                self.task.pool_metrics, rounds, **kw)

    def close(self) -> None:
        """Kill the actors (their hospitals' state goes with them); shut Ray down if this
        process started it."""
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors.clear()
        if self.started_ray:
            ray.shutdown()


def init_ray(address: str = "", num_cpus: int | None = None) -> bool:
    """Connect to the cluster at ``address``, or start a local Ray with ``num_cpus`` (the
    machine's cores) unless one is running; True if this call started it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'fedrx[ray]'") from None

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count()
        ray.init(num_cpus=num_cpus or cores or 1, include_dashboard=False,
                 object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False)
    return True


def start_ray_process(cfg: SimulationConfig, prep: Prepared, out_dir: Path, *,
                      params: dict[str, Any] | None = None) -> tuple[RayProcess, ServerState]:
    """The Ray federation of ``cfg`` and its round-0 state: one actor per available CPU,
    hospitals assigned round-robin in sorted order, each enrolled inside its actor.
    ``params``: the protection parameters of every party (None: those ``cfg`` derives,
    :func:`fedrx.nodes.party.protection_params`; plain JSON values)."""
    if cfg.dp:
        raise ConfigError("--backend ray does not run DP yet (the privacy ledgers would "
                          "live in the actors); use --backend inprocess with --dp")
    started = init_ray(cfg.ray_address)
    import ray

    hospitals = sorted(prep.hospitals)
    n = len(hospitals)
    params = dict(protection_params(cfg, n) if params is None else params)
    cpus = int(ray.available_resources().get("CPU", 1)) or 1
    n_actors = max(1, min(cpus, len(hospitals)))
    worker_cls = ray.remote(num_cpus=1)(HospitalWorker)
    owned: list[list[str]] = [hospitals[i::n_actors] for i in range(n_actors)]
    config = asdict(cfg)
    actors = [call_actor(worker_cls, "remote",
                         json.dumps({"config": config, "hospitals": hs,
                                                 "params": params})) for hs in owned]
    try:
        docs = [json.loads(d) for d in fetch(
            [call_actor(a.describe, "remote") for a in actors])]
        expected = model_hash(prep.task.initial_weights(cfg.seed))
        publics: list[PublicIdentity] = []
        for d, hs in zip(docs, owned, strict=True):
            if d["initial_model_hash"] != expected or \
                    list(d["vocabulary"]) != list(prep.task.vocab.sizes):
                raise ConfigError("a Ray worker prepared a different task (other data on "
                                  "that node?): refusing to federate")
            pubs = [PublicIdentity.from_json(p) for p in d["public"]]
            if sorted(p.hospital for p in pubs) != sorted(hs):
                raise ConfigError("a Ray worker announced hospitals it does not own")
            publics.extend(pubs)
        federation = Federation({p.hospital: p for p in publics})
        fed_json = json.dumps(federation.to_json())
        fetch([call_actor(a.enroll, "remote", fed_json) for a in actors])
    except BaseException:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()
        raise
    server = make_server_protection(cfg.protection, federation, params,
                                    n, prep.task.spec.size + 1)
    proc = RayProcess(cfg, federation, server, prep.task, actors, started_ray=started)
    for hs, a in zip(owned, actors, strict=True):
        for h in hs:
            proc.parties[h] = RemoteHospital(h, a)
    state = initial_state(prep.task, cfg.seed,
                          ServerOptimizer(cfg.server_optimizer, lr=cfg.server_lr))
    proc.validate_drops(cfg.rounds)
    return proc, state
