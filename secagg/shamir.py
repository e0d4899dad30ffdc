"""Shamir t-of-n secret sharing of 32-byte secrets over GF(p), p = 2**521 - 1.

A secret is a 32-byte string read as a big-endian integer ``s < 2**256 < p``. Sharing draws
``t - 1`` coefficients uniformly from GF(p) with :mod:`secrets` (OS CSPRNG); the share for
party index ``x`` (1-based, ``1 <= x < p``) is ``f(x)``. Shares serialise to
``SHARE_BYTES = 66`` bytes big-endian. Any ``t`` shares with distinct indices reconstruct
``s`` by Lagrange interpolation at 0; any ``t - 1`` shares are uniformly distributed and
independent of ``s`` (perfect privacy). Reconstruction checks the result fits 32 bytes.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

from fedrx.errors import ConfigError, CryptoError

PRIME = (1 << 521) - 1
SHARE_BYTES = 66
SECRET_BYTES = 32


def _poly_eval(coeffs: Sequence[int], x: int) -> int:
    acc = 0
    for c in reversed(coeffs):
        acc = (acc * x + c) % PRIME
    return acc


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


def reconstruct(shares: Mapping[int, bytes], t: int) -> bytes:
    """The secret from at least ``t`` shares (uses the ``t`` smallest indices)."""
    if len(shares) < t:
        raise CryptoError(f"need {t} shares to reconstruct, have {len(shares)}")
    pts = []
    for x in sorted(shares)[:t]:
        raw = shares[x]
        if len(raw) != SHARE_BYTES:
            raise CryptoError("malformed Shamir share")
        y = int.from_bytes(raw, "big")
        if y >= PRIME or not 1 <= x < PRIME:
            raise CryptoError("malformed Shamir share")
        pts.append((x, y))
    secret = 0
    for i, (xi, yi) in enumerate(pts):
        num, den = 1, 1
        for j, (xj, _) in enumerate(pts):
            if i != j:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME
    if secret >> (8 * SECRET_BYTES):
        raise CryptoError("Shamir reconstruction is inconsistent (wrong or tampered shares)")
    return secret.to_bytes(SECRET_BYTES, "big")
