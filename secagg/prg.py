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
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedrx.errors import ConfigError, CryptoError

KEY_BYTES = 32
_ZERO_COUNTER = bytes(16)


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


def prg_bytes(key: bytes, n_bytes: int) -> bytes:
    """First ``n_bytes`` of the AES-256-CTR keystream under ``key`` (zero counter block)."""
    _check_key(key)
    if n_bytes < 0:
        raise ConfigError("n_bytes must be non-negative")
    enc = Cipher(algorithms.AES(bytes(key)), modes.CTR(_ZERO_COUNTER)).encryptor()
    return enc.update(bytes(n_bytes)) + enc.finalize()


def prg_vector(key: bytes, length: int, modulus_bits: int) -> np.ndarray:
    """``length`` uniform elements of ``Z_{2**modulus_bits}`` as a uint64 array."""
    w = word_bytes(modulus_bits)
    raw = np.frombuffer(prg_bytes(key, length * w), dtype="<u4" if w == 4 else "<u8")
    out = raw.astype(np.uint64)
    if modulus_bits < 64:
        out &= np.uint64((1 << modulus_bits) - 1)
    return out
