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

With DP (``--dp on`` / ``--dp distributed``) each hospital's DP state is built inside its
actor by the same :func:`~fedrx.nodes.party.dp_factory` and signs its ledger with the
identity that lives there; ledgers and identities go to the run folder as in-process, which
the actors must therefore reach (:mod:`fedrx.nodes.ray_privacy`: the driver sees only each
hospital's public privacy figures, one batched call per actor per round).

Invariants: every hospital is owned by exactly one actor for the whole run; an actor
refuses to start when the task it prepared differs from the driver's (initial model hash
and vocabulary), so a cluster node with other data cannot join silently; with DP it refuses
to enroll unless it sees the federation file the driver wrote into the run folder.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedrx.dp.pins import write_run_federation
from fedrx.errors import ConfigError, FedrxError
from fedrx.medrx.datasets import NAMED_DATASETS
from fedrx.medrx.prepare import Prepared, prepare
from fedrx.nodes.party import client_optimizer, dp_factory, protection_params
from fedrx.nodes.ray_privacy import RemoteDP, check_run_folder, privacy_figures
from fedrx.nodes.ray_stage import StageHandler
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

_REMOTE_REFUSAL = re.compile(r"^fedrx\.errors\.[A-Za-z]+: (.+)$")
"""The last line of a worker's traceback when a fedrx error ended its creation task."""
OBJECT_STORE_BYTES = 200 * 1024 * 1024
"""Object store of a local Ray started here (messages only: one model per round)."""


class HospitalWorker(StageHandler):
    """A Ray actor's body: the hospitals it owns, built inside the actor.

    ``spec``: JSON ``{"config": <SimulationConfig fields>, "hospitals": [ids], "params":
    <protection parameters, the aggregator's>, "run_dir": <absolute run folder>}``. Methods
    take and return only str / bytes / ints."""

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
        # public: distributed DP's N (the in-process run sums the same partition)
        self.federation_patients = sum(d.train.n_patients for d in prep.hospitals.values())
        self.params = dict(doc["params"])
        self.run_dir = Path(doc.get("run_dir") or ".")
        self.task = prep.task
        self.data = {h: prep.hospitals[h] for h in owned}  # the others' data is dropped
        del prep
        self.identities = {h: Identity.generate(h) for h in owned}
        self.parties: dict[str, Any] = {}
        self.dps: dict[str, Any] = {}
        """Each owned hospital's DP state (with DP on): never leaves this actor."""

    def describe(self) -> str:
        """JSON: the task fingerprint, the owned hospitals' PUBLIC identities and the Ray
        node this actor runs on (its id)."""
        import ray

        return json.dumps({
            "initial_model_hash": model_hash(self.task.initial_weights(self.cfg.seed)),
            "vocabulary": list(self.task.vocab.sizes),
            "public": [self.identities[h].public.to_json() for h in sorted(self.identities)],
            "node": str(ray.get_runtime_context().get_node_id()),
        })

    def enroll(self, federation: str) -> int:
        """Build every owned hospital's party for the pinned ``federation`` (JSON)."""
        fed = Federation.from_json(json.loads(federation))
        cfg = self.cfg
        params = self.params
        drops = parse_drops(cfg.drop)
        make_dp = None
        host = ""
        if cfg.dp:  # ledgers go to the run folder: refuse one this actor does not see
            import socket

            host = socket.gethostname()
            check_run_folder(self.run_dir, fed, host)
            make_dp = dp_factory(cfg, self.run_dir, n_hospitals=self.n,
                                 dim=self.task.spec.size,
                                 federation_patients=self.federation_patients)
        for h in sorted(self.data):
            if make_dp is not None:
                try:  # opens the ledger, writes the public identity beside it
                    self.dps[h] = make_dp(h, self.identities[h], self.data[h])
                except OSError as exc:
                    raise ConfigError(f"Ray worker on {host}: cannot write {h}'s ledger in "
                                      f"{self.run_dir}: {exc.strerror}") from None
            party = make_party(h, self.task, self.data[h], protection=cfg.protection,
                               federation=fed, identity=self.identities[h], params=params,
                               client_optimizer=client_optimizer(cfg), seed=cfg.seed,
                               dp=self.dps.get(h))
            if drops:
                plan = FaultPlan(drops, (TRAIN, *party.protection.stages, EVALUATE))
                party = FaultyParty(party, plan)
            self.parties[h] = party
        self._warm_up()
        return len(self.parties)

    def _warm_up(self) -> None:
        """One throwaway local update (no DP, no party, nothing kept) so that a fresh
        actor's first-call costs (torch kernels, autograd, the optimizer) are paid at
        enrolment, not inside round 1 (the in-process simulation pays them once per
        process). Changes no result: every local update seeds torch itself
        (``derive_seed``); a hospital without training visits is skipped."""
        for h in sorted(self.data):
            if len(self.data[h].train):
                self.task.local_train(self.task.initial_weights(self.cfg.seed), self.data[h],
                                      client_optimizer(self.cfg), seed=self.cfg.seed)
                return

    def privacy(self) -> str:
        """JSON: the owned hospitals' PUBLIC privacy figures
        (:func:`~fedrx.nodes.ray_privacy.privacy_figures`); ``{}`` without DP."""
        return privacy_figures(self.dps)


