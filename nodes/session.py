"""One authenticated hospital stream on the aggregator: requests in flight, replies matched
to them, and the peer violations that end the stream.

A :class:`HospitalSession` numbers its requests (``seq``, strictly increasing), sends each
as frames through ``outbox`` and resolves the matching :class:`Pending` when the reply (or
an Error frame) arrives. Hostile input (malformed or oversized frames, a reply to a request
never sent or already answered, wrong round/stage, a second Hello) raises
:class:`PeerViolation`, which ends THAT stream with its gRPC status.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from fedrx.errors import ProtocolError
from fedrx.nodes import wire
from fedrx.nodes.codec import CodecError, Limits, OversizeError
from fedrx.nodes.config import event
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb

log = logging.getLogger("fedrx.nodes.aggregator")

END = object()
"""Put in a session's ``outbox`` after it closed: the sending side stops."""


class PeerViolation(ProtocolError):
    """A peer broke the protocol; ``code`` is the gRPC status its stream ends with."""

    def __init__(self, code: grpc.StatusCode, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason

    @staticmethod
    def from_codec(exc: CodecError) -> PeerViolation:
        """RESOURCE_EXHAUSTED for oversize input, INVALID_ARGUMENT for malformed input."""
        code = grpc.StatusCode.RESOURCE_EXHAUSTED if isinstance(exc, OversizeError) \
            else grpc.StatusCode.INVALID_ARGUMENT
        return PeerViolation(code, str(exc))


@dataclass
class Pending:
    """One request in flight to one hospital (byte counts: frames on the wire)."""

    seq: int
    stage: str
    round: int
    sent_bytes: int = 0
    received_bytes: int = 0
    reply: Any = None
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)


class HospitalSession:
    """One authenticated hospital stream. Thread-safe; frames go out via ``outbox``."""

    def __init__(self, hospital: str, limits: Limits,
                 alive: Callable[[], bool] = lambda: True):
        self.hospital = hospital
        self.alive = alive
        """False once the stream under this session has ended (the RPC is no longer
        active), even before the servicer noticed and closed the session."""
        self.outbox: queue.Queue[Any] = queue.Queue()
        self.inbox = wire.Inbox(limits)
        self.lock = threading.Lock()
        self.seq = 0
        self.pending: dict[int, Pending] = {}
        self.expired: set[int] = set()
        self.answered: set[int] = set()
        self.open = True
        self.last_round = 0

    def request(self, session_id: bytes, stage: str, rnd: int, env: pb.Envelope,
                data: bytes) -> Pending:
        """Queue one request (``env`` serialised as ``data``); a closed session answers at
        once with the error "disconnected"."""
        with self.lock:
            self.seq += 1
            p = Pending(self.seq, stage, rnd)
            if not self.open:
                p.error = "disconnected"
                p.done.set()
                return p
            self.pending[p.seq] = p
            for f in wire.frames(pb.AggregatorFrame, wire.header(session_id, rnd, stage, p.seq),
                                 env, data):
                p.sent_bytes += f.ByteSize()
                self.outbox.put(f)
        return p

    def expire(self, p: Pending) -> None:
        """The deadline passed: a later reply to ``p`` is ignored, not a violation."""
        with self.lock:
            if self.pending.pop(p.seq, None) is not None:
                self.expired.add(p.seq)

    def notify(self, frame: Any) -> None:
        if self.open:
            self.outbox.put(frame)

    def on_frame(self, frame: pb.HospitalFrame) -> None:
        """Handle one frame after Hello; raises PeerViolation on protocol violations."""
        body = frame.WhichOneof("body")
        hdr = frame.header
        if body == "hello":
            raise PeerViolation(grpc.StatusCode.FAILED_PRECONDITION,
                                "second Hello on one session")
        with self.lock:
            p = self.pending.get(hdr.seq)
            late = hdr.seq in self.expired
            replayed = hdr.seq in self.answered
        if p is None:
            if replayed:
                raise PeerViolation(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"second reply to request {hdr.seq} (replay)")
            if late:
                if body == "error" or frame.chunk.last or body == "message":
                    event(log, logging.INFO, "late reply ignored", hospital=self.hospital,
                          seq=hdr.seq, stage=hdr.stage)
                return
            raise PeerViolation(grpc.StatusCode.FAILED_PRECONDITION,
                                f"reply to request {hdr.seq} that is not outstanding (replay?)")
        if hdr.round != p.round or hdr.stage != p.stage:
            raise PeerViolation(grpc.StatusCode.FAILED_PRECONDITION,
                                f"reply header (round {hdr.round}, stage {hdr.stage[:32]!r}) "
                                f"does not match request {p.seq} (round {p.round}, stage "
                                f"{p.stage})")
        if body == "error":
            self._resolve(p, None, f"{frame.error.code[:64]}: {frame.error.reason[:300]}",
                          frame.ByteSize())
            return
        try:
            got = self.inbox.accept(frame)
        except CodecError as exc:
            raise PeerViolation.from_codec(exc) from None
        if got is None:
            return
        rnd = getattr(got.message, "round", p.round)
        if rnd != p.round:
            raise PeerViolation(grpc.StatusCode.FAILED_PRECONDITION,
                                f"reply for round {rnd} to a request of round {p.round}")
        self._resolve(p, got.message, "", got.wire_bytes)

    def _resolve(self, p: Pending, reply: Any, error: str, nbytes: int) -> None:
        with self.lock:
            self.pending.pop(p.seq, None)
            self.answered.add(p.seq)
        p.reply, p.error, p.received_bytes = reply, error, nbytes
        p.done.set()

    def close(self, why: str) -> None:
        """Fail every pending request with ``why`` and stop the sending side; a reply to
        one of them that is still in flight is then late (ignored), not a violation."""
        with self.lock:
            self.open = False
            pend, self.pending = list(self.pending.values()), {}
            self.expired.update(p.seq for p in pend)
        for p in pend:
            p.error = why
            p.done.set()
        self.outbox.put(END)
