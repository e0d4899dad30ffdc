"""TOML configuration of the gRPC deployment (``fedrx aggregator serve``, ``fedrx node run``).

Both files have a ``[task]`` table: the SAME :class:`~fedrx.nodes.simulate.SimulationConfig`
fields as ``fedrx simulate`` (data, hospitals, partition, seed, model, hidden, lr, ...).
How a hospital node gets its patients: it runs :func:`fedrx.nodes.simulate.prepare` on that
table, exactly as the in-process simulation does, and keeps ONLY the partition named by its
``hospital`` id (``h1``, ``h2``, ... as :func:`fedrx.medrx.partition.partition` names them).
So the gRPC run and ``fedrx simulate`` with the same ``[task]`` see identical patients,
splits and vocabulary. The aggregator runs ``prepare`` too, but only to build the model
(vocabulary sizes -> parameter count, initial weights for the seed) and the metric pooling;
it never trains. Every hospital sends :func:`task_digest` in its Hello and the aggregator
refuses a hospital whose task table differs.

Relative paths in a config file are relative to the file's folder.

``[aggregator]`` keys (:class:`AggregatorConfig`) and ``[node]`` keys (:class:`NodeConfig`)
are documented on the dataclasses; deadlines are seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrx.errors import ConfigError
from fedrx.protocol.faults import (
    AGGREGATOR,
    CHECKPOINTED,
    CRASH,
    Fault,
    FaultPlan,
    crash_fault,
    stage_round,
)

TASK_KEYS = ("data", "hospitals", "protection", "seed", "model", "hidden", "client_optimizer",
             "lr", "local_epochs", "batch_size", "partition", "min_patients", "min_visits",
             "clip_norm", "threshold", "rounding_seed", "mappings", "vocabulary")
"""SimulationConfig fields that determine a hospital's data and local training."""


@dataclass
class AggregatorConfig:
    """``[aggregator]``.

    ``listen``: host:port (port 0 = ephemeral); the bound address is written atomically to
    ``address_file`` (if set). ``ca``/``cert``/``key``: PEM paths; ``federation``: the
    deployment file. ``identity``: the aggregator's receipt-signing identity (default:
    ``aggregator.identity.json`` beside the federation file, as ``fedrx certs init`` writes
    it; its public key must be the one pinned in the federation file). ``out``: results,
    checkpoints. ``min_hospitals``: hospitals that must
    be connected before a round starts (0 = every federation member). ``wait_seconds``:
    how long to wait for them before giving up. ``train_deadline``, ``stage_deadline``,
    ``eval_deadline``: per-stage deadlines (s). ``max_message_mb``: largest reassembled
    message accepted (MiB). ``insecure``: plaintext (honoured only with ``--insecure``).
    ``crash_after_round``: fault injection for tests (the process exits abruptly right
    after checkpointing that round; 0 = never). ``crash_at``: fault injection for tests,
    ``STAGE:ROUND`` (the process exits abruptly MID-ROUND, right after the hospitals'
    replies for that stage of that round arrived; "" = never).
    """

    listen: str = "127.0.0.1:0"
    address_file: str = ""
    ca: str = ""
    cert: str = ""
    key: str = ""
    federation: str = ""
    identity: str = ""
    out: str = "runs/grpc"
    min_hospitals: int = 0
    wait_seconds: float = 300.0
    train_deadline: float = 600.0
    stage_deadline: float = 60.0
    eval_deadline: float = 300.0
    max_message_mb: int = 256
    insecure: bool = False
    crash_after_round: int = 0
    crash_at: str = ""

    def crash_point(self) -> tuple[str, int] | None:
        """``crash_at`` parsed as (stage, round), or None."""
        return stage_round(self.crash_at, "[aggregator] crash_at")

    def fault_plan(self) -> FaultPlan:
        """``crash_at`` and ``crash_after_round`` as one fault plan of the aggregator."""
        faults = [f for f in (crash_fault(AGGREGATOR, self.crash_at, "[aggregator] crash_at"),)
                  if f is not None]
        if self.crash_after_round:
            faults.append(Fault(AGGREGATOR, CHECKPOINTED, self.crash_after_round, CRASH))
        return FaultPlan(faults)

    def validate(self) -> None:
        for name in ("wait_seconds", "train_deadline", "stage_deadline", "eval_deadline"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"[aggregator] {name} must be > 0")
        if self.min_hospitals < 0 or self.max_message_mb < 1:
            raise ConfigError("[aggregator] min_hospitals >= 0 and max_message_mb >= 1")
        if not self.federation:
            raise ConfigError("[aggregator] federation (the federation.json path) is required")
        self.crash_point()