@dataclass
class RemoteHospital:
    """The driver's handle of one hospital: its id, the actor that owns it and, with DP,
    the :class:`~fedrx.nodes.ray_privacy.RemoteDP` view of its privacy figures."""

    hospital: str
    actor: Any
    dp: RemoteDP | None = None


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
    placement: dict[str, Any] = field(default_factory=dict)
    """Where the hospitals run: actors, distinct Ray nodes, hospitals per actor, address
    (recorded in the results document as ``backend``)."""

    @property
    def stages(self) -> tuple[str, ...]:
        return (TRAIN, *self.server_protection.stages, EVALUATE)

    def validate_drops(self, rounds: int) -> None:
        validate_drops(parse_drops(self.cfg.drop), self.parties, self.stages, rounds)

    def runner(self, hospitals: Any, rounds: int, **kw: Any) -> FederationRunner:
        owners = {h: self.parties[h].actor for h in hospitals}
        return FederationRunner(self.server_protection, RayTransport(owners, self.deadline_s),
                                self.task.pool_metrics, rounds, **kw)

    def refresh_privacy(self) -> None:
        """With DP: every hospital's public privacy figures, fetched by ONE call per actor
        (in parallel) into its :class:`RemoteDP`; nothing without DP."""
        if not self.cfg.dp:
            return
        docs = fetch([call_actor(a.privacy, "remote") for a in self.actors])
        seen: set[str] = set()
        for a, d in zip(self.actors, docs, strict=True):
            figures = json.loads(d)
            for h, fig in figures.items():
                p = self.parties.get(h)
                if p is None or p.actor is not a or p.dp is None or h in seen:
                    raise ConfigError(f"a Ray worker sent privacy figures of {h!r}, a "
                                      "hospital it does not own")
                p.dp.update(fig)
                seen.add(h)
        if seen != set(self.parties):
            raise ConfigError("a Ray worker sent no privacy figures of "
                              f"{', '.join(sorted(set(self.parties) - seen))}")

    def close(self) -> None:
        """Kill the actors (their hospitals' state goes with them); shut Ray down if this
        process started it."""
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors.clear()
        if self.started_ray:
            ray.shutdown()


REACH_TIMEOUT_S = 5.0
"""How long :func:`check_reachable` waits for the cluster's port to accept a connection."""


def check_reachable(address: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """ConfigError (one line) unless ``address`` (``host:port`` or ``ray://host:port``;
    ``auto`` is left to Ray) accepts a TCP connection within ``timeout`` seconds: Ray
    itself retries an unreachable address for minutes."""
    import socket

    from fedrx.nodes.transport import parse_listen

    if address == "auto":
        return
    try:  # the deployment's own host:port parser (IPv6 in brackets)
        host, port = parse_listen(address.split("://", 1)[-1].rstrip("/"))
    except ConfigError:
        raise ConfigError(f"--ray-address {address!r} is not host:port (or ray://host:port "
                          "or auto)") from None
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(f"--ray-address {address}: nothing accepts connections there "
                          f"({exc.strerror or type(exc).__name__}); is the cluster's head "
                          "running (ray start --head)?") from None


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
        check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"--ray-address {address}: cannot join the Ray cluster "
                              f"({type(exc).__name__})") from None
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count()
        ray.init(num_cpus=num_cpus or cores or 1, include_dashboard=False,
                 object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False)
    return True


