"""Bit-packing of vectors over Z_{2**m}: exactly ceil(length * m / 8) bytes on the wire.

Element ``i`` occupies bits ``[i*m, (i+1)*m)`` of the little-endian bit stream (LSB first).
``unpack`` checks the byte length and that the padding bits are zero, so every element it
returns lies in ``[0, 2**m)``.
"""

from __future__ import annotations

import numpy as np

from fedrx.errors import ProtocolError
from fedrx.secagg.prg import check_modulus_bits


def packed_size(length: int, m: int) -> int:
    """Bytes needed for ``length`` elements of ``m`` bits."""
    return (length * m + 7) // 8


def pack(values: np.ndarray, m: int) -> bytes:
    """Pack uint64 values (each < 2**m) into a byte string."""
    check_modulus_bits(m)
    v = np.ascontiguousarray(values, dtype="<u8")
    if m < 64 and v.size and int(v.max()) >> m:
        raise ProtocolError(f"value does not fit in {m} bits")
    if m % 8 == 0:
        return v.view(np.uint8).reshape(-1, 8)[:, : m // 8].tobytes()
    bits = np.unpackbits(v.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")[:, :m]
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def unpack(data: bytes, m: int, length: int) -> np.ndarray:
    """Inverse of :func:`pack`; raises ProtocolError on a wrong size or non-zero padding."""
    check_modulus_bits(m)
    if len(data) != packed_size(length, m):
        raise ProtocolError(f"packed vector has {len(data)} bytes, expected "
                            f"{packed_size(length, m)}")
    raw = np.frombuffer(data, dtype=np.uint8)
    if m % 8 == 0:
        full = np.zeros((length, 8), dtype=np.uint8)
        full[:, : m // 8] = raw.reshape(length, m // 8)
        return full.view("<u8").reshape(-1).astype(np.uint64)
    bits = np.unpackbits(raw, bitorder="little")
    if np.any(bits[length * m:]):
        raise ProtocolError("packed vector has non-zero padding bits")
    full = np.zeros((length, 64), dtype=np.uint8)
    full[:, :m] = bits[: length * m].reshape(length, m)
    return np.packbits(full, axis=1, bitorder="little").view("<u8").reshape(-1).astype(np.uint64)