@dataclass
class NodeConfig:
    """``[node]``.

    ``hospital``: this site's id (= TLS CN = federation member = partition name).
    ``aggregator``: host:port, or ``aggregator_file``: a file holding it (re-read at every
    reconnect). ``server_name``: TLS name expected on the aggregator certificate.
    ``identity``: the hospital's identity.json. ``out``: node state (last round seen,
    round receipts). ``backoff_initial``/``backoff_max``: reconnect backoff (s, doubled
    with jitter). ``give_up_seconds``: stop after this long without a session (0 = never).
    ``dp``: ``""`` follows this file's ``[task] dp``; ``"on"``/``"off"`` override it. With
    DP on, the party trains with :class:`fedrx.dp.federated.HospitalDP` under THIS file's
    ``[task]`` policy (epsilon, delta, max_grad_norm, dp_batch, accountant, secure_noise,
    budget_epsilon; planned for ``[task] rounds`` x ``local_epochs``): the policy is the
    hospital's own, never the aggregator's. Its signed ledger is ``OUT/ledger/<hospital>.jsonl``
    (identity ``OUT/identities/<hospital>.pub.json``), so ``out`` is required.
    ``fault``: fault injection for tests, ``STAGE:ROUND`` (the process exits abruptly when
    that request arrives).
    """

    hospital: str = ""
    aggregator: str = ""
    aggregator_file: str = ""
    server_name: str = "localhost"
    ca: str = ""
    cert: str = ""
    key: str = ""
    identity: str = ""
    federation: str = ""
    out: str = ""
    backoff_initial: float = 0.25
    backoff_max: float = 5.0
    give_up_seconds: float = 600.0
    max_message_mb: int = 256
    insecure: bool = False
    dp: str = ""
    fault: str = ""

    def validate(self) -> None:
        if not self.hospital:
            raise ConfigError("[node] hospital is required")
        if not (self.aggregator or self.aggregator_file):
            raise ConfigError("[node] aggregator (host:port) or aggregator_file is required")
        if not self.identity or not self.federation:
            raise ConfigError("[node] identity and federation are required")
        if not (0 < self.backoff_initial <= self.backoff_max):
            raise ConfigError("[node] need 0 < backoff_initial <= backoff_max")
        if self.dp not in ("", "on", "off"):
            raise ConfigError("[node] dp must be '', 'on' or 'off'")
        self.fault_plan()

    def fault_plan(self) -> FaultPlan:
        """``fault`` as this hospital's fault plan (a crash when that request arrives)."""
        f = crash_fault(self.hospital, self.fault, "[node] fault")
        return FaultPlan([f] if f is not None else [])

    def dp_enabled(self, task: Any) -> bool:
        """Whether this hospital trains with DP (``dp`` override, else ``[task] dp``)."""
        return self.dp == "on" or (self.dp == "" and bool(task.dp))


def _resolve(obj: Any, base: Path, keys: tuple[str, ...]) -> None:
    for k in keys:
        v = getattr(obj, k)
        if v and not Path(v).is_absolute():
            setattr(obj, k, str((base / v).resolve()))


def load_config(path: Path, table: str) -> tuple[Any, Any]:
    """(``[table]`` settings, ``[task]`` SimulationConfig) from a TOML file."""
    from fedrx.config import build, load_toml
    from fedrx.nodes.simulate import SimulationConfig

    doc = load_toml(path)
    unknown = set(doc) - {table, "task"}
    if unknown:
        raise ConfigError(f"config {path}: unknown table(s) {', '.join(sorted(unknown))}")
    for t in (table, "task"):
        if not isinstance(doc.get(t), dict):
            raise ConfigError(f"config {path}: missing [{t}] table")
    cls = AggregatorConfig if table == "aggregator" else NodeConfig
    cfg = build(cls, doc[table], {})
    base = Path(path).resolve().parent
    paths = ("address_file", "ca", "cert", "key", "federation", "out", "identity",
             "aggregator_file")
    _resolve(cfg, base, tuple(p for p in paths if hasattr(cfg, p)))
    task = build(SimulationConfig, doc["task"], {})
    if task.drop:
        raise ConfigError("[task] drop (in-process fault injection) is not used by gRPC nodes")
    if task.mappings and not Path(task.mappings).is_absolute():
        task.mappings = str((base / task.mappings).resolve())
    data_path = base / task.data
    if task.data not in ("mimic3-demo", "eicu-demo") and data_path.exists():
        task.data = str(data_path.resolve())
    if table == "aggregator" and task.dp:
        raise ConfigError(f"config {path}: [task] dp = true in the aggregator's config; DP is "
                          "each hospital's own policy: set it in the node configs")
    task.validate()
    cfg.validate()
    if table == "node" and cfg.dp_enabled(task):
        if not cfg.out:
            raise ConfigError("[node] out is required with DP (the ledger lives there)")
        if not task.dp:  # "on" override: validate the [task] policy as DP settings
            dataclasses.replace(task, dp=True).validate()
    return cfg, task


def task_digest(task: Any) -> str:
    """SHA-256 of the task fields every site must agree on (:data:`TASK_KEYS`)."""
    d = dataclasses.asdict(task)
    return hashlib.sha256(json.dumps({k: d[k] for k in TASK_KEYS}, sort_keys=True)
                          .encode()).hexdigest()


# ------------------------------------------------------------------------------ logs


class KeyValueFormatter(logging.Formatter):
    """``2024-01-01T12:00:00Z level=INFO node=aggregator msg="..." k=v ...`` lines.

    Only ids, rounds, stages, sizes and reasons are ever passed as fields; never keys,
    shares, seeds or model values.
    """

    def __init__(self, node: str):
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields = getattr(record, "fields", {})
        extra = "".join(f" {k}={json.dumps(v) if isinstance(v, str) else v}"
                        for k, v in fields.items())
        return (f"{ts}Z level={record.levelname} node={self.node} logger={record.name} "
                f"msg={json.dumps(record.getMessage())}{extra}")


def setup_logging(node: str, level: int = logging.INFO) -> None:
    root = logging.getLogger("fedrx")
    root.handlers.clear()
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(KeyValueFormatter(node))
    root.addHandler(h)
    root.setLevel(level)
    root.propagate = False


def event(log: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """Log ``msg`` with structured ``fields`` (ids, rounds, sizes; never secrets)."""
    log.log(level, msg, extra={"fields": fields})
