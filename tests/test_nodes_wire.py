"""fedrx.v1 framing: chunking and reassembly of large Envelopes (size, order, SHA-256)."""

from __future__ import annotations

import hashlib

import pytest

from fedrx.nodes import wire
from fedrx.nodes.codec import CodecError, Limits, OversizeError
from fedrx.nodes.wire import Reassembler
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb


def test_chunking_round_trip_and_tampering():
    data = bytes(range(256)) * 40_000                    # ~10 MB -> 10 chunks of 1 MiB
    chunks = list(wire.chunk_envelope(data))
    assert len(chunks) == 10 and all(len(c.data) <= wire.CHUNK_BYTES for c in chunks)
    assert all(c.ByteSize() < wire.MAX_FRAME_BYTES for c in chunks)
    r = Reassembler(Limits(max_message_bytes=len(data)))
    out = [r.feed(("k",), c) for c in chunks]
    assert out[-1] == data and all(o is None for o in out[:-1])
    # declared size above the limit: refused before anything is buffered
    with pytest.raises(OversizeError):
        Reassembler(Limits(max_message_bytes=len(data) - 1)).feed(("k",), chunks[0])
    # out of order / another message's chunk
    r = Reassembler()
    r.feed(("k",), chunks[0])
    with pytest.raises(CodecError):
        r.feed(("k",), chunks[2])
    r = Reassembler()
    r.feed(("k",), chunks[0])
    with pytest.raises(CodecError):
        r.feed(("other",), chunks[1])
    # tampered content: SHA-256 mismatch
    r = Reassembler()
    bad = [pb.Chunk() for _ in chunks]
    for b, c in zip(bad, chunks, strict=True):
        b.CopyFrom(c)
    bad[3].data = bytes([bad[3].data[0] ^ 1]) + bad[3].data[1:]
    with pytest.raises(CodecError, match="SHA-256"):
        for c in bad:
            r.feed(("k",), c)
    # more bytes than declared
    r = Reassembler()
    first = pb.Chunk(index=0, total_bytes=10, sha256=hashlib.sha256(b"x").digest(), data=b"ab")
    r.feed(("k",), first)
    with pytest.raises(OversizeError):
        r.feed(("k",), pb.Chunk(index=1, data=b"x" * 20, last=True))
