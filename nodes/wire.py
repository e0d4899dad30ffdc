"""Framing and chunking, shared by both ends: channel/server options, message -> frames,
frames -> message.

A logical message is one ``Envelope`` (:mod:`fedrx.nodes.codec`); up to :data:`CHUNK_BYTES`
it travels inline (``body.message``), above that as consecutive ``body.chunk`` frames
(:func:`chunk_envelope`): the first chunk declares the total size and SHA-256, which the
receiver (:class:`Reassembler`) checks against its limit BEFORE buffering and against the
bytes after reassembly. Every frame of one message carries the same header.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fedrx.nodes import codec
from fedrx.nodes.codec import DEFAULT_LIMITS, CodecError, Limits, OversizeError
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb

PROTOCOL_VERSION = 1
SERVICE = "fedrx.v1.Aggregator"
CHUNK_BYTES = 1 << 20
"""Largest Envelope slice per frame (bytes). Frames stay far below MAX_FRAME_BYTES."""
MAX_FRAME_BYTES = 4 << 20
"""grpc max send/receive message length set on every channel and server (bytes)."""


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
    return [frame_cls(header=hdr, chunk=c) for c in chunk_envelope(data)]


# -------------------------------------------------------------------------- chunks


def chunk_envelope(data: bytes, chunk_bytes: int = CHUNK_BYTES) -> Iterator[pb.Chunk]:
    """Slices of a serialised Envelope; the first carries total size and SHA-256."""
    n = max(1, math.ceil(len(data) / chunk_bytes))
    digest = hashlib.sha256(data).digest()
    for i in range(n):
        part = data[i * chunk_bytes:(i + 1) * chunk_bytes]
        if i == 0:
            yield pb.Chunk(index=0, total_bytes=len(data), sha256=digest, last=n == 1,
                           data=part)
        else:
            yield pb.Chunk(index=i, last=i == n - 1, data=part)


class Reassembler:
    """Collects one chunked Envelope at a time. ``feed`` returns the bytes when complete.

    Invariants: chunks arrive in order with consecutive indices and the same header key;
    the declared total is checked against ``limits.max_message_bytes`` before buffering,
    and the SHA-256 and length after the last chunk. Any violation raises CodecError /
    OversizeError and drops the partial message.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS, chunk_bytes: int = CHUNK_BYTES):
        self.limits = limits
        self.chunk_bytes = chunk_bytes
        self._key: tuple | None = None
        self._parts: list[bytes] = []
        self._have = 0
        self._total = 0
        self._digest = b""

    @property
    def busy(self) -> bool:
        """A chunked message is in progress."""
        return self._key is not None

    def reset(self) -> None:
        self._key, self._parts, self._have, self._total, self._digest = None, [], 0, 0, b""

    def feed(self, key: tuple, chunk: pb.Chunk) -> bytes | None:
        if len(chunk.data) > self.chunk_bytes:
            self.reset()
            raise OversizeError(f"chunk of {len(chunk.data)} bytes exceeds {self.chunk_bytes}")
        if chunk.index == 0:
            if self._key is not None:
                self.reset()
                raise CodecError("new chunked message before the previous one completed")
            if chunk.total_bytes > self.limits.max_message_bytes:
                raise OversizeError(f"declared message size {chunk.total_bytes} exceeds the "
                                    f"limit {self.limits.max_message_bytes}")
            if len(chunk.sha256) != 32:
                raise CodecError("first chunk lacks a SHA-256")
            self._key, self._total, self._digest = key, int(chunk.total_bytes), chunk.sha256
        elif self._key != key or chunk.index != len(self._parts):
            self.reset()
            raise CodecError("chunk out of order or for another message")
        self._parts.append(chunk.data)
        self._have += len(chunk.data)
        if self._have > self._total:
            self.reset()
            raise OversizeError("chunks exceed the declared size")
        if not chunk.last:
            return None
        data = b"".join(self._parts)
        ok = len(data) == self._total and hashlib.sha256(data).digest() == self._digest
        self.reset()
        if not ok:
            raise CodecError("reassembled message does not match its size/SHA-256")
        return data


# --------------------------------------------------------------------------- inbox


@dataclass
class Incoming:
    """A complete message received: its header, the decoded dataclass, wire bytes."""

    header: pb.Header
    message: Any
    wire_bytes: int


class Inbox:
    """Turns a stream's ``message``/``chunk`` frames into validated messages.

    ``accept`` returns an :class:`Incoming` when a message is complete, None while a chunked
    one is in progress, and raises CodecError/OversizeError on hostile input (the wire
    rules of :func:`~fedrx.nodes.codec.decode_message`, then
    :func:`~fedrx.nodes.codec.check_received`).
    """

    def __init__(self, limits: Limits):
        self.limits = limits
        self.reasm = Reassembler(limits)
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
        codec.check_received(msg)
        n, self._bytes = self._bytes, 0
        return Incoming(hdr, msg, n)
