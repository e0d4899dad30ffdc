"""The one CSPRNG stream and its word-to-float conversions (``fedrx.csprng``).

:class:`KeyStream` is a ChaCha20 keystream (``cryptography``/OpenSSL), 16-byte zero
counter||nonce, read as little-endian 64-bit words. ``KeyStream()`` draws its 32-byte key
from ``os.urandom`` (the only choice for DP noise in deployments); ``KeyStream(key)`` uses
the given key (CKKS flooding keys, research seeds): the same key gives the same words.
The key lives only inside the cipher object: never in ``repr``, logs or errors.

Conversions, for a 64-bit word ``w`` and its top 53 bits ``t = w >> 11``:

* :func:`uniform_open`: ``(t + 0.5) * 2**-53`` in the open interval (0, 1);
* :func:`uniform_co`: ``t * 2**-53`` in [0, 1);
* :func:`uniform_oc`: ``(t + 1) * 2**-53`` in (0, 1];
* :func:`bernoulli`: ``uniform_co(w) < p``, decided exactly in integers.

Gaussians come from the Box-Muller transform, in two precisions:

* :meth:`KeyStream.normal` / :func:`normal_from_key` (float64): ``n`` normals from
  ``2 * ceil(n/2)`` words, the first half giving ``u1`` in (0, 1], the second ``u2`` in
  [0, 1); output ``r cos(2 pi u2)`` then ``r sin(2 pi u2)``, ``r = sqrt(-2 ln u1)``;
  truncated to ``n``. This is the CKKS flooding noise (pinned by
  ``tests/vectors/ckks_flood.json``).
* :meth:`KeyStream.normal_f32` (float32, DP-SGD): radius ``std * sqrt(-2 ln u)`` from
  ``h = ceil(n/2)`` open 53-bit uniforms in float64 (tails reach 8.57 sigma), angle from the
  next ``h`` 32-bit half-words' top 24 bits in float32 (vectorised sin/cos, angle grid 2**-24
  of a turn); product in float32; cos half then sin half, truncated to ``n``.

An OS-keyed stream takes a fresh OS key before one key's counter space could be exhausted
(2**50 words; never in practice); a keyed stream refuses to go past it.
"""

from __future__ import annotations

import math
import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fedrx.errors import ConfigError, CryptoError

KEY_BYTES = 32
UNIFORM_BITS = 53
_SHIFT = np.uint64(64 - UNIFORM_BITS)
_TWO_M53 = 2.0**-UNIFORM_BITS
_MAX_WORDS_PER_KEY = 2**50  # far below the 2**64 blocks of a 64-bit ChaCha20 counter


class KeyStream:
    """ChaCha20 keystream as 64-bit words; OS-keyed unless a 32-byte ``key`` is given."""

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) != KEY_BYTES:
            raise ConfigError(f"a keystream key must be {KEY_BYTES} bytes")
        self._os_keyed = key is None
        self._zeros = b""
        self._start(key if key is not None else os.urandom(KEY_BYTES))

    def __repr__(self) -> str:
        return "KeyStream(chacha20, <key hidden>)"

    def _start(self, key: bytes) -> None:
        nonce = bytes(16)  # 64-bit counter || 64-bit nonce; one stream per key
        self._enc = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
        self._words = 0

    def words64(self, n: int) -> np.ndarray:
        """The next ``n`` keystream words (little-endian uint64)."""
        if self._words + n > _MAX_WORDS_PER_KEY:
            if not self._os_keyed:
                raise CryptoError("keystream exhausted for this key (2**50 words)")
            self._start(os.urandom(KEY_BYTES))
        self._words += n
        if len(self._zeros) < 8 * n:
            self._zeros = bytes(8 * n)
        out = bytearray(8 * n)
        # keystream XOR zeros = keystream, written in place (no intermediate copies)
        self._enc.update_into(memoryview(self._zeros)[:8 * n], out)
        return np.frombuffer(out, dtype="<u8")

    def words32(self, n: int) -> np.ndarray:
        """The next ``n`` 32-bit half-words (``ceil(n/2)`` words, little-endian halves)."""
        return self.words64((n + 1) // 2).view("<u4")[:n]

    def uniform(self, n: int) -> np.ndarray:
        """``n`` float64 uniforms in the open interval (0, 1) (:func:`uniform_open`)."""
        return uniform_open(self.words64(n))

    def normal(self, n: int) -> np.ndarray:
        """``n`` float64 standard normals (Box-Muller, float64; see module doc)."""
        half = -(-n // 2)
        u1 = uniform_oc(self.words64(half))
        u2 = uniform_co(self.words64(half))
        r = np.sqrt(-2.0 * np.log(u1))
        return np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])[:n]

    def normal_f32(self, n: int, std: float) -> np.ndarray:
        """``n`` float32 values of N(0, std**2) (Box-Muller, float32 angle; see module doc)."""
        half = (n + 1) // 2
        r = np.log(self.uniform(half))
        r *= -2.0
        np.sqrt(r, out=r)
        r *= std
        r32 = r.astype(np.float32)
        th = (self.words32(half) >> np.uint32(8)).astype(np.float32)
        th += np.float32(0.5)
        th *= np.float32(2.0 * math.pi * 2.0**-24)
        z = np.empty(2 * half, dtype=np.float32)
        np.cos(th, out=z[:half])
        z[:half] *= r32
        np.sin(th, out=z[half:])
        z[half:] *= r32
        return z[:n]


def uniform_open(words: np.ndarray) -> np.ndarray:
    """``((w >> 11) + 0.5) * 2**-53``: float64 in the open interval (0, 1)."""
    u = (words >> _SHIFT).astype(np.float64)
    u += 0.5
    u *= _TWO_M53
    return u


def uniform_co(words: np.ndarray) -> np.ndarray:
    """``(w >> 11) * 2**-53``: float64 in [0, 1)."""
    return (words >> _SHIFT).astype(np.float64) * _TWO_M53


def uniform_oc(words: np.ndarray) -> np.ndarray:
    """``((w >> 11) + 1) * 2**-53``: float64 in (0, 1]."""
    return ((words >> _SHIFT).astype(np.float64) + 1.0) * _TWO_M53


def bernoulli(p: np.ndarray, words: np.ndarray) -> np.ndarray:
    """Coins ``uniform_co(words) < p`` for ``p`` in [0, 1), as a bool array.

    Decided as the integer ``w >> 11`` against ``p * 2**53``: both scalings by a power of
    two are exact, so the decision is bit-for-bit the float comparison. ``p`` and ``words``
    are overwritten (no temporaries).
    """
    p *= 2.0**UNIFORM_BITS
    words >>= _SHIFT
    return np.less(words, p)


def normal_from_key(key: bytes, n: int) -> np.ndarray:
    """``n`` float64 standard normals from the ChaCha20 keystream of ``key`` (32 bytes).

    Deterministic in ``key``: :meth:`KeyStream.normal` on a fresh keyed stream.
    """
    return KeyStream(key).normal(n)
