"""Bit-packing of vectors over Z_{2**m}: exactly ceil(length * m / 8) bytes on the wire.

Element ``i`` occupies bits ``[i*m, (i+1)*m)`` of the little-endian bit stream (LSB first).
``unpack`` checks the byte length and that the padding bits are zero, so every element it
returns lies in ``[0, 2**m)``.

Two implementations compute that one format:

* ``native`` (default when built): the C kernels of ``fedrx.secagg._bitpack_native``
  (secagg/_bitpack_native.c, compiled by ``pip install``), one pass per vector, GIL
  released. Packing is a sequential 64-bit bit writer; unpack-add reads each element with
  one unaligned little-endian 8-byte load (9 bytes for m >= 58), shift and mask, and adds
  it into the running sum, with a byte-wise path for the last groups so nothing past the
  buffer is read. With SIMD (checked at import; :data:`SIMD`), for m <= 57: on AVX-512 VBMI
  a group of 8 elements takes one 64-byte load, a byte permutation, a variable shift and
  one 8-lane add; on AVX2, two 16-byte loads and an in-lane byte shuffle per 4 elements.
  ``FEDRX_BITPACK=scalar`` or ``=avx2`` caps the level (to measure what other CPUs run).
* ``numpy`` (fallback when the extension could not be compiled, or forced with the
  environment variable ``FEDRX_BITPACK=numpy``): 8 consecutive elements fill exactly ``m``
  bytes, so element ``8g + j`` starts at byte ``g*m + (j*m)//8``, bit ``(j*m) % 8``. For
  each phase ``j`` (0..7) a strided, unaligned little-endian uint64 view of the byte buffer
  (stride ``m`` bytes) holds element ``8g + j`` shifted left by ``s = (j*m) % 8``: one
  vectorised shift (and OR, when packing) per phase handles all groups at once. When
  ``s + m > 64`` (only ``m >= 58``) a second view 4 bytes further supplies the top bits.

Both are tested against each other and against a big-integer reference for every width.
:data:`BACKEND` names the one in use.

:class:`SumAccumulator` adds packed vectors into a running sum mod ``2**m`` without
materialising the unpacked vector: it skips the ``& (2**m - 1)`` on the running sum (the
bits above ``m`` only add multiples of ``2**m``; one final reduction removes them).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from fedrx.errors import ProtocolError
from fedrx.secagg.prg import check_modulus_bits

_API_VERSION = 2  # must equal API_VERSION in _bitpack_native.c


def _load_native():  # noqa: ANN202 (a module or None)
    if os.environ.get("FEDRX_BITPACK", "").lower() == "numpy":
        return None
    try:
        from fedrx.secagg import _bitpack_native as mod
    except ImportError:  # no C compiler at install time: same format, slower
        return None
    if getattr(mod, "API_VERSION", None) != _API_VERSION:
        warnings.warn("fedrx.secagg._bitpack_native is stale (rebuild with `pip install -e "
                      ".`); using the numpy bit-packing", RuntimeWarning, stacklevel=2)
        return None
    return mod


_native = _load_native()

BACKEND = "native" if _native is not None else "numpy"
_LEVEL_NAMES = ("none", "avx2", "avx512vbmi")  # unpack_add levels 0, 1, 2
_FORCED = {"scalar": 0, "avx2": 1}.get(os.environ.get("FEDRX_BITPACK", "").lower(), -1)
_LEVEL = -1 if _FORCED < 0 or _native is None else \
    min(_FORCED, _LEVEL_NAMES.index(_native.SIMD))
"""unpack_add's SIMD level: -1 = the best this CPU has, else the level forced by
``FEDRX_BITPACK`` (capped at what the CPU has)."""
SIMD = "none" if _native is None else _native.SIMD if _LEVEL < 0 else _LEVEL_NAMES[_LEVEL]

_PAD = 16  # bytes of zero slack after the packed data so every 8-byte window is readable


def packed_size(length: int, m: int) -> int:
    """Bytes needed for ``length`` elements of ``m`` bits."""
    return (length * m + 7) // 8


def _window(buf: np.ndarray, offset: int, groups: int, m: int) -> np.ndarray:
    """Little-endian uint64 view of ``buf`` at byte ``offset + g*m`` for g < groups."""
    return np.ndarray((groups,), dtype="<u8", buffer=buf, offset=offset, strides=(m,))


def _mask(m: int) -> np.uint64:
    return np.uint64((1 << m) - 1) if m < 64 else np.uint64(0xFFFF_FFFF_FFFF_FFFF)


def _pack_bits(v: np.ndarray, m: int) -> bytes:
    """Reference packer through an explicit bit array (used for m < 8)."""
    bits = np.unpackbits(v.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")[:, :m]
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def pack(values: np.ndarray, m: int) -> bytes:
    """Pack uint64 values (each < 2**m) into a byte string; ProtocolError if one is not."""
    check_modulus_bits(m)
    if _native is not None:
        v = np.ascontiguousarray(values, dtype=np.uint64).reshape(-1)
        try:
            return _native.pack(v, m)
        except ValueError:
            raise ProtocolError(f"value does not fit in {m} bits") from None
    return _pack_numpy(values, m)


def _pack_numpy(values: np.ndarray, m: int) -> bytes:
    v = np.ascontiguousarray(values, dtype="<u8").reshape(-1)
    if m < 64 and v.size and int(v.max()) >> m:
        raise ProtocolError(f"value does not fit in {m} bits")
    if m % 8 == 0:
        return v.view(np.uint8).reshape(-1, 8)[:, : m // 8].tobytes()
    if m < 8:
        return _pack_bits(v, m)
    length = v.size
    if length == 0:
        return b""
    full, rest = divmod(length, 8)
    groups = full + (1 if rest else 0)
    if rest:
        v = np.concatenate([v, np.zeros(8 - rest, dtype=np.uint64)])
    v8 = v.reshape(groups, 8)
    buf = np.zeros(groups * m + _PAD, dtype=np.uint8)
    tmp = np.empty(groups, dtype=np.uint64)
    lo32 = np.uint64(0xFFFF_FFFF)
    for j in range(8):
        b, s = divmod(j * m, 8)
        col = v8[:, j]
        if s + m <= 64:
            w = _window(buf, b, groups, m)
            np.left_shift(col, np.uint64(s), out=tmp)
            np.bitwise_or(w, tmp, out=w)
        else:  # m >= 58: low 32 bits at byte b, high bits at byte b + 4 (each < 2**39)
            w = _window(buf, b, groups, m)
            np.bitwise_and(col, lo32, out=tmp)
            np.left_shift(tmp, np.uint64(s), out=tmp)
            np.bitwise_or(w, tmp, out=w)
            w = _window(buf, b + 4, groups, m)
            np.right_shift(col, np.uint64(32), out=tmp)
            np.left_shift(tmp, np.uint64(s), out=tmp)
            np.bitwise_or(w, tmp, out=w)
    return buf[: packed_size(length, m)].tobytes()


def _check_packed(data: bytes, m: int, length: int) -> None:
    """ProtocolError unless ``data`` is bytes of exactly the packed size with zero padding."""
    if not isinstance(data, (bytes, bytearray)):
        raise ProtocolError("packed vector must be bytes")
    size = packed_size(length, m)
    if len(data) != size:
        raise ProtocolError(f"packed vector has {len(data)} bytes, expected {size}")
    used = (length * m) % 8
    if used and data[-1] >> used:
        raise ProtocolError("packed vector has non-zero padding bits")


def _checked_buffer(data: bytes, m: int, length: int) -> np.ndarray:
    """Validate size and padding; return the bytes as uint8 with _PAD zero bytes after
    ``ceil(length/8) * m`` bytes (whole groups)."""
    _check_packed(data, m, length)
    size = packed_size(length, m)
    groups = -(-length // 8)
    buf = np.zeros(groups * m + _PAD, dtype=np.uint8)
    buf[:size] = np.frombuffer(data, dtype=np.uint8)
    return buf


def _phase_into(buf: np.ndarray, m: int, j: int, groups: int, out: np.ndarray,
                reduce: bool) -> None:
    """out[g] = element 8g + j (reduced mod 2**m only if ``reduce``; else plus garbage
    multiples of 2**m)."""
    b, s = divmod(j * m, 8)
    w = _window(buf, b, groups, m)
    if s + m <= 64:
        np.right_shift(w, np.uint64(s), out=out)
    else:  # m >= 58
        np.right_shift(w, np.uint64(s), out=out)
        np.bitwise_and(out, np.uint64(0xFFFF_FFFF), out=out)
        hi = np.right_shift(_window(buf, b + 4, groups, m), np.uint64(s))
        np.left_shift(hi, np.uint64(32), out=hi)
        np.bitwise_or(out, hi, out=out)
    if reduce and m < 64:
        np.bitwise_and(out, _mask(m), out=out)


def unpack(data: bytes, m: int, length: int) -> np.ndarray:
    """Inverse of :func:`pack`; raises ProtocolError on a wrong size or non-zero padding."""
    check_modulus_bits(m)
    if _native is not None:
        _check_packed(data, m, length)
        out = np.zeros(length, dtype=np.uint64)
        _native.unpack_add(data, m, length, out, _LEVEL)
        return out
    return _unpack_numpy(data, m, length)


def _unpack_numpy(data: bytes, m: int, length: int) -> np.ndarray:
    buf = _checked_buffer(data, m, length)
    if m % 8 == 0:
        full = np.zeros((length, 8), dtype=np.uint8)
        full[:, : m // 8] = buf[: length * (m // 8)].reshape(length, m // 8)
        return full.view("<u8").reshape(-1).astype(np.uint64)
    groups = -(-length // 8)
    if groups == 0:
        return np.zeros(0, dtype=np.uint64)
    out = np.empty((groups, 8), dtype=np.uint64)
    col = np.empty(groups, dtype=np.uint64)
    for j in range(8):
        _phase_into(buf, m, j, groups, col, reduce=True)
        out[:, j] = col
    return out.reshape(-1)[:length].copy() if length % 8 else out.reshape(-1)


class SumAccumulator:
    """Running sum mod ``2**m`` of bit-packed vectors of ``length`` elements.

    ``add(data)`` validates ``data`` exactly as :func:`unpack` does (raising ProtocolError
    before touching the sum) and adds it; ``total()`` returns the sum reduced mod ``2**m``
    as a uint64 array in natural order. ``backend``: ``"native"`` or ``"numpy"`` (default:
    :data:`BACKEND`; the numpy one keeps the sum in phase-major order so that every
    addition is contiguous).
    """

    def __init__(self, m: int, length: int, backend: str | None = None):
        check_modulus_bits(m)
        backend = backend or BACKEND
        if backend not in ("native", "numpy") or (backend == "native" and _native is None):
            raise ValueError(f"bitpack backend {backend!r} is not available")
        self.m = m
        self.length = length
        self.backend = backend
        self._groups = -(-length // 8)
        if backend == "native":
            self._acc = np.empty(length, dtype=np.uint64)
            self._acc.fill(0)  # touch every page now, not during the first add
        else:
            self._acc = np.zeros((8, self._groups), dtype=np.uint64)  # phase-major
            self._tmp = np.empty(self._groups, dtype=np.uint64)

    def add(self, data: bytes) -> None:
        if self.backend == "native":
            _check_packed(data, self.m, self.length)
            _native.unpack_add(data, self.m, self.length, self._acc, _LEVEL)
            return
        buf = _checked_buffer(data, self.m, self.length)
        m, g = self.m, self._groups
        if g == 0:
            return
        for j in range(8):
            row = self._acc[j]
            b, s = divmod(j * m, 8)
            if s == 0:  # the window already holds the element (plus multiples of 2**m)
                np.add(row, _window(buf, b, g, m), out=row)
            else:
                _phase_into(buf, m, j, g, self._tmp, reduce=False)
                np.add(row, self._tmp, out=row)

    def total(self) -> np.ndarray:
        if self.backend == "native":
            out = self._acc.copy()
        else:
            out = np.ascontiguousarray(self._acc.T).reshape(-1)[: self.length]
            out = np.ascontiguousarray(out)
        if self.m < 64:
            out &= _mask(self.m)
        return out
