"""Framing shared by both ends: channel/server options, message -> frames, frames -> message.

A logical message is one ``Envelope``; up to :data:`~fedrx.nodes.codec.CHUNK_BYTES` it
travels inline (``body.message``), above that as ``body.chunk`` frames (see
:class:`~fedrx.nodes.codec.Reassembler`). Every frame of one message carries the same header.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedrx.nodes import codec
from fedrx.nodes.codec import CHUNK_BYTES, MAX_FRAME_BYTES, CodecError, Limits
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb

PROTOCOL_VERSION = 1
SERVICE = "fedrx.v1.Aggregator"


def grpc_options() -> list[tuple[str, Any]]:
    """Explicit size limits (no frame above 4 MiB) and keepalive for long-lived streams."""
    return [
        ("grpc.max_send_message_length", MAX_FRAME_BYTES),
        ("grpc.max_receive_message_length", MAX_FRAME_BYTES),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ]


def header(session_id: bytes, rnd: int, stage: str, seq: int) -> pb.Header:
    return pb.Header(session_id=session_id, round=rnd, stage=stage, seq=seq)


def encode(msg: Any) -> tuple[pb.Envelope, bytes]:
    env = codec.encode_message(msg)
    return env, env.SerializeToString()


def frames(frame_cls: Callable[..., Any], hdr: pb.Header, env: pb.Envelope,
           data: bytes) -> list[Any]:
    """The frames (``HospitalFrame`` or ``AggregatorFrame``) carrying one Envelope."""
    if len(data) <= CHUNK_BYTES:
        return [frame_cls(header=hdr, message=env)]
    return [frame_cls(header=hdr, chunk=c) for c in codec.chunk_envelope(data)]


@dataclass
class Incoming:
    """A complete message received: its header, the decoded dataclass, wire bytes."""

    header: pb.Header
    message: Any
    wire_bytes: int


class Inbox:
    """Turns a stream's ``message``/``chunk`` frames into validated messages.

    ``accept`` returns an :class:`Incoming` when a message is complete, None while a chunked
    one is in progress, and raises CodecError/OversizeError on hostile input.
    """

    def __init__(self, limits: Limits):
        self.limits = limits
        self.reasm = codec.Reassembler(limits)
        self._bytes = 0

    def accept(self, frame: Any) -> Incoming | None:
        body = frame.WhichOneof("body")
        hdr = frame.header
        self._bytes += frame.ByteSize()
        if body == "message":
            if self.reasm.busy:
                self.reasm.reset()
                raise CodecError("inline message inside a chunked one")
            msg = codec.decode_message(frame.message, self.limits)
        elif body == "chunk":
            key = (hdr.session_id, hdr.round, hdr.stage, hdr.seq)
            data = self.reasm.feed(key, frame.chunk)
            if data is None:
                return None
            msg = codec.from_bytes(data, self.limits)
        else:
            raise CodecError(f"unexpected frame body {body!r}")
        n, self._bytes = self._bytes, 0
        return Incoming(hdr, msg, n)