def _worker_calls(actors: list[Any], method: str, *args: Any) -> list[Any]:
    """``method(*args)`` on every actor, in parallel; a worker's own refusal (a
    :class:`~fedrx.errors.FedrxError` raised inside it, e.g. a run folder it cannot see) is
    re-raised here as ONE ConfigError line, without the remote traceback."""
    from ray.exceptions import RayError

    try:
        return fetch([call_actor(getattr(a, method), "remote", *args) for a in actors])
    except RayError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, FedrxError):
            raise ConfigError(str(cause)) from None
        for line in reversed(str(exc).splitlines()):  # an actor whose __init__ refused:
            found = _REMOTE_REFUSAL.match(line.strip())  # only its traceback's last line
            if found:
                raise ConfigError(found.group(1)) from None
        raise


def _absolute_paths(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its local data and mappings paths made absolute, so that an actor
    reads the same files whatever its working folder (on a cluster: a path every node
    mounts; a dataset NAME such as ``eicu-demo`` stays a name, found through each node's
    ``FEDRX_DATA_ROOT``). Everything else unchanged."""
    out = dict(config)
    for key in ("data", "mappings"):
        value = str(out.get(key) or "")
        if key == "data" and value in NAMED_DATASETS:  # load_dataset reads names first
            continue
        if value and Path(value).expanduser().exists():
            out[key] = str(Path(value).expanduser().resolve())
    return out


def start_ray_process(cfg: SimulationConfig, prep: Prepared, out_dir: Path, *,
                      params: dict[str, Any] | None = None) -> tuple[RayProcess, ServerState]:
    """The Ray federation of ``cfg`` and its round-0 state: one actor per available CPU,
    hospitals assigned round-robin in sorted order, each enrolled inside its actor.
    ``params``: the protection parameters of every party (None: those ``cfg`` derives,
    :func:`fedrx.nodes.party.protection_params`; plain JSON values)."""
    started = init_ray(cfg.ray_address)
    import ray

    hospitals = sorted(prep.hospitals)
    n = len(hospitals)
    params = dict(protection_params(cfg, n) if params is None else params)
    cpus = int(ray.available_resources().get("CPU", 1)) or 1
    n_actors = max(1, min(cpus, len(hospitals)))
    worker_cls = ray.remote(num_cpus=1)(HospitalWorker)
    owned: list[list[str]] = [hospitals[i::n_actors] for i in range(n_actors)]
    config = _absolute_paths(asdict(cfg))
    run_dir = str(Path(out_dir).resolve()) if cfg.dp else ""  # one path for every actor
    actors = [call_actor(worker_cls, "remote",
                         json.dumps({"config": config, "hospitals": hs, "params": params,
                                     "run_dir": run_dir})) for hs in owned]
    try:
        docs = [json.loads(d) for d in _worker_calls(actors, "describe")]
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
        nodes = sorted({str(d.get("node", "")) for d in docs})
        fed_json = json.dumps(federation.to_json())
        if cfg.dp:  # the pinned keys of the audit; each actor checks it sees them
            write_run_federation(Path(out_dir), federation)
        _worker_calls(actors, "enroll", fed_json)
    except BaseException:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()
        raise
    server = make_server_protection(cfg.protection, federation, params,
                                    n, prep.task.spec.size + 1)
    proc = RayProcess(cfg, federation, server, prep.task, actors, started_ray=started,
                      deadline_s=cfg.stage_deadline or DEFAULT_STAGE_DEADLINE_S,
                      placement={"actors": len(actors), "nodes": len(nodes),
                                 "hospitals_per_actor": [len(hs) for hs in owned],
                                 "address": cfg.ray_address or "local"})
    owner = {h: a for hs, a in zip(owned, actors, strict=True) for h in hs}
    for h in hospitals:  # sorted, as the in-process parties (the results' DP record order)
        proc.parties[h] = RemoteHospital(h, owner[h], RemoteDP(h) if cfg.dp else None)
    proc.refresh_privacy()  # epsilon before round 1 (earlier runs' carried spend)
    state = initial_state(prep.task, cfg.seed,
                          ServerOptimizer(cfg.server_optimizer, lr=cfg.server_lr))
    proc.validate_drops(cfg.rounds)
    return proc, state
