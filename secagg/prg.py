"""Pseudorandom generator for masks: AES-256-CTR keyed by a 256-bit HKDF output.

``prg_bytes(key, n)`` is the first ``n`` bytes of the AES-256-CTR keystream with a 16-byte
all-zero initial counter block (the key is single-use: every key is an HKDF output bound to
the session, round and party pair, so the fixed counter never repeats under one key).

``prg_vector(key, length, modulus_bits)`` expands that stream to ``length`` elements of
``Z_R`` with ``R = 2**modulus_bits`` (1 <= modulus_bits <= 64): each element is one
little-endian word of ``w`` bytes (``w = 4`` when ``modulus_bits <= 32``, else 8) reduced
mod ``R`` by masking the low bits. Because ``R`` is a power of two dividing ``2**(8w)``,
the reduction is exact and uniform: no rejection sampling and no modulo bias.
The result is a ``uint64`` numpy array with every entry in ``[0, R)``.

``prg_accumulate(key, out, modulus_bits, sign)`` adds (``sign=+1``) or subtracts
(``sign=-1``) the same ``len(out)`` words into a uint64 array in place, WITHOUT reducing
mod ``R``: since ``R`` divides ``2**64``, wrapping uint64 arithmetic followed by one final
``& (R - 1)`` gives exactly the sum of the reduced vectors mod ``R``. This is the hot path
of masking and unmasking: the keystream is written straight into a reused scratch buffer
(``update_into`` over a cached all-zero plaintext), never copied or converted.
``prg_accumulate_many`` does the same for many ``(key, sign)`` masks at once, chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedrx.errors import ConfigError, CryptoError

KEY_BYTES = 32
_ZERO_COUNTER = bytes(16)
# Keystream is produced in chunks of this many bytes: the all-zero plaintext chunk and the
# output chunk stay in L2 while AES-NI runs, and numpy adds the chunk while it is hot.
_CHUNK = 1 << 17
_ZEROS = bytes(_CHUNK)
_SLACK = 16  # update_into may ask for len(data) + block_size - 1 bytes of room


def _check_key(key: bytes) -> None:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
        raise CryptoError(f"PRG key must be {KEY_BYTES} bytes")


def check_modulus_bits(modulus_bits: int) -> None:
    """Raise ConfigError unless ``1 <= modulus_bits <= 64``."""
    if not isinstance(modulus_bits, int) or not 1 <= modulus_bits <= 64:
        raise ConfigError(f"modulus_bits must be an integer in [1, 64], got {modulus_bits!r}")


def word_bytes(modulus_bits: int) -> int:
    """Keystream bytes consumed per vector element (4 or 8)."""
    check_modulus_bits(modulus_bits)
    return 4 if modulus_bits <= 32 else 8


def _encryptor(key: bytes):  # noqa: ANN202 (cryptography's CipherContext)
    _check_key(key)
    return Cipher(algorithms.AES(bytes(key)), modes.CTR(_ZERO_COUNTER)).encryptor()


def _keystream_into(enc, buf: np.ndarray, n_bytes: int) -> None:  # noqa: ANN001
    """Write the next ``n_bytes`` of ``enc``'s keystream into uint8 ``buf`` (has slack)."""
    pos = 0
    while pos < n_bytes:
        c = min(_CHUNK, n_bytes - pos)
        enc.update_into(_ZEROS[:c] if c < _CHUNK else _ZEROS, buf[pos:pos + c + _SLACK])
        pos += c


def prg_bytes(key: bytes, n_bytes: int) -> bytes:
    """First ``n_bytes`` of the AES-256-CTR keystream under ``key`` (zero counter block)."""
    _check_key(key)
    if n_bytes < 0:
        raise ConfigError("n_bytes must be non-negative")
    enc = _encryptor(key)
    out = enc.update(bytes(n_bytes))
    tail = enc.finalize()
    return out + tail if tail else out


def prg_words(key: bytes, n_words: int, word: int) -> np.ndarray:
    """First ``n_words`` little-endian words (``word`` = 4 or 8 bytes) of the keystream as a
    fresh writable ``uint32``/``uint64`` array (one AES call per chunk, no copies)."""
    if n_words < 0:
        raise ConfigError("length must be non-negative")
    enc = _encryptor(key)
    n = n_words * word
    buf = np.empty(n + _SLACK, dtype=np.uint8)
    _keystream_into(enc, buf, n)
    return buf[:n].view("<u4" if word == 4 else "<u8")


def prg_vector(key: bytes, length: int, modulus_bits: int) -> np.ndarray:
    """``length`` uniform elements of ``Z_{2**modulus_bits}`` as a uint64 array."""
    w = word_bytes(modulus_bits)
    raw = prg_words(key, length, w)
    out = raw.astype(np.uint64) if w == 4 else raw
    if modulus_bits < 64:
        out &= np.uint64((1 << modulus_bits) - 1)
    return out


def prg_accumulate(key: bytes, out: np.ndarray, modulus_bits: int, sign: int = 1) -> None:
    """``out += sign * prg_vector(key, len(out), modulus_bits)`` modulo ``2**modulus_bits``.

    ``out`` is a contiguous uint64 array updated in place; the result is NOT reduced (only
    congruent mod ``2**modulus_bits``): reduce once with ``& (2**m - 1)`` after the last
    mask.
    """
    prg_accumulate_many([(key, sign)], out, modulus_bits)


def prg_accumulate_many(masks: Sequence[tuple[bytes, int]], out: np.ndarray,
                        modulus_bits: int) -> None:
    """``out += sum(sign * prg_vector(key, len(out), modulus_bits))`` over ``(key, sign)``
    in ``masks``, modulo ``2**modulus_bits`` (unreduced, as :func:`prg_accumulate`).

    Chunk-outer, mask-inner: one AES-CTR context per key advances through its keystream
    while each chunk of ``out`` stays in cache for every mask, so the additions run at
    cache speed rather than streaming ``out`` through memory once per mask. The result is
    exactly that of calling :func:`prg_accumulate` once per mask.
    """
    w = word_bytes(modulus_bits)
    if out.dtype != np.uint64 or out.ndim != 1 or not out.flags.c_contiguous:
        raise ConfigError("prg_accumulate needs a contiguous 1-D uint64 array")
    ops = []
    for key, sign in masks:
        if sign not in (1, -1):
            raise ConfigError("sign must be +1 or -1")
        ops.append((_encryptor(key).update_into, np.add if sign > 0 else np.subtract))
    scratch = np.empty(_CHUNK + _SLACK, dtype=np.uint8)  # one keystream chunk, reused
    per = _CHUNK // w
    dt = "<u4" if w == 4 else "<u8"
    for i in range(0, out.size, per):
        seg = out[i:i + per]
        nb = seg.size * w
        zeros = _ZEROS[:nb] if nb < _CHUNK else _ZEROS
        dst = scratch[:nb + _SLACK]
        words = scratch[:nb].view(dt)
        for update_into, op in ops:
            update_into(zeros, dst)
            op(seg, words, out=seg)
