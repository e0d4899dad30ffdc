"""``fedrx aggregator serve``: the long-running aggregator process.

Starts the gRPC server (mutual TLS; the standard health service reports SERVING), waits
until ``min_hospitals`` hospitals are connected, then runs the SAME federation runner as
``fedrx simulate`` (:class:`~fedrx.protocol.runner.FederationRunner`) over a
:class:`~fedrx.nodes.transport.GrpcTransport`, with :class:`DeploymentHooks` for what a
deployment adds. After every round it checkpoints
:class:`~fedrx.protocol.aggregator.ServerState` atomically
(:func:`fedrx.nodes.checkpoint.save_checkpoint`) and
sends each hospital a RoundResult carrying the round receipt signed with the aggregator's
pinned Ed25519 key (:mod:`fedrx.receipts`); the signed receipts (ledger head per
hospital per round) also go to ``OUT/receipts.json`` and ``OUT/anchors[/<h>].json``
(:func:`fedrx.nodes.receipt_store.write_receipts`, usable as ``fedrx audit --anchors``).
Results go to ``OUT/results.json``, ``OUT/summary.md``, ``OUT/global_model.npy`` (last round) and
``OUT/selected_model.npy`` (the round with the best pooled validation Jaccard) in the
simulation's format. The checkpoint also keeps whatever the protection asks to keep
(:meth:`~fedrx.protocol.protection.Protection.checkpoint`: with ``ckks`` the key epoch,
public data and sealed packages only) so a restarted aggregator keeps using it; every
checkpoint keeps the selected model (checked against its recorded hash on resume).

Restart semantics: killed and restarted with the same config, it resumes after the last
checkpointed round. A round that was in flight is abandoned and its round NUMBER is burnt
(``OUT/checkpoint/STARTED`` and the hospitals' Hello ``last_round`` tell how far rounds
went): the retry gets a newer round number, since hospitals refuse any round not newer
than one they have seen (their ledgers are never rolled back). The model is the
checkpointed one, the SAME as the abandoned round's, so DP hospitals re-send the result they
were already charged for instead of training again (docs/ledger.md, "What is charged
when"). The checkpoint is signed with the receipt-signing identity and checked whole on
resume (:mod:`fedrx.nodes.checkpoint`). ``out`` is checked writable before listening; a
restart with no round left waits for the hospitals so they hear Goodbye. SIGINT/SIGTERM:
stop waiting, abandon the round in flight (not checkpointed), write results, tell hospitals
Goodbye, stop the server. A failure (an exception) is reported to hospitals as Goodbye
``"failed: ..."`` (they exit non-zero) and re-raised to the operator (an ``OSError``, e.g.
a full disk, as one ConfigError line).
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from fedrx.atomic import atomic_write_text
from fedrx.errors import ConfigError, FedrxError, ProtocolError
from fedrx.medrx.task import MedicationTask
from fedrx.nodes.certs import Deployment, load_tls
from fedrx.nodes.checkpoint import (
    check_writable,
    load_blobs,
    load_checkpoint,
    read_started,
    restore_selected,
    save_checkpoint,
    selected_blob,
    write_started,
)
from fedrx.nodes.codec import Limits
from fedrx.nodes.config import AggregatorConfig, event
from fedrx.nodes.party import protection_params
from fedrx.nodes.receipt_store import write_receipts
from fedrx.nodes.tls_check import check_key_pair
from fedrx.nodes.transport import GrpcTransport, Registry, ServiceSettings, serve
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb
from fedrx.protocol.aggregator import ServerState
from fedrx.protocol.faults import AGGREGATOR, CHECKPOINTED, FaultPlan, FaultyTransport
from fedrx.protocol.messages import EVALUATE, TRAIN
from fedrx.protocol.optim import ServerOptimizer
from fedrx.protocol.protection import Protection
from fedrx.protocol.registry import make_server_protection
from fedrx.protocol.results import results_document, select_round, write_results
from fedrx.protocol.runner import FederationRunner, RunHooks, initial_state
from fedrx.receipts import receipt_body, receipt_bytes, sign_receipt
from fedrx.secagg.identity import Identity

log = logging.getLogger("fedrx.nodes.aggregator")
PROTECTION_BLOB = "protection-"
"""Prefix of the checkpoint blobs that belong to the protection."""


class DeploymentHooks(RunHooks):
    """The runner's hooks in a deployment: wait for connected hospitals, burn round numbers
    hospitals have seen, checkpoint, sign and send receipts after every round."""

    def __init__(self, node: AggregatorNode, protection: Protection, need: int,
                 meta: dict[str, Any], plan: FaultPlan):
        super().__init__()
        self.node = node
        self.protection = protection
        self.need = need
        self.meta = meta
        self.plan = plan
        self.ckpt = node.out / "checkpoint"
        self.sessions: dict[str, Any] = {}
        self.last_round = 0
        """The newest round number used (Welcome tells hospitals the next one)."""

    def schedule(self, state: ServerState) -> tuple[ServerState, list[str]] | None:
        node, reg = self.node, self.node.registry
        if not reg.wait_for(self.need, node.cfg.wait_seconds, node.stop):
            if node.stop.is_set():
                return None
            raise ProtocolError(f"only {len(reg.connected())} of {self.need} hospitals "
                                f"connected within {node.cfg.wait_seconds}s")
        seen = max(reg.hello_rounds.values(), default=0)
        if seen > state.round:
            state = dataclasses.replace(state, round=seen)
        self.last_round = state.round
        participants = reg.connected()
        fresh = [h for h in participants if self.sessions.get(h) is not reg.get(h)]
        self.protection.reconnected(fresh)
        self.sessions = {h: reg.get(h) for h in participants}
        return state, participants

    runner: Any = None

    def round_starting(self, rnd: int, participants: list[str]) -> None:
        if self.runner is not None:  # [aggregator] eval_every; always after the last round
            every = self.node.cfg.eval_every
            self.runner.evaluate = rnd % every == 0 or rnd >= self.node.task_cfg.rounds
        self.last_round = rnd - 1
        write_started(self.ckpt, rnd)
        event(log, logging.INFO, "round starting", round=rnd,
              participants=",".join(participants))

    def round_done(self, state: ServerState, rounds: list[dict[str, Any]],
                   selected: np.ndarray | None) -> None:
        node, rec = self.node, rounds[-1]
        self.last_round = state.round
        blobs = {PROTECTION_BLOB + k: v for k, v in self.protection.checkpoint().items()}
        save_checkpoint(self.ckpt, state, rounds, self.meta, blobs | selected_blob(selected),
                        signer=node.identity)
        write_receipts(node.out, rounds, node.dep.federation_id, state.session_id,
                       node.identity)
        node.notify(rec, state.session_id)
        event(log, logging.INFO, "round done", round=rec["round"], status=rec["status"],
              contributors=f"{len(rec['contributors'])}/{len(rec['participants'])}",
              dropped=",".join(sorted(rec["dropped"])) or "-",
              jaccard=round(rec["metrics"].get("jaccard", float("nan")), 4),
              seconds=round(rec["seconds"], 2), reason=rec["reason"] or "-")
        self.plan.crash_here(AGGREGATOR, CHECKPOINTED, rec["round"])

    def should_stop(self) -> bool:
        return self.node.stop.is_set()


class AggregatorNode:
    """The aggregator process. ``run()`` blocks until the federation ends or a signal."""

    def __init__(self, cfg: AggregatorConfig, *, insecure: bool = False):
        self.cfg = cfg
        if cfg.insecure and not insecure:
            raise ConfigError("the config asks for plaintext; pass --insecure explicitly")
        self.insecure = insecure
        self.stop = threading.Event()
        self.registry = Registry()
        self.dep = Deployment.load(Path(cfg.federation))
        self.spec = self.dep.pinned_task(f"[aggregator] federation {cfg.federation}")
        self.task_cfg = self.spec.task_config()
        self.tls = None
        if not insecure:
            if not (cfg.ca and cfg.cert and cfg.key):
                raise ConfigError("TLS certificates are required ([aggregator] ca, cert, key); "
                                  "plaintext needs --insecure explicitly")
            self.tls = load_tls(Path(cfg.ca), Path(cfg.cert), Path(cfg.key), self.dep,
                                expect_hospital=None)
            check_key_pair(self.tls.cert, self.tls.key, Path(cfg.cert), Path(cfg.key))
        ident_path = Path(cfg.identity) if cfg.identity else \
            Path(cfg.federation).parent / "aggregator.identity.json"
        self.identity = Identity.load(ident_path)
        if self.identity.public.sign_public != self.dep.aggregator_sign_public:
            raise ConfigError(f"aggregator identity {ident_path} is not the receipt-signing "
                              "key pinned in the federation file")
        self.out = Path(cfg.out)
        self.port = 0
        self.server: Any = None

    def _shares_cfg(self, task: Any) -> Any:
        """The task as the hospitals see it for the protection's parameters: with distributed
        DP pinned, DP is on at every hospital (noisy shares, the survivor floor ``n - k``),
        so the aggregator's masking config must say so too (it is in the round context)."""
        if self.spec.distributed() is None:
            return task
        return dataclasses.replace(task, dp=True)

    def _handle_signal(self, signum: int, frame: Any) -> None:
        event(log, logging.WARNING, "signal received; shutting down", signal=signum)
        self.stop.set()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._handle_signal)
        signal.signal(signal.SIGINT, self._handle_signal)

    def run(self, progress: Any = None) -> dict[str, Any]:
        t_start = time.perf_counter()
        task = self.task_cfg
        members = self.dep.hospitals
        # the model and the metric pooling come from the pinned task; no patient file is
        # ever opened here (evaluation is the hospitals' metric sums)
        model = MedicationTask(self.spec.vocab(), None, model=task.model, hidden=task.hidden)
        protection = make_server_protection(task.protection, self.dep.federation,
                                            protection_params(self._shares_cfg(task),
                                                              len(members))
                                            | self.spec.protection_extra(), len(members),
                                            model.spec.size + 1,
                                            policy=self.spec.policy(self.dep.federation_id))
        digest = self.spec.sha256
        meta = {"task_digest": digest, "federation_id": self.dep.federation_id}
        ckpt_dir = self.out / "checkpoint"
        check_writable(self.out, "[aggregator] out")
        check_writable(ckpt_dir, "[aggregator] out")
        key = self.dep.aggregator_sign_public
        loaded = load_checkpoint(ckpt_dir, key)
        if loaded is not None:
            state, rounds, old_meta = loaded
            if old_meta != meta:
                raise ConfigError(f"checkpoint in {ckpt_dir} belongs to another task or "
                                  "federation; use a new out folder")
            event(log, logging.INFO, "resuming from checkpoint", round=state.round)
            selected = restore_selected(ckpt_dir, select_round(rounds), key)
            protection.restore(load_blobs(ckpt_dir, PROTECTION_BLOB, key))
        else:
            state = initial_state(model, task.seed,
                                  ServerOptimizer(task.server_optimizer, lr=task.server_lr))
            rounds, selected = [], None
        burnt = read_started(ckpt_dir)
        if burnt > state.round:
            event(log, logging.WARNING, "round in flight at the last stop is abandoned",
                  round=burnt)
            state = dataclasses.replace(state, round=burnt)
        need = self.cfg.min_hospitals or len(members)
        if need > len(members):
            raise ConfigError(f"min_hospitals {need} > {len(members)} federation members")
        pinned = protection.pinned
        if pinned is not None and need < pinned.min_round_size:
            raise ConfigError(f"min_hospitals {need} < the pinned min_round_size "
                              f"{pinned.min_round_size}: hospitals would refuse such rounds")
        try:
            protection.min_survivors(need)
        except ConfigError as exc:
            raise ConfigError(f"min_hospitals {need}: a round that small is unsafe with the "
                              f"pinned federation: {exc}") from None
        plan = self.cfg.fault_plan()
        hooks = DeploymentHooks(self, protection, need, meta, plan)
        hooks.last_round = state.round
        limits = Limits(max_message_bytes=self.cfg.max_message_mb << 20)
        settings = ServiceSettings(self.dep, digest, task.protection, task.rounds, limits,
                                   insecure=self.insecure,
                                   next_round=lambda: hooks.last_round + 1)
        self.server, self.port, set_health = serve(
            settings, self.cfg.listen, self.tls, self.registry, self.stop,
            max_workers=2 * len(members) + 8)
        host = self.cfg.listen.rsplit(":", 1)[0]
        address = f"{host}:{self.port}"
        if self.cfg.address_file:
            atomic_write_text(Path(self.cfg.address_file), address + "\n")
        event(log, logging.INFO, "listening", address=address,
              tls="off (--insecure)" if self.insecure else "mutual",
              hospitals=len(members), protection=task.protection)
        transport: Any = GrpcTransport(self.registry, {TRAIN: self.cfg.train_deadline,
                                                       EVALUATE: self.cfg.eval_deadline,
                                                       "*": self.cfg.stage_deadline}, self.stop)
        if plan.faults:
            transport = FaultyTransport(transport, plan)
        runner = FederationRunner(protection, transport, model.pool_metrics, task.rounds,
                                  personalize=task.personalize,
                                  on_budget_exhausted=task.on_budget_exhausted, hooks=hooks)
        hooks.runner = runner

        reason = "federation finished"
        try:
            if state.round >= task.rounds:  # nothing left: let the hospitals hear Goodbye
                self.registry.wait_for(need, min(self.cfg.wait_seconds, 30.0), self.stop)
            res = runner.run(state, rounds, selected, progress=progress)
            describe = {"dataset": "hospitals' own exports (none at the aggregator)",
                        "hospitals": {h: {} for h in members},
                        "vocabulary": dict(zip(("diagnoses", "procedures", "labels"),
                                               model.vocab.sizes, strict=True)),
                        "parameters": model.spec.size, "task_sha256": digest}
            doc = results_document(asdict(task), describe, res.rounds,
                                   time.perf_counter() - t_start, model.pool_metrics)
            doc["stopped"] = res.stopped
            doc["transport"] = "grpc"
            doc["deployment"] = {"federation_id": self.dep.federation_id, "address": address,
                                 "tls": not self.insecure,
                                 "interrupted": res.interrupted or self.stop.is_set()}
            write_results(self.out, doc, res.state.weights, res.selected,
                          model.metric_names)
            return doc
        except OSError as exc:  # full disk, out folder removed, ...: one line, not a bug
            where = f" ({exc.filename})" if exc.filename else ""
            reason = f"failed: {exc.strerror or type(exc).__name__}{where}"
            raise ConfigError(f"aggregator {reason}") from None
        except BaseException as exc:
            reason = f"failed: {exc}" if isinstance(exc, FedrxError) else \
                f"failed: {type(exc).__name__}"
            raise
        finally:
            set_health("", False)
            set_health("fedrx.v1.Aggregator", False)
            if self.stop.is_set() and not reason.startswith("failed"):
                reason = "interrupted"
            self.registry.broadcast(lambda h: pb.AggregatorFrame(
                goodbye=pb.Goodbye(reason=reason[:500])))
            time.sleep(0.2)
            self.stop.set()
            self.server.stop(grace=2.0).wait(5.0)
            event(log, logging.INFO, "stopped", reason=reason[:200])

    def notify(self, rec: dict[str, Any], session_id: bytes) -> None:
        signed = sign_receipt(self.identity, receipt_body(self.dep.federation_id, session_id,
                                                          rec))
        body, sig = receipt_bytes(signed), bytes.fromhex(signed["signature"])

        def make(h: str) -> Any:
            return pb.AggregatorFrame(result=pb.RoundResult(
                round=rec["round"], status=rec["status"], reason=rec["reason"][:500],
                contributors=rec["contributors"], model_hash=rec["model_hash"],
                ledger_head=rec["ledger_heads"].get(h, ""), receipt=body, signature=sig))
        self.registry.broadcast(make)
