"""``fedrx node run``: one hospital site.

Reads only its own export (``[data]``, under the pinned task), builds its
:class:`~fedrx.protocol.hospital.HospitalParty` with its long-term identity and its own
protection instance, dials the aggregator over mutual TLS and answers requests until the
aggregator says Goodbye. Connection loss -> reconnect with exponential backoff and jitter.

Checks on every inbound request, before the party sees it: the frame sequence number must
grow (replay of a frame within a session), the header's round/stage must match the
message, the message must decode within the size limits. The party then applies its own
checks (round newer than any seen, model hash, protection level, stage order). Refusals go
back as an Error frame; the node keeps serving. The newest round seen is persisted in
``OUT/state.json`` so a restarted node never accepts an older round again; round receipts
(RoundResult, with the ledger head the aggregator recorded) are appended there too.

Every RoundResult must carry the round receipt signed by the aggregator's pinned Ed25519 key;
:mod:`fedrx.nodes.receipt_check` says what is checked. On any mismatch the node logs an error
and stops (:class:`~fedrx.errors.ProtocolError`). Verified receipts go to
``OUT/receipts.jsonl``.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from fedrx.atomic import atomic_write_bytes, atomic_write_text
from fedrx.canonical import canonical_json
from fedrx.errors import ConfigError, FedrxError, ProtocolError
from fedrx.medrx.exports import load_export
from fedrx.medrx.metrics import load_ddi_pairs
from fedrx.medrx.mimic import DDI_FILE
from fedrx.medrx.prepare import prepare_hospital
from fedrx.nodes import wire
from fedrx.nodes.certs import Deployment, load_tls
from fedrx.nodes.checkpoint import check_writable
from fedrx.nodes.codec import CodecError, Limits
from fedrx.nodes.config import DataConfig, NodeConfig, event
from fedrx.nodes.node_state import load_kept, read_node_state, read_signed_receipts, save_kept
from fedrx.nodes.party import client_optimizer, dp_factory, protection_params
from fedrx.nodes.receipt_check import ReceiptRejected, check_round_result
from fedrx.nodes.taskspec import PUBLIC, TaskSpec, first_difference
from fedrx.nodes.tls_check import check_key_pair
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2_grpc as pb_grpc
from fedrx.protocol.hospital import HospitalParty
from fedrx.protocol.messages import TRAIN
from fedrx.protocol.registry import make_party
from fedrx.secagg.identity import Identity

log = logging.getLogger("fedrx.nodes.hospital")

FATAL = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
         grpc.StatusCode.FAILED_PRECONDITION)
"""Statuses after which reconnecting cannot help (the aggregator refused THIS hospital)."""


class HospitalNode:
    """A hospital process. ``run()`` returns 0 after Goodbye or a signal; it raises
    ProtocolError when the aggregator says it failed, refuses this hospital, or no session
    could be held for ``give_up_seconds``."""

    def __init__(self, cfg: NodeConfig, data: DataConfig, privacy: dict[str, Any] | None = None,
                 *, insecure: bool = False):
        self.cfg = cfg
        self.data = data
        if cfg.insecure and not insecure:
            raise ConfigError("the config asks for plaintext; pass --insecure explicitly")
        self.insecure = insecure
        self.dep = Deployment.load(Path(cfg.federation))
        self.spec = self.dep.pinned_task(f"[node] federation {cfg.federation}")
        if cfg.task:  # this hospital's own copy of the task: it must be the pinned one
            mine = TaskSpec.load(Path(cfg.task))
            if mine.sha256 != self.spec.sha256:
                raise ConfigError(f"{cfg.task}: this hospital's task spec differs from the one "
                                  "pinned in the federation file: "
                                  f"{first_difference(mine, self.spec) or 'content'}")
        self.task_cfg = self.spec.task_config(privacy, data=data.path)
        self.spec.check_policy(self.task_cfg)
        self.identity = Identity.load(Path(cfg.identity))
        h = cfg.hospital
        if self.identity.hospital != h:
            raise ConfigError(f"identity {cfg.identity} belongs to {self.identity.hospital!r}, "
                              f"not {h!r}")
        if self.dep.federation.members.get(h) != self.identity.public:
            raise ConfigError(f"identity of {h} is not the one pinned in the federation")
        self.tls = None
        if not insecure:
            if not (cfg.ca and cfg.cert and cfg.key):
                raise ConfigError("TLS certificates are required ([node] ca, cert, key); "
                                  "plaintext needs --insecure explicitly")
            self.tls = load_tls(Path(cfg.ca), Path(cfg.cert), Path(cfg.key), self.dep,
                                expect_hospital=h)
            check_key_pair(self.tls.cert, self.tls.key, Path(cfg.cert), Path(cfg.key))
        self.limits = Limits(max_message_bytes=cfg.max_message_mb << 20)
        self.stop = threading.Event()
        self.faults = cfg.fault_plan()
        self.out = Path(cfg.out) if cfg.out else None
        if self.out is not None:  # before any data is read or any round trained
            check_writable(self.out, "[node] out")
        self._kept_hash = ""
        self.receipts: list[dict[str, Any]] = []
        self.signed_receipts: list[dict[str, Any]] = []
        self.party: HospitalParty | None = None
        self._call: Any = None
        self._welcomed_at = 0.0  # monotonic time of the newest Welcome

    # -- setup ---------------------------------------------------------------------
    def build_party(self) -> HospitalParty:
        """This hospital's party from ITS OWN export only (``[data]``), under the pinned task,
        exactly as its simulated twin builds it (:func:`fedrx.protocol.registry.make_party`
        with :mod:`fedrx.nodes.party`)."""
        t, d, h = self.task_cfg, self.data, self.cfg.hospital
        cohort = load_export(d.path, d.format, site=d.site, mappings=d.mappings or None,
                             min_visits=t.min_visits, hospital=h)
        pairs = None  # the DDI graph (public reference data) only from [data] mappings
        if d.mappings and (Path(d.mappings) / DDI_FILE).is_file():
            pairs = load_ddi_pairs(Path(d.mappings) / DDI_FILE)
        task, own, _ = prepare_hospital(cohort, self.spec.vocab(),
                                        public=self.spec.encoding == PUBLIC, seed=t.seed,
                                        model=t.model, hidden=t.hidden, pairs=pairs)
        event(log, logging.INFO, "own export read", hospital=h, format=d.format,
              patients=len(cohort.patients), train_visits=len(own.train))
        dp = None
        if t.dp:
            if self.out is None:
                raise ConfigError("[node] out is required with DP (the ledger lives there)")
            # the hospital's OWN policy ([privacy] of its config) and its real long-term identity;
            # ledger in OUT/ledger/<h>.jsonl, public identity in OUT/identities/<h>.pub.json
            dist = self.spec.distributed()
            if dist is None:
                dp = dp_factory(t, self.out)(h, self.identity, own)
            else:  # one federation step per round; N pinned, n = the pinned federation
                dp = dp_factory(t, self.out, federation_patients=int(dist["dp_patients"]),
                                n_hospitals=len(self.dep.hospitals),
                                dim=task.spec.size)(h, self.identity, own)
        # the round policy (derived session, round bound, minimum round size, n_C) comes
        # from the pinned federation file and task, never from the aggregator
        party = make_party(h, task, own, protection=t.protection,
                           federation=self.dep.federation, identity=self.identity,
                           params=protection_params(t, len(self.dep.hospitals))
                           | self.spec.protection_extra()
                           | self._local_params(t.protection),
                           client_optimizer=client_optimizer(t), seed=t.seed, dp=dp,
                           policy=self.spec.policy(self.dep.federation_id))
        saved = read_node_state(self.out)
        party.last_round = int(saved.get("last_round", 0))
        party.keep_results = True  # rounds here get receipts (see HospitalParty.receipted)
        if dp is not None and self.out is not None:
            party.kept = load_kept(self.out, saved.get("kept"), dp.ledger.entries)
        self.receipts = list(saved.get("receipts", []))
        self.signed_receipts = read_signed_receipts(self.out)
        self.party = party
        return party

    def _local_params(self, protection: str) -> dict[str, Any]:
        """Node-local protection settings (never pinned): ckks-threshold keeps its key shares
        beside the identity file (mode 0600), so a restarted node keeps its key epoch."""
        if protection == "ckks-threshold":
            return {"key_dir": str(Path(self.cfg.identity).parent)}
        return {}

    def _own_head(self, rnd: int) -> str:
        """This hospital's ledger entry hash of round ``rnd`` ("" without one)."""
        dp = self.party.dp if self.party is not None else None
        if dp is None:
            return ""
        reused = self.party.head_of(rnd) if self.party is not None else None
        if reused is not None:  # the round re-sent a kept, already-charged result
            return reused
        for e in dp.ledger.entries:
            if int(e["round"]) == rnd:
                return str(e["entry_hash"])
        return ""

    def _session_id(self) -> bytes | None:
        """The session this hospital derived from the pinned federation (None before the
        party is built or without a pinned round policy)."""
        pinned = getattr(self.party.protection, "pinned", None) if self.party else None
        return pinned.session_id if pinned is not None else None

    def verify_result(self, r: pb.RoundResult) -> dict[str, Any]:
        """The signed receipt of RoundResult ``r`` once verified
        (:func:`fedrx.nodes.receipt_check.check_round_result`); logs an error and raises
        ProtocolError otherwise."""
        h = self.cfg.hospital
        try:
            return check_round_result(r, hospital=h, deployment=self.dep,
                                      own_head=self._own_head,
                                      previous=self.signed_receipts[-1]
                                      if self.signed_receipts else None,
                                      session_id=self._session_id())
        except ReceiptRejected as exc:
            event(log, logging.ERROR, "round receipt rejected; stopping", hospital=h,
                  round=r.round, why=exc.why)
            raise ProtocolError(f"{h}: round {r.round} receipt rejected: {exc.why}") from None

    def _store_receipt(self, signed: dict[str, Any]) -> None:
        self.signed_receipts.append(signed)
        if self.out is None:
            return
        atomic_write_bytes(self.out / "receipts.jsonl",
                           b"".join(canonical_json(x) + b"\n" for x in self.signed_receipts))

    def _save_state(self) -> None:
        if self.out is None or self.party is None:
            return
        kept, self._kept_hash = save_kept(self.out, self.party.kept, self._kept_hash)
        atomic_write_text(self.out / "state.json", json.dumps({
            "format": "fedrx-node/1", "hospital": self.cfg.hospital,
            "last_round": self.party.last_round, "receipts": self.receipts,
            "rounds": [{"round": e.round, "state": e.state.value, "loss": e.loss,
                        "examples": e.n_examples, "reason": e.reason,
                        "reused_from": e.reused_from} for e in self.party.log],
            # the personalised model's metric sums: kept here only (never sent)
            "personal": {str(r): v for r, v in sorted(self.party.personal.items())},
            "kept": kept}, indent=1) + "\n")

    # -- signals -------------------------------------------------------------------
    def _handle_signal(self, signum: int, frame: Any) -> None:
        self.stop.set()
        call = self._call
        if call is not None:
            threading.Thread(target=call.cancel, daemon=True).start()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._handle_signal)
        signal.signal(signal.SIGINT, self._handle_signal)

    # -- connection loop -----------------------------------------------------------
    def _address(self) -> str | None:
        if self.cfg.aggregator:
            return self.cfg.aggregator
        try:
            return Path(self.cfg.aggregator_file).read_text().strip() or None
        except OSError:
            return None

    def _channel(self, address: str) -> grpc.Channel:
        opts = wire.grpc_options()
        if self.insecure:
            return grpc.insecure_channel(address, options=opts)
        assert self.tls is not None
        if self.cfg.server_name:
            opts.append(("grpc.ssl_target_name_override", self.cfg.server_name))
        # the server must chain to the one-shot root pinned in federation.json: only the
        # aggregator's pinned certificate does (see fedrx.nodes.certs)
        creds = grpc.ssl_channel_credentials(root_certificates=self.dep.aggregator_root,
                                             private_key=self.tls.key,
                                             certificate_chain=self.tls.cert)
        return grpc.secure_channel(address, creds, options=opts)

    def run(self) -> int:
        """Serve until Goodbye (0) or a signal (0); ProtocolError if refused, given up, or
        the aggregator's Goodbye says it failed. The give-up clock restarts whenever a
        session is established (Welcome received), however that session ends."""
        party = self.party or self.build_party()
        delay = self.cfg.backoff_initial
        last_ok = time.monotonic()
        while not self.stop.is_set():
            address = self._address()
            outcome = "no address"
            if address:
                try:
                    outcome = self._session(address, party)
                except grpc.RpcError as exc:
                    code = exc.code() if hasattr(exc, "code") else None
                    details = exc.details() if hasattr(exc, "details") else ""
                    if self.stop.is_set():
                        break
                    if code in FATAL:
                        raise ProtocolError(f"aggregator refused {self.cfg.hospital}: "
                                            f"{details} ({code.name})") from None
                    outcome = f"{code.name if code else 'error'}: {details}"
                    if code == grpc.StatusCode.ALREADY_EXISTS:
                        # another session holds this identity (a copied certificate?): an
                        # impostor must not make the real hospital give up
                        event(log, logging.WARNING, "another session holds this identity; "
                              "copied certificate?", hospital=self.cfg.hospital)
                        last_ok = time.monotonic()
            if outcome == "goodbye":
                return 0
            if outcome == "connected" or self._welcomed_at > last_ok:
                delay = self.cfg.backoff_initial
                last_ok = max(time.monotonic() if outcome == "connected" else 0.0,
                              self._welcomed_at)
            if self.stop.is_set():
                break
            if self.cfg.give_up_seconds and time.monotonic() - last_ok > \
                    self.cfg.give_up_seconds:
                raise ProtocolError(f"{self.cfg.hospital}: no session with the aggregator for "
                                    f"{self.cfg.give_up_seconds:.0f}s ({outcome})")
            sleep = delay * (0.5 + random.random())  # noqa: S311 - jitter, not crypto
            event(log, logging.INFO, "reconnecting", hospital=self.cfg.hospital,
                  after=round(sleep, 2), why=outcome[:200])
            self.stop.wait(sleep)
            delay = min(delay * 2, self.cfg.backoff_max)
        event(log, logging.INFO, "stopped", hospital=self.cfg.hospital)
        return 0

    def _session(self, address: str, party: HospitalParty) -> str:
        channel = self._channel(address)
        try:
            try:
                grpc.channel_ready_future(channel).result(timeout=5.0)
            except grpc.FutureTimeoutError:
                return "aggregator unreachable (or TLS handshake refused)"
            outq: queue.Queue[Any] = queue.Queue()
            outq.put(pb.HospitalFrame(hello=pb.Hello(
                protocol_version=wire.PROTOCOL_VERSION, hospital=self.cfg.hospital,
                sign_public=self.identity.public.sign_public,
                task_digest=self.spec.sha256, protection=self.task_cfg.protection,
                last_round=party.last_round)))

            def frames() -> Any:
                while True:
                    f = outq.get()
                    if f is None:
                        return
                    yield f

            call = pb_grpc.AggregatorStub(channel).Session(frames())
            self._call = call
            if self.stop.is_set():
                call.cancel()
            try:
                return self._serve(call, outq, party)
            finally:
                outq.put(None)
                self._call = None
        finally:
            channel.close()

    def _serve(self, call: Any, outq: queue.Queue[Any], party: HospitalParty) -> str:
        h = self.cfg.hospital
        inbox = wire.Inbox(self.limits)
        last_seq = 0
        welcomed = False
        for frame in call:
            body = frame.WhichOneof("body")
            hdr = frame.header
            if body == "welcome":
                welcomed = True
                self._welcomed_at = time.monotonic()
                if frame.welcome.federation_id != self.dep.federation_id:
                    raise ProtocolError("aggregator serves another federation")
                event(log, logging.INFO, "connected", hospital=h,
                      next_round=frame.welcome.next_round, rounds=frame.welcome.rounds,
                      protection=frame.welcome.protection)
                continue
            if not welcomed:
                raise ProtocolError("aggregator did not send Welcome first")
            if body == "goodbye":
                event(log, logging.INFO, "aggregator said goodbye", hospital=h,
                      reason=frame.goodbye.reason[:200])
                self._save_state()
                if frame.goodbye.reason.startswith("failed"):
                    raise ProtocolError(f"{h}: the aggregator failed: "
                                        f"{frame.goodbye.reason[:200]}")
                return "goodbye"
            if body == "result":
                r = frame.result
                self._store_receipt(self.verify_result(r))
                party.receipted(r.round)
                self.receipts.append({"round": r.round, "status": r.status,
                                      "model_hash": r.model_hash, "ledger_head": r.ledger_head,
                                      "contributed": h in r.contributors})
                self._save_state()
                event(log, logging.INFO, "round result", hospital=h, round=r.round,
                      status=r.status, contributed=h in r.contributors)
                continue
            if body == "error":
                event(log, logging.WARNING, "aggregator reported an error", hospital=h,
                      code=frame.error.code, reason=frame.error.reason[:200])
                continue
            if hdr.seq <= last_seq:
                self._refuse(outq, hdr, "replay", f"frame seq {hdr.seq} not after {last_seq}")
                continue
            try:
                got = inbox.accept(frame)
            except CodecError as exc:
                last_seq = hdr.seq
                self._refuse(outq, hdr, exc.code, str(exc))
                continue
            if got is None:
                continue
            last_seq = hdr.seq
            self._answer(outq, got, party)
        return "connected"

    def _refuse(self, outq: queue.Queue[Any], hdr: pb.Header, code: str, reason: str) -> None:
        event(log, logging.WARNING, "request rejected", hospital=self.cfg.hospital,
              round=hdr.round, stage=hdr.stage[:32], code=code, reason=reason[:200])
        outq.put(pb.HospitalFrame(header=hdr, error=pb.Error(code=code, reason=reason[:500])))

    def _answer(self, outq: queue.Queue[Any], got: wire.Incoming, party: HospitalParty) -> None:
        hdr, msg = got.header, got.message
        stage, rnd = hdr.stage, int(hdr.round)
        if getattr(msg, "round", rnd) != rnd:
            self._refuse(outq, hdr, "wrong_round", f"message round {msg.round} in a frame "
                                                   f"of round {rnd}")
            return
        self.faults.crash_here(self.cfg.hospital, stage, rnd)
        t0 = time.perf_counter()
        try:
            reply = party.handle(stage, msg)
            env, data = wire.encode(reply)
        except FedrxError as exc:  # any refusal is clean: an Error frame, state kept
            self._refuse(outq, hdr, "refused", str(exc))
            if stage == TRAIN:
                self._save_state()
            return
        except Exception as exc:  # noqa: BLE001 - no message may crash the node (a bug):
            # refuse with the exception's type only (its text could hold local values)
            event(log, logging.ERROR, "handler failed; request refused",
                  hospital=self.cfg.hospital, round=rnd, stage=stage[:32],
                  error=type(exc).__name__)
            self._refuse(outq, hdr, "internal", f"internal error ({type(exc).__name__})")
            self._save_state()
            return
        for f in wire.frames(pb.HospitalFrame, hdr, env, data):
            outq.put(f)
        if stage == TRAIN:
            self._save_state()
        event(log, logging.INFO, "answered", hospital=self.cfg.hospital, round=rnd,
              stage=stage, bytes=len(data), seconds=round(time.perf_counter() - t0, 3))
