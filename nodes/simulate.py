"""``fedrx simulate``: a real federation of the medication task in one process.

The task side (:func:`fedrx.medrx.prepare.prepare`: data -> hospitals -> splits ->
vocabulary -> task) plus the ONE federation runner (:class:`fedrx.protocol.runner.
FederationRunner`) over the in-process transport: every round runs the real protocol and
cryptography. Results go to ``OUT/results.json`` and ``OUT/summary.md``; the last round's
model to ``OUT/global_model.npy`` and the model of the round with the best pooled
VALIDATION Jaccard to ``OUT/selected_model.npy`` (:mod:`fedrx.protocol.results`; all atomic
writes). The gRPC aggregator (:mod:`fedrx.nodes.aggregator`) runs the same runner.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedrx.errors import ConfigError
from fedrx.medrx.prepare import Prepared, centralized_baseline, prepare
from fedrx.nodes.party import (
    check_distributed,
    client_optimizer,
    dp_factory,
    dp_mode,
    protection_params,
)
from fedrx.protocol.aggregator import RoundOutcome, ServerState
from fedrx.protocol.api import FederatedProcess, build_federated_averaging_process
from fedrx.protocol.optim import ServerOptimizer
from fedrx.protocol.registry import PROTECTIONS
from fedrx.protocol.results import results_document, write_results
from fedrx.protocol.runner import BUDGET_POLICIES, RunHooks
from fedrx.protocol.transport import Transport


@dataclass
class SimulationConfig:
    """``fedrx simulate`` settings (TOML table ``[simulate]``; flags override)."""

    data: str = "mimic3-demo"
    hospitals: int | None = None
    rounds: int = 10
    protection: str = "none"
    seed: int = 0
    out: str = "runs/simulate"
    model: str = "mlp"
    hidden: int = 128
    client_optimizer: str = "adam"
    lr: float = 1e-3
    local_epochs: int = 1
    batch_size: int = 64
    server_optimizer: str = "fedavg"
    server_lr: float = 1.0
    partition: str = "iid"
    min_patients: int = 20
    min_visits: int = 1
    drop: str = ""
    clip_norm: float = 10.0
    threshold: int | None = None
    rounding_seed: int | None = None
    personalize: bool = True
    centralized: bool = False
    mappings: str = ""
    dp: bool = False
    epsilon: float = 8.0
    delta: float | None = None
    max_grad_norm: float = 1.0
    dp_batch: int = 128
    accountant: str = "pld"
    secure_noise: bool = True
    budget_epsilon: float | None = None
    on_budget_exhausted: str = "continue"
    vocabulary: str = "data"
    dp_mode: str = "local"
    """DP: ``local`` (each hospital runs DP-SGD on its own) or ``distributed`` (every round is
    ONE DP-SGD step of the whole federation, noise shared across hospitals under a secure
    sum; :mod:`fedrx.dp.distributed`)."""
    dp_k: int = 0
    """Distributed DP: hospitals that may collude with the aggregator or drop, together."""
    dp_sample_rate: float | None = None
    """Distributed DP: the common patient sampling rate q (None: dp_batch / patients)."""
    eval_every: int = 1
    """Evaluate the global model every this many rounds (and after the last)."""
    budget_store: str = ""
    """DP: the budget store carried across runs on the same patients: a folder; "auto"
    (what ``fedrx simulate`` sets) = ``<parent of out>/.fedrx-budget``, which refuses a run
    on patients with earlier spend instead of carrying it; "off"; "" (programmatic runs,
    e.g. benchmark arms) = none. FEDRX_BUDGET_STORE replaces "auto" and "";
    :mod:`fedrx.nodes.run_budget`, :mod:`fedrx.dp.budget_store`."""
    backend: str = "inprocess"
    """``inprocess`` (every hospital in this process) or ``ray`` (hospitals hosted by Ray
    worker actors, :mod:`fedrx.nodes.ray_backend`; the ``fedrx[ray]`` extra)."""
    ray_address: str = ""
    """``--backend ray``: the cluster to join ("" = start a local Ray on this machine)."""
    stage_deadline: float = 0.0
    """``--backend ray``: seconds a stage waits for its hospitals (those that have not
    answered by then have dropped); 0 = :data:`fedrx.nodes.ray_transport.
    DEFAULT_STAGE_DEADLINE_S`. In process every call returns (no deadline)."""

    def dp_config(self):  # noqa: ANN201  (torch-free import at module level)
        from fedrx.dp.dpsgd import DPConfig

        return DPConfig(target_epsilon=self.epsilon, delta=self.delta,
                        max_grad_norm=self.max_grad_norm,
                        expected_batch_patients=self.dp_batch, accountant=self.accountant,
                        secure_noise=self.secure_noise, budget_epsilon=self.budget_epsilon,
                        seed=None if self.secure_noise else self.seed)

    def validate(self) -> None:
        if self.hospitals is not None and self.hospitals < 1:
            raise ConfigError(f"--hospitals must be >= 1, got {self.hospitals}")
        if self.rounds < 1:
            raise ConfigError(f"--rounds must be >= 1, got {self.rounds}")
        if self.protection not in PROTECTIONS:
            raise ConfigError(f"unknown protection {self.protection!r} "
                              f"(expected one of: {', '.join(PROTECTIONS)})")
        if self.local_epochs < 1 or self.batch_size < 1 or self.hidden < 1:
            raise ConfigError("local_epochs, batch_size and hidden must be >= 1")
        if not self.lr > 0 or not self.server_lr > 0:
            raise ConfigError("learning rates must be > 0")
        if self.client_optimizer not in ("adam", "sgd"):
            raise ConfigError(f"unknown client optimizer {self.client_optimizer!r}")
        if self.server_optimizer not in ("fedavg", "fedadam"):
            raise ConfigError(f"unknown server optimizer {self.server_optimizer!r}")
        if self.min_patients < 1:  # 1: every site its own hospital (medrx.partition)
            raise ConfigError(f"--min-patients must be >= 1, got {self.min_patients}")
        if self.vocabulary not in ("data", "public"):
            raise ConfigError(f"vocabulary must be 'data' or 'public', got {self.vocabulary!r}")
        if self.on_budget_exhausted not in BUDGET_POLICIES:
            raise ConfigError("on_budget_exhausted must be 'continue' or 'stop'")
        if self.eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.backend not in ("inprocess", "ray"):
            raise ConfigError(f"backend must be 'inprocess' or 'ray', got {self.backend!r}")
        if not self.stage_deadline >= 0:
            raise ConfigError(f"--stage-deadline must be >= 0 seconds, got {self.stage_deadline}")
        if self.stage_deadline and self.backend != "ray":
            raise ConfigError("--stage-deadline applies to --backend ray only (in process "
                              "every hospital answers before the next is asked)")
        if self.dp:
            if not self.epsilon > 0:
                raise ConfigError(f"--epsilon must be > 0, got {self.epsilon}")
            if dp_mode(self) == "distributed":
                check_distributed(self, max(2, self.dp_k + 1))
            else:
                self.dp_config().validate()


def start_process(cfg: SimulationConfig, prep: Prepared,
                  out_dir: Path) -> tuple[FederatedProcess, ServerState]:
    """The in-process federation of ``cfg`` and its round-0 state: every hospital of
    ``prep`` enrolled, with its own DP state (ledger under ``out_dir``) when DP is on."""
    n = len(prep.hospitals)
    process = build_federated_averaging_process(
        prep.task, client_optimizer=client_optimizer(cfg),
        server_optimizer=ServerOptimizer(cfg.server_optimizer, lr=cfg.server_lr),
        protection=cfg.protection, protection_params=protection_params(cfg, n),
        seed=cfg.seed, drops=cfg.drop or None)
    if cfg.dp:
        process.dp = dp_factory(
            cfg, out_dir, n_hospitals=n, dim=prep.task.spec.size,
            federation_patients=sum(d.train.n_patients for d in prep.hospitals.values()))
    state = process.initialize()
    process.enroll(prep.hospitals)
    process.validate_drops(cfg.rounds)
    return process, state


class _PrivacyRecord(RunHooks):
    """Every hospital of the simulation in every round; with DP, each round record gets
    every hospital's epsilon spent so far (the simulation can see all parties)."""

    def __init__(self, process: FederatedProcess, dp: bool, eval_every: int = 1,
                 rounds: int = 0):
        super().__init__(sorted(process.parties))
        self.process = process
        self.dp = dp
        self.eval_every = eval_every
        self.rounds = rounds
        self.runner: Any = None

    def round_starting(self, rnd: int, participants: list[str]) -> None:
        if self.runner is not None:  # evaluate every few steps, and after the last
            self.runner.evaluate = rnd % self.eval_every == 0 or rnd >= self.rounds

    def annotate(self, record: dict[str, Any], outcome: RoundOutcome) -> None:
        if self.dp:
            refresh = getattr(self.process, "refresh_privacy", None)
            if refresh is not None:  # Ray: the actors' public figures, one call per actor
                refresh()
            record["privacy"] = {h: {"epsilon": p.dp.epsilon(), "delta": p.dp.delta,
                                     "refused": h in outcome.refused}
                                 for h, p in self.process.parties.items()}
            first = self.process.parties[self.hospitals[0]].dp
            if getattr(first, "mode", "local") == "distributed":
                record["distributed"] = {"survivors": len(outcome.contributors),
                                         "min_survivors": first.min_survivors()}


