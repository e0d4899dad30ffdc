"""The HE worker's stdio framing (standard library only: imported by fedrx, and by the
standalone worker from its own folder).

Frame (both directions)::

    u32 big-endian header length | header: canonical JSON object | blob 0 | blob 1 | ...

The header holds ``"blobs": [len0, len1, ...]`` (raw byte strings that follow it, in order).
"""

from __future__ import annotations

import json
import struct

PROTOCOL = "fedrx-he-worker/1"
MAX_HEADER_BYTES = 1 << 20
MAX_FRAME_BLOBS = 4096
MAX_BLOB_BYTES = 1 << 30


class WorkerError(Exception):
    """A request the worker refuses; ``kind`` is one of "bad-request", "crypto", "internal"."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def encode_frame(header: dict, blobs: list) -> bytes:
    """One frame: canonical JSON header (with the blob lengths) then the raw blobs."""
    h = dict(header)
    h["blobs"] = [len(b) for b in blobs]
    hb = json.dumps(h, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    if len(hb) > MAX_HEADER_BYTES:
        raise WorkerError("bad-request", "frame header too large")
    return b"".join([struct.pack(">I", len(hb)), hb, *[bytes(b) for b in blobs]])


def read_frame(read_exact) -> tuple:
    """Read one frame with ``read_exact(n) -> bytes`` (exactly n bytes or raise EOFError).
    Returns (header dict, list of blobs); WorkerError("bad-request") if malformed."""
    (size,) = struct.unpack(">I", read_exact(4))
    if size > MAX_HEADER_BYTES:
        raise WorkerError("bad-request", f"frame header of {size} bytes exceeds the limit")
    try:
        header = json.loads(read_exact(size).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise WorkerError("bad-request", "frame header is not JSON") from None
    lens = header.get("blobs") if isinstance(header, dict) else None
    if (not isinstance(lens, list) or len(lens) > MAX_FRAME_BLOBS
            or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_BLOB_BYTES
                       for n in lens)
            or sum(lens) > MAX_BLOB_BYTES):
        raise WorkerError("bad-request", "frame blob lengths are malformed or too large")
    return header, [read_exact(n) for n in lens]
