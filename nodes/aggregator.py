"""``fedrx aggregator serve``: the long-running aggregator process.

Starts the gRPC server (mutual TLS; the standard health service reports SERVING), waits
until ``min_hospitals`` hospitals are connected, then runs rounds with the SAME
:class:`~fedrx.protocol.aggregator.RoundMachine` as ``fedrx simulate`` over a
:class:`~fedrx.nodes.transport.GrpcTransport`. After every round it checkpoints
:class:`~fedrx.protocol.aggregator.ServerState` atomically (:func:`save_checkpoint`) and
sends each hospital a RoundResult carrying the round receipt signed with the aggregator's
pinned Ed25519 key (:mod:`fedrx.receipts`); the signed receipts (ledger head per
hospital per round) also go to ``OUT/receipts.json`` and ``OUT/anchors[/<h>].json``
(:func:`write_receipts`, usable as ``fedrx audit --anchors``). Results go to
``OUT/results.json``, ``OUT/summary.md``, ``OUT/global_model.npy`` (last round) and
``OUT/selected_model.npy`` (the round with the best pooled validation Jaccard) in the
simulation's format. With ``ckks`` the checkpoint also keeps the key epoch (public data and
sealed packages only) so a restarted aggregator keeps using it; every checkpoint keeps the
selected model (checked against its recorded hash on resume).

Restart semantics: killed and restarted with the same config, it resumes after the last
checkpointed round. A round that was in flight is abandoned and its round NUMBER is burnt
(``OUT/checkpoint/STARTED`` and the hospitals' Hello ``last_round`` tell how far rounds
went): the retry gets a newer round number, since hospitals refuse any round not newer
than one they have seen (their ledgers are never rolled back). The model is the
checkpointed one. SIGINT/SIGTERM: stop waiting, abandon the round in flight (not
checkpointed), write results, tell hospitals Goodbye, stop the server.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from fedrx.atomic import atomic_write_bytes, atomic_write_npy, npy_bytes
from fedrx.canonical import json_default
from fedrx.errors import ConfigError, ProtocolError
from fedrx.medrx.records import atomic_write_text
from fedrx.nodes.certs import Deployment, load_tls
from fedrx.nodes.codec import Limits
from fedrx.nodes.config import AggregatorConfig, event, task_digest
from fedrx.nodes.transport import GrpcTransport, Registry, ServiceSettings, serve
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb
from fedrx.protocol.aggregator import RoundMachine, ServerState
from fedrx.protocol.messages import EVALUATE, TRAIN
from fedrx.protocol.optim import ServerOptimizer
from fedrx.protocol.task import model_hash
from fedrx.receipts import receipt_body, receipt_bytes, sign_receipt
from fedrx.secagg.identity import Identity

log = logging.getLogger("fedrx.nodes.aggregator")
CKPT_FORMAT = "fedrx-checkpoint/1"


# ------------------------------------------------------------------------ checkpoint


def save_checkpoint(folder: Path, state: ServerState, rounds: list[dict[str, Any]],
                    meta: dict[str, Any], blobs: dict[str, bytes] | None = None) -> Path:
    """Write ``folder/round-NNNNNN/`` then atomically point ``folder/LATEST`` at it.

    Files: ``weights.npy`` (float32), ``opt_m.npy``/``opt_v.npy`` (FedAdam moments, if
    any), ``state.json`` (round, session id, model hash, optimizer settings, the round
    records so far, ``meta``) and ``blobs`` (name -> bytes, e.g. the CKKS keyring as a
    ``fedrx.v1.CkksKeyring`` protobuf: public data and sealed packages only). All ``.npy``
    are written with ``allow_pickle=False``. Older checkpoints are removed after LATEST moves.
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = f"round-{state.round:06d}"
    tmp = folder / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    opt = state.optimizer
    atomic_write_npy(tmp / "weights.npy", state.weights.astype(np.float32))
    if opt.m is not None and opt.v is not None:
        atomic_write_npy(tmp / "opt_m.npy", opt.m)
        atomic_write_npy(tmp / "opt_v.npy", opt.v)
    doc = {"format": CKPT_FORMAT, "round": state.round, "session_id": state.session_id.hex(),
           "model_hash": state.model_hash,
           "optimizer": {"name": opt.name, "lr": opt.lr, "beta1": opt.beta1,
                         "beta2": opt.beta2, "tau": opt.tau, "moments": opt.m is not None},
           "rounds": rounds, "meta": meta}
    atomic_write_text(tmp / "state.json", json.dumps(doc, default=json_default) + "\n")
    for bname, data in (blobs or {}).items():
        if "/" in bname or bname.startswith("."):
            raise ConfigError(f"invalid checkpoint blob name {bname!r}")
        atomic_write_bytes(tmp / bname, data)
    final = folder / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write_text(folder / "LATEST", name + "\n")
    for old in folder.glob("round-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(folder: Path) -> tuple[ServerState, list[dict[str, Any]],
                                           dict[str, Any]] | None:
    """(state, round records, meta) of the newest complete checkpoint, or None."""
    latest = folder / "LATEST"
    if not latest.is_file():
        return None
    d = folder / latest.read_text().strip()
    try:
        doc = json.loads((d / "state.json").read_text())
        if doc.get("format") != CKPT_FORMAT:
            raise ValueError("format")
        w = np.load(d / "weights.npy", allow_pickle=False)
        o = doc["optimizer"]
        opt = ServerOptimizer(o["name"], lr=o["lr"], beta1=o["beta1"], beta2=o["beta2"],
                              tau=o["tau"])
        if o["moments"]:
            opt.m = np.load(d / "opt_m.npy", allow_pickle=False)
            opt.v = np.load(d / "opt_v.npy", allow_pickle=False)
        state = ServerState(int(doc["round"]), w, opt, bytes.fromhex(doc["session_id"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"checkpoint {d} is unreadable ({type(exc).__name__})") from None
    if w.dtype != np.float32 or w.ndim != 1 or model_hash(w) != doc["model_hash"]:
        raise ConfigError(f"checkpoint {d}: weights do not match the recorded model hash")
    return state, list(doc["rounds"]), dict(doc.get("meta", {}))


def load_blob(folder: Path, name: str) -> bytes | None:
    """A blob saved with the newest checkpoint (None if there is none)."""
    latest = folder / "LATEST"
    if not latest.is_file():
        return None
    p = folder / latest.read_text().strip() / name
    return p.read_bytes() if p.is_file() else None


CKKS_KEYRING_BLOB = "ckks_keyring.pb"
SELECTED_BLOB = "selected_model.npy"


def _selected_blob(weights: np.ndarray | None) -> dict[str, bytes]:
    """The model of the best-validation round so far, checkpointed with the state."""
    return {} if weights is None else {SELECTED_BLOB: npy_bytes(weights)}


def _restore_selected(folder: Path, best: dict[str, Any] | None) -> np.ndarray | None:
    """The checkpointed selected model, checked against the selected round's model hash."""
    if best is None:
        return None
    data = load_blob(folder, SELECTED_BLOB)
    try:
        w = np.load(io.BytesIO(data), allow_pickle=False) if data is not None else None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"checkpoint in {folder}: selected model is unreadable "
                          f"({type(exc).__name__})") from None
    if w is None or model_hash(w) != best["model_hash"]:
        raise ConfigError(f"checkpoint in {folder}: selected model (round {best['round']}) "
                          "is missing or does not match its recorded model hash")
    return w


def _ckks_keyring_blob(protection: Any) -> dict[str, bytes]:
    ring = getattr(protection, "keyring", None) if protection.name == "ckks" else None
    if ring is None:
        return {}
    from fedrx.nodes.codec import _keyring_out

    return {CKKS_KEYRING_BLOB: _keyring_out(ring).SerializeToString()}


def _restore_ckks_keyring(protection: Any, data: bytes, limits: Limits) -> None:
    """Re-install the checkpointed epoch (verified again); every hospital gets its sealed
    package relayed again at its next upload."""
    from fedrx.nodes.codec import _keyring_in

    msg = pb.CkksKeyring()
    msg.ParseFromString(data)
    protection.install_keyring(_keyring_in(msg, limits))


# ------------------------------------------------------------------- receipts/anchors

RECEIPTS_FORMAT = "fedrx-receipts/2"


def signed_receipts(rounds: list[dict[str, Any]], federation_id: str, session_id: bytes,
                    identity: Identity) -> list[dict[str, Any]]:
    """Every round record as a signed ``fedrx-receipt/1`` (:mod:`fedrx.receipts`; Ed25519 is
    deterministic, so re-signing a round gives the same signature)."""
    return [sign_receipt(identity, receipt_body(federation_id, session_id, r)) for r in rounds]


def write_receipts(out: Path, rounds: list[dict[str, Any]], federation_id: str,
                   session_id: bytes, identity: Identity) -> dict[str, Path]:
    """The aggregator's record of every round receipt, for auditors.

    ``OUT/receipts.json``: ``{"format": "fedrx-receipts/2", "federation_id", "session_id",
    "aggregator_sign_public", "rounds": [signed receipt, ...]}``; each receipt (see
    :mod:`fedrx.receipts`: round, status, model_hash, contributors, ledger_heads
    {hospital: head_hash}, signature) is the one sent to every hospital in its RoundResult.
    ``OUT/anchors.json`` (all hospitals) and ``OUT/anchors/<hospital>.json`` (one hospital,
    to audit that hospital's node folder): the NEWEST receipted head per hospital in the
    format of ``fedrx audit DIR --anchors FILE`` (:func:`fedrx.dp.audit.load_anchors`;
    hash-only: the head must be in the ledger), each with the signed ``receipt`` it comes
    from (verified by the audit against the pinned aggregator key).
    Returns ``{"receipts": path, "anchors": path, <hospital>: path}``.
    """
    recs = signed_receipts(rounds, federation_id, session_id, identity)
    heads: dict[str, dict[str, Any]] = {}
    for r in recs:
        for h, head in r["ledger_heads"].items():
            heads[h] = {"head_hash": head, "round": r["round"], "receipt": r}
    paths = {"receipts": out / "receipts.json", "anchors": out / "anchors.json"}
    atomic_write_text(paths["receipts"], json.dumps(
        {"format": RECEIPTS_FORMAT, "federation_id": federation_id,
         "session_id": session_id.hex(),
         "aggregator_sign_public": identity.public.sign_public.hex(), "rounds": recs},
        indent=1) + "\n")
    atomic_write_text(paths["anchors"], json.dumps(heads, indent=1, sort_keys=True) + "\n")
    for h, v in heads.items():
        paths[h] = out / "anchors" / f"{h}.json"
        paths[h].parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(paths[h], json.dumps({h: v}, indent=1) + "\n")
    return paths


# --------------------------------------------------------------------------- results


def results_doc(task: Any, prep: Any, rounds: list[dict[str, Any]], seconds: float,
                extra: dict[str, Any]) -> dict[str, Any]:
    """The results document, in the format of ``fedrx simulate``'s results.json."""
    from fedrx.nodes.simulate import results_document

    doc = results_document(task, prep, rounds, seconds)
    doc["transport"] = "grpc"
    doc["deployment"] = extra
    return doc


# ------------------------------------------------------------------------------ node


class AggregatorNode:
    """The aggregator process. ``run()`` blocks until the federation ends or a signal."""

    def __init__(self, cfg: AggregatorConfig, task: Any, *, insecure: bool = False):
        self.cfg = cfg
        self.task_cfg = task
        if cfg.insecure and not insecure:
            raise ConfigError("the config asks for plaintext; pass --insecure explicitly")
        self.insecure = insecure
        self.stop = threading.Event()
        self.registry = Registry()
        self.dep = Deployment.load(Path(cfg.federation))
        self.tls = None
        if not insecure:
            if not (cfg.ca and cfg.cert and cfg.key):
                raise ConfigError("TLS certificates are required ([aggregator] ca, cert, key); "
                                  "plaintext needs --insecure explicitly")
            self.tls = load_tls(Path(cfg.ca), Path(cfg.cert), Path(cfg.key), self.dep,
                                expect_hospital=None)
        ident_path = Path(cfg.identity) if cfg.identity else \
            Path(cfg.federation).parent / "aggregator.identity.json"
        self.identity = Identity.load(ident_path)
        if self.identity.public.sign_public != self.dep.aggregator_sign_public:
            raise ConfigError(f"aggregator identity {ident_path} is not the receipt-signing "
                              "key pinned in the federation file")
        self.out = Path(cfg.out)
        self.port = 0
        self.server: Any = None

    def _handle_signal(self, signum: int, frame: Any) -> None:
        event(log, logging.WARNING, "signal received; shutting down", signal=signum)
        self.stop.set()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._handle_signal)
        signal.signal(signal.SIGINT, self._handle_signal)

    def run(self, progress: Any = None) -> dict[str, Any]:
        from fedrx.nodes.simulate import (
            metrics_from_sums,
            prepare,
            protection_params,
            select_round,
        )
        from fedrx.protocol.registry import make_protection

        t_start = time.perf_counter()
        task = self.task_cfg
        members = self.dep.hospitals
        prep = prepare(task)
        if sorted(prep.hospitals) != members:
            raise ConfigError(f"[task] partitions the data into {', '.join(prep.hospitals)} "
                              f"but the federation pins {', '.join(members)}")
        protection = make_protection(task.protection, federation=self.dep.federation,
                                     params=protection_params(task))
        n_params = prep.task.spec.size
        protection.validate(len(members), n_params + 1)
        digest = task_digest(task)
        meta = {"task_digest": digest, "federation_id": self.dep.federation_id}
        ckpt_dir = self.out / "checkpoint"
        loaded = load_checkpoint(ckpt_dir)
        if loaded is not None:
            state, rounds, old_meta = loaded
            if old_meta != meta:
                raise ConfigError(f"checkpoint in {ckpt_dir} belongs to another task or "
                                  "federation; use a new out folder")
            event(log, logging.INFO, "resuming from checkpoint", round=state.round)
            selected = _restore_selected(ckpt_dir, select_round(rounds))
            blob = load_blob(ckpt_dir, CKKS_KEYRING_BLOB)
            if blob is not None and task.protection == "ckks":
                _restore_ckks_keyring(protection, blob,
                                      Limits(max_message_bytes=self.cfg.max_message_mb << 20))
        else:
            state = ServerState(0, prep.task.initial_weights(task.seed),
                                ServerOptimizer(task.server_optimizer, lr=task.server_lr),
                                os.urandom(32))
            rounds = []
            selected = None
        started = ckpt_dir / "STARTED"
        if started.is_file():
            burnt = int(started.read_text().strip() or 0)
            if burnt > state.round:
                event(log, logging.WARNING, "round in flight at the last stop is abandoned",
                      round=burnt)
                state = dataclasses.replace(state, round=burnt)
        need = self.cfg.min_hospitals or len(members)
        if need > len(members):
            raise ConfigError(f"min_hospitals {need} > {len(members)} federation members")
        limits = Limits(max_message_bytes=self.cfg.max_message_mb << 20)
        settings = ServiceSettings(self.dep, digest, task.protection, task.rounds, limits,
                                   insecure=self.insecure,
                                   next_round=lambda: state.round + 1)
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
        transport = GrpcTransport(self.registry, {TRAIN: self.cfg.train_deadline,
                                                  EVALUATE: self.cfg.eval_deadline,
                                                  "*": self.cfg.stage_deadline}, self.stop)
        crash = self.cfg.crash_point()
        if crash is not None:  # fault injection for tests: die mid-round
            inner = transport.exchange

            def exchange(stage: str, rnd: int, requests: Any) -> dict[str, Any]:
                replies = inner(stage, rnd, requests)
                if (stage, rnd) == crash:
                    event(log, logging.WARNING, "fault injection: exiting abruptly mid-round",
                          round=rnd, stage=stage)
                    os._exit(137)
                return replies

            transport.exchange = exchange  # type: ignore[method-assign]
        interrupted = False
        sessions: dict[str, Any] = {}
        try:
            while state.round < task.rounds and not self.stop.is_set():
                if not self.registry.wait_for(need, self.cfg.wait_seconds, self.stop):
                    if self.stop.is_set():
                        break
                    raise ProtocolError(f"only {len(self.registry.connected())} of {need} "
                                        f"hospitals connected within {self.cfg.wait_seconds}s")
                seen = max(self.registry.hello_rounds.values(), default=0)
                if seen > state.round:
                    state = dataclasses.replace(state, round=seen)
                    if state.round >= task.rounds:
                        break
                participants = self.registry.connected()
                if hasattr(protection, "forget"):  # ckks: reconnected -> relay keys again
                    fresh = [h for h in participants
                             if sessions.get(h) is not self.registry.get(h)]
                    protection.forget(fresh)
                sessions = {h: self.registry.get(h) for h in participants}
                rnd = state.round + 1
                atomic_write_text(started, f"{rnd}\n")
                event(log, logging.INFO, "round starting", round=rnd,
                      participants=",".join(participants))
                last = rnd == task.rounds
                machine = RoundMachine(protection, transport, metrics_from_sums)
                new_state, outcome = machine.run(state, participants, evaluate=True,
                                                 personalize=last and task.personalize)
                if self.stop.is_set():
                    interrupted = True
                    break
                if outcome.status != "completed":
                    new_state = dataclasses.replace(new_state, round=outcome.round)
                state = new_state
                rec = asdict(outcome)
                rounds.append(rec)
                if select_round(rounds) is rec:
                    selected = state.weights.copy()
                save_checkpoint(ckpt_dir, state, rounds, meta,
                                _ckks_keyring_blob(protection) | _selected_blob(selected))
                write_receipts(self.out, rounds, self.dep.federation_id, state.session_id,
                               self.identity)
                self._notify(rec, state.session_id)
                if progress is not None:
                    progress(rec)
                event(log, logging.INFO, "round done", round=rec["round"], status=rec["status"],
                      contributors=f"{len(rec['contributors'])}/{len(rec['participants'])}",
                      dropped=",".join(sorted(rec["dropped"])) or "-",
                      jaccard=round(rec["metrics"].get("jaccard", float("nan")), 4),
                      seconds=round(rec["seconds"], 2), reason=rec["reason"] or "-")
                if self.cfg.crash_after_round and rec["round"] == self.cfg.crash_after_round:
                    event(log, logging.WARNING, "fault injection: exiting abruptly",
                          round=rec["round"])
                    os._exit(137)
            doc = results_doc(task, prep, rounds, time.perf_counter() - t_start,
                              {"federation_id": self.dep.federation_id, "address": address,
                               "tls": not self.insecure, "interrupted": interrupted
                               or self.stop.is_set()})
            self._write_results(doc, state, selected)
            return doc
        finally:
            set_health("", False)
            set_health("fedrx.v1.Aggregator", False)
            reason = "interrupted" if self.stop.is_set() else "federation finished"
            self.registry.broadcast(lambda h: pb.AggregatorFrame(
                goodbye=pb.Goodbye(reason=reason)))
            time.sleep(0.2)
            self.stop.set()
            self.server.stop(grace=2.0).wait(5.0)
            event(log, logging.INFO, "stopped", reason=reason)

    def _notify(self, rec: dict[str, Any], session_id: bytes) -> None:
        signed = sign_receipt(self.identity, receipt_body(self.dep.federation_id, session_id,
                                                          rec))
        body, sig = receipt_bytes(signed), bytes.fromhex(signed["signature"])

        def make(h: str) -> Any:
            return pb.AggregatorFrame(result=pb.RoundResult(
                round=rec["round"], status=rec["status"], reason=rec["reason"][:500],
                contributors=rec["contributors"], model_hash=rec["model_hash"],
                ledger_head=rec["ledger_heads"].get(h, ""), receipt=body, signature=sig))
        self.registry.broadcast(make)

    def _write_results(self, doc: dict[str, Any], state: ServerState,
                       selected: np.ndarray | None) -> None:
        from fedrx.nodes.simulate import summary_markdown

        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "results.json",
                          json.dumps(doc, indent=1, sort_keys=True, default=json_default)
                          + "\n")
        if doc["rounds"]:
            atomic_write_text(self.out / "summary.md", summary_markdown(doc))
        atomic_write_npy(self.out / "global_model.npy", state.weights)
        if selected is not None:
            atomic_write_npy(self.out / "selected_model.npy", selected)
