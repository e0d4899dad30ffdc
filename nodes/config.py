"""TOML configuration of the gRPC deployment (``fedrx aggregator serve``, ``fedrx node run``).

The task is NOT in either file: it is the task specification pinned in ``federation.json``
(:mod:`fedrx.nodes.taskspec`: vocabulary, model, seed, shared training and protection
settings, DP bounds), so every site runs the same task by construction.

* The aggregator's file has one table, ``[aggregator]`` (:class:`AggregatorConfig`). It has
  no data: a ``[task]`` or ``[data]`` table there is a config error.
* A hospital's file has ``[node]`` (:class:`NodeConfig`; ``task`` may name the hospital's
  own copy of ``task.json``, checked against the pinned one before the first round),
  ``[data]`` (:class:`DataConfig`: the hospital's OWN export, the only patient data the node
  reads) and ``[privacy]`` (the hospital's own DP policy, :data:`~fedrx.nodes.taskspec.
  PRIVACY` keys, within the task's ``dp_bounds``).

Every hospital sends the pinned task's SHA-256 in its Hello; the aggregator refuses a
hospital that pins another task. Relative paths in a config file are relative to the
file's folder. Deadlines are seconds.
"""

from __future__ import annotations

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


@dataclass
class DataConfig:
    """``[data]``: a hospital's own export. ``path``: its folder (or .jsonl file);
    ``format``: ``auto`` or one of :data:`fedrx.medrx.exports.FORMATS`; ``site``: one
    ``hospitalid`` / ``care_site_id`` of a multi-site export; ``mappings``: the folder of
    the NDC -> RxCUI -> ATC mapping files (and the DDI graph, if any)."""

    path: str = ""
    format: str = "auto"
    site: str = ""
    mappings: str = ""

    def validate(self) -> None:
        from fedrx.medrx.exports import FORMATS

        if not self.path:
            raise ConfigError("[data] path (this hospital's own export) is required")
        if self.format not in FORMATS:
            raise ConfigError(f"[data] format must be one of {', '.join(FORMATS)}, "
                              f"got {self.format!r}")


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
    eval_every: int = 1
    """Evaluate the global model every this many rounds (and after the last); 1 = every
    round, as before. A few steps apart suits distributed DP (one step per round)."""

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
        if self.eval_every < 1:
            raise ConfigError(f"[aggregator] eval_every must be >= 1, got {self.eval_every}")
        if self.min_hospitals < 0 or self.max_message_mb < 1:
            raise ConfigError("[aggregator] min_hospitals >= 0 and max_message_mb >= 1")
        if not self.federation:
            raise ConfigError("[aggregator] federation (the federation.json path) is required")
        host, sep, port = self.listen.rpartition(":")
        if not (sep and host and port.isascii() and port.isdigit() and int(port) <= 65535):
            raise ConfigError(f"[aggregator] listen must be host:port with a port in 0-65535, "
                              f"got {self.listen!r}")
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
    fault: str = ""
    task: str = ""

    def validate(self) -> None:
        if not self.hospital:
            raise ConfigError("[node] hospital is required")
        if not (self.aggregator or self.aggregator_file):
            raise ConfigError("[node] aggregator (host:port) or aggregator_file is required")
        if not self.identity or not self.federation:
            raise ConfigError("[node] identity and federation are required")
        if not (0 < self.backoff_initial <= self.backoff_max):
            raise ConfigError("[node] need 0 < backoff_initial <= backoff_max")
        self.fault_plan()

    def fault_plan(self) -> FaultPlan:
        """``fault`` as this hospital's fault plan (a crash when that request arrives)."""
        f = crash_fault(self.hospital, self.fault, "[node] fault")
        return FaultPlan([f] if f is not None else [])


def _resolve(obj: Any, base: Path, keys: tuple[str, ...]) -> None:
    for k in keys:
        v = getattr(obj, k)
        if v and not Path(v).is_absolute():
            setattr(obj, k, str((base / v).resolve()))


def _tables(path: Path, allowed: dict[str, str]) -> dict[str, Any]:
    from fedrx.config import load_toml

    doc = load_toml(path)
    for name, tab in doc.items():
        if name not in allowed or name == "*":
            raise ConfigError(f"config {path}: no [{name}] table here ({allowed['*']})")
        if not isinstance(tab, dict):
            raise ConfigError(f"config {path}: [{name}] must be a table")
    return doc


def load_aggregator_config(path: Path) -> AggregatorConfig:
    """``[aggregator]`` from a TOML file (no task, no data: see the module doc)."""
    from fedrx.config import build

    doc = _tables(path, {"aggregator": "", "*": "the aggregator has no task or data table: "
                         "the task is pinned in federation.json and patient data stays at "
                         "the hospitals"})
    if "aggregator" not in doc:
        raise ConfigError(f"config {path}: missing [aggregator] table")
    cfg = build(AggregatorConfig, doc["aggregator"], {})
    _resolve(cfg, Path(path).resolve().parent,
             ("address_file", "ca", "cert", "key", "federation", "out", "identity"))
    cfg.validate()
    return cfg


def load_node_config(path: Path) -> tuple[NodeConfig, DataConfig, dict[str, Any]]:
    """(``[node]``, ``[data]``, ``[privacy]`` policy) from a hospital's TOML file."""
    from fedrx.config import build
    from fedrx.nodes.taskspec import PRIVACY

    doc = _tables(path, {"node": "", "data": "", "privacy": "", "*": "a node's file has "
                         "[node], [data] and [privacy]; the task is pinned in "
                         "federation.json"})
    for t in ("node", "data"):
        if t not in doc:
            raise ConfigError(f"config {path}: missing [{t}] table")
    base = Path(path).resolve().parent
    cfg = build(NodeConfig, doc["node"], {})
    _resolve(cfg, base, ("ca", "cert", "key", "federation", "out", "identity",
                         "aggregator_file", "task"))
    data = build(DataConfig, doc["data"], {})
    _resolve(data, base, ("path", "mappings"))
    privacy = dict(doc.get("privacy", {}))
    bad = sorted(set(privacy) - set(PRIVACY))
    if bad:
        raise ConfigError(f"config {path}: unknown [privacy] key(s) {', '.join(bad)} "
                          f"(known: {', '.join(PRIVACY)})")
    cfg.validate()
    data.validate()
    if privacy.get("dp") and not cfg.out:
        raise ConfigError("[node] out is required with DP (the ledger lives there)")
    return cfg, data, privacy


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
