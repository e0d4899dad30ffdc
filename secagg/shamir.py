"""Shamir t-of-n secret sharing of 32-byte secrets over GF(p), p = 2**256 + 297.

``p = 2**256 + 297`` is the smallest prime above ``2**256``, so every 32-byte secret, read as a
big-endian integer ``s < 2**256 < p``, is a field element. Sharing draws ``t - 1``
coefficients uniformly from GF(p) with :mod:`secrets` (OS CSPRNG); the share for party index
``x`` (1-based, ``1 <= x < p``) is ``f(x)``. Shares serialise to ``SHARE_BYTES = 33`` bytes
big-endian (a value ``>= p`` is rejected). Any ``t`` shares with distinct indices reconstruct
``s`` by Lagrange interpolation at 0; any ``t - 1`` shares are uniformly distributed and
independent of ``s`` (perfect privacy).

Reconstruction checks that the result fits 32 bytes. This is a sanity check, NOT an integrity
check: the field exceeds ``2**256`` by only 297 elements, so a wrong or tampered share moves
the result to a uniformly-looking field element that still fits 32 bytes with probability
``2**256 / p`` (about ``1 - 2**-248``); almost all tampering goes undetected here. Callers
that need integrity must check the reconstructed secret against a commitment (the masking
aggregator compares a reconstructed mask key with its signed advertised public key).

The Lagrange coefficients at 0 depend only on the set of indices used; they are cached per
index set (:func:`lagrange_at_zero`), so reconstructing many secrets from the same holders
costs ``t`` multiplications each after the first.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Mapping, Sequence

from fedrx.errors import ConfigError, CryptoError

PRIME = (1 << 256) + 297
SHARE_BYTES = 33
SECRET_BYTES = 32


def _poly_eval(coeffs: Sequence[int], x: int) -> int:
    # Horner without reducing every step: for the small indices used here the accumulator
    # grows by only log2(x) bits per coefficient, and one reduction at the end is cheaper.
    acc = 0
    for c in reversed(coeffs):
        acc = acc * x + c
    return acc % PRIME


def split(secret: bytes, t: int, xs: Sequence[int]) -> dict[int, bytes]:
    """Shares of ``secret`` for every index in ``xs`` (t-of-len(xs))."""
    if len(secret) != SECRET_BYTES:
        raise CryptoError("Shamir secret must be 32 bytes")
    if len(set(xs)) != len(xs) or any(not 1 <= x < PRIME for x in xs):
        raise ConfigError("Shamir indices must be distinct integers >= 1")
    if not 1 <= t <= len(xs):
        raise ConfigError(f"Shamir threshold t={t} must be in [1, {len(xs)}]")
    coeffs = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(t - 1)]
    return {x: _poly_eval(coeffs, x).to_bytes(SHARE_BYTES, "big") for x in xs}


@functools.lru_cache(maxsize=128)
def _lagrange_cached(xs: tuple[int, ...]) -> tuple[int, ...]:
    t = len(xs)
    # numerators prod_{j != i} x_j from prefix/suffix products (no division)
    prefix = [1] * (t + 1)
    for i, x in enumerate(xs):
        prefix[i + 1] = prefix[i] * x % PRIME
    suffix = [1] * (t + 1)
    for i in range(t - 1, -1, -1):
        suffix[i] = suffix[i + 1] * xs[i] % PRIME
    nums = [prefix[i] * suffix[i + 1] % PRIME for i in range(t)]
    dens = []
    for i, xi in enumerate(xs):
        d = 1
        for j, xj in enumerate(xs):
            if j != i:
                d = d * (xj - xi) % PRIME
        dens.append(d)
    # Montgomery's trick: invert every denominator with a single modular inversion
    acc = [1] * (t + 1)
    for i, d in enumerate(dens):
        acc[i + 1] = acc[i] * d % PRIME
    inv = pow(acc[t], -1, PRIME)
    out = [0] * t
    for i in range(t - 1, -1, -1):
        out[i] = nums[i] * (inv * acc[i] % PRIME) % PRIME  # inv * acc[i] = 1 / dens[i]
        inv = inv * dens[i] % PRIME
    return tuple(out)


def lagrange_at_zero(xs: Sequence[int]) -> tuple[int, ...]:
    """Coefficients ``l_i = prod_{j != i} x_j / (x_j - x_i) mod p`` for the sorted indices.

    ``f(0) = sum_i l_i * f(x_i)`` for any polynomial of degree < len(xs). Cached per index
    set (indices are public); the result is ordered like ``sorted(xs)``.
    """
    key = tuple(sorted(int(x) for x in xs))
    if not key or len(set(key)) != len(key) or not 1 <= key[0] or key[-1] >= PRIME:
        raise CryptoError("Shamir indices must be distinct integers in [1, p)")
    return _lagrange_cached(key)


def reconstruct(shares: Mapping[int, bytes], t: int) -> bytes:
    """The secret from at least ``t`` shares (uses the ``t`` smallest indices)."""
    if t < 1:
        raise CryptoError(f"Shamir threshold t={t} must be >= 1")
    if len(shares) < t:
        raise CryptoError(f"need {t} shares to reconstruct, have {len(shares)}")
    xs = sorted(shares)[:t]
    ys = []
    for x in xs:
        raw = shares[x]
        if len(raw) != SHARE_BYTES:
            raise CryptoError("malformed Shamir share")
        y = int.from_bytes(raw, "big")
        if y >= PRIME or not 1 <= x < PRIME:
            raise CryptoError("malformed Shamir share")
        ys.append(y)
    secret = sum(y * c for y, c in zip(ys, lagrange_at_zero(xs), strict=True)) % PRIME
    if secret >> (8 * SECRET_BYTES):
        raise CryptoError("Shamir reconstruction is inconsistent (wrong or tampered shares)")
    return secret.to_bytes(SECRET_BYTES, "big")