def run_simulation(cfg: SimulationConfig,
                   progress: Callable[[dict[str, Any]], None] | None = None, *,
                   wrap_transport: Callable[[Transport], Transport] | None = None,
                   ) -> dict[str, Any]:
    """Run the federation; write and return the results document. ``wrap_transport``
    wraps the in-process transport (metering, logging) without touching the parties."""
    cfg.validate()
    out_dir = Path(cfg.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a folder")
    if cfg.dp and (out_dir / "ledger").is_dir() and any((out_dir / "ledger").iterdir()):
        raise ConfigError(f"{out_dir / 'ledger'} already holds privacy ledgers; ledgers are "
                          "never overwritten: choose a new --out")
    t_start = time.perf_counter()
    prep = prepare(cfg)
    if cfg.dp:  # delta < 1/N, earlier runs' spend on the same patients (nodes/run_budget.py)
        from fedrx.nodes.run_budget import open_budgets

        open_budgets(cfg, prep, out_dir)
    if cfg.backend == "ray":  # the same runner; hospitals in Ray actors
        from fedrx.nodes.ray_backend import start_ray_process

        process, state = start_ray_process(cfg, prep, out_dir)
    else:
        process, state = start_process(cfg, prep, out_dir)
    try:
        return _run(cfg, prep, out_dir, process, state, progress, wrap_transport, t_start)
    finally:
        if hasattr(process, "close"):
            process.close()


def _run(cfg: SimulationConfig, prep: Prepared, out_dir: Path, process: Any,
         state: ServerState, progress: Callable[[dict[str, Any]], None] | None,
         wrap_transport: Callable[[Transport], Transport] | None,
         t_start: float) -> dict[str, Any]:
    if cfg.dp:  # the pinned keys `fedrx audit` checks the ledgers against
        from fedrx.dp.pins import write_run_federation

        write_run_federation(out_dir, process.federation)
    initial_hash = state.model_hash
    hooks = _PrivacyRecord(process, cfg.dp, cfg.eval_every, cfg.rounds)
    runner = process.runner(prep.hospitals, cfg.rounds, personalize=cfg.personalize,
                            on_budget_exhausted=cfg.on_budget_exhausted, hooks=hooks)
    hooks.runner = runner
    if wrap_transport is not None:
        runner.transport = wrap_transport(runner.transport)
    res = runner.run(state, progress=progress)
    doc = results_document(asdict(cfg), prep.describe(), res.rounds, 0.0,
                           prep.task.pool_metrics)
    doc["initial_model_hash"] = initial_hash
    doc["backend"] = {"name": cfg.backend, **getattr(process, "placement", {})}
    doc["stopped"] = res.stopped
    doc["dp"] = ({h: p.dp.describe() | {"epsilon": p.dp.epsilon()}
                  for h, p in process.parties.items()} if cfg.dp else None)
    if cfg.centralized:
        doc["centralized"] = centralized_baseline(
            prep, model=cfg.model, hidden=cfg.hidden, lr=cfg.lr, batch_size=cfg.batch_size,
            seed=cfg.seed)
    doc["seconds"] = time.perf_counter() - t_start
    write_results(out_dir, doc, res.state.weights, res.selected, prep.task.metric_names)
    return doc
