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
aggregator compares a reconstructed mask key with its signed advertised public key), or,
when more than ``t`` shares are available, check that they are consistent
(:func:`consistent_many`: all shares on one polynomial of degree < t; a batched randomised
check, false "consistent" with probability at most ``2**-128`` per index set). With exactly
``t`` shares nothing can be checked.

The Lagrange coefficients at 0 depend only on the set of indices used; they are cached per
index set (:func:`lagrange_at_zero`), so reconstructing many secrets from the same holders
costs ``t`` multiplications each after the first.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import secrets
from collections.abc import Mapping, Sequence

from fedrx.errors import ConfigError, CryptoError, ShareError

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


def _batch_inverse(values: Sequence[int]) -> list[int]:
    """The inverses mod p of non-zero ``values`` with ONE modular inversion (Montgomery's
    trick: prefix products, one inversion, then walk back)."""
    acc = [1] * (len(values) + 1)
    for i, v in enumerate(values):
        acc[i + 1] = acc[i] * v % PRIME
    inv = pow(acc[-1], -1, PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inv * acc[i] % PRIME  # = 1 / values[i]
        inv = inv * values[i] % PRIME
    return out


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
    return tuple(n * w % PRIME for n, w in zip(nums, _batch_inverse(dens), strict=True))


def lagrange_at_zero(xs: Sequence[int]) -> tuple[int, ...]:
    """Coefficients ``l_i = prod_{j != i} x_j / (x_j - x_i) mod p`` for the sorted indices.

    ``f(0) = sum_i l_i * f(x_i)`` for any polynomial of degree < len(xs). Cached per index
    set (indices are public); the result is ordered like ``sorted(xs)``.
    """
    key = tuple(sorted(int(x) for x in xs))
    if not key or len(set(key)) != len(key) or not 1 <= key[0] or key[-1] >= PRIME:
        raise ShareError("Shamir indices must be distinct integers in [1, p)")
    return _lagrange_cached(key)


def reconstruct(shares: Mapping[int, bytes], t: int) -> bytes:
    """The secret from at least ``t`` shares (uses the ``t`` smallest indices; every share
    is validated as :func:`_share_values` does)."""
    if t < 1:
        raise CryptoError(f"Shamir threshold t={t} must be >= 1")
    if len(shares) < t:
        raise ShareError(f"need {t} shares to reconstruct, have {len(shares)}")
    xs, ys = _share_values(shares)
    secret = sum(y * c for y, c in zip(ys[:t], lagrange_at_zero(xs[:t]), strict=True)) % PRIME
    if secret >> (8 * SECRET_BYTES):
        raise ShareError("Shamir reconstruction is inconsistent (wrong or tampered shares)")
    return secret.to_bytes(SECRET_BYTES, "big")


def _share_values(shares: Mapping[int, bytes]) -> tuple[tuple[int, ...], list[int]]:
    """(sorted indices, their share values): indices distinct ints in ``[1, p)``, shares 33
    bytes with value below ``p``; anything else raises ShareError("malformed Shamir share").
    C-level passes (map/set) rather than a Python loop per share: this runs on every share an
    aggregator receives."""
    try:
        xs = tuple(sorted(shares))
    except TypeError:
        raise ShareError("malformed Shamir share") from None
    if xs and (set(map(type, xs)) != {int} or xs[0] < 1 or xs[-1] >= PRIME):
        raise ShareError("malformed Shamir share")
    raws = [shares[x] for x in xs]
    if raws and set(map(len, raws)) != {SHARE_BYTES}:
        raise ShareError("malformed Shamir share")
    try:
        ys = list(map(int.from_bytes, raws, itertools.repeat("big")))
    except TypeError:
        raise ShareError("malformed Shamir share") from None
    if ys and max(ys) >= PRIME:
        raise ShareError("malformed Shamir share")
    return xs, ys


@functools.lru_cache(maxsize=128)
def _extra_point_rows(xs: tuple[int, ...], t: int) -> tuple[tuple[int, ...], ...]:
    """Row ``j``: the Lagrange basis of the base ``xs[:t]`` evaluated at ``xs[t + j]``.

    ``f(x) = sum_i L_i(x) * f(x_i)`` for any ``f`` of degree < t; ``L_i(x) = w_i *
    prod_{j != i} (x - x_j)`` with the barycentric weights ``w_i = 1 / prod_{j != i} (x_i -
    x_j)``. The weights cost O(t^2) once per index set (one inversion, Montgomery's trick);
    each extra point then costs O(t) (prefix/suffix products, no inversion).
    """
    base = xs[:t]
    # prod_{j != i} (x_i - x_j): the indices are small, so the exact product is cheap to
    # form and reduce once (a zero factor only for j == i, which is skipped)
    dens = [math.prod(xi - xj for xj in base if xj != xi) % PRIME for xi in base]
    w = _batch_inverse(dens)
    rows = []
    mul = operator.mul
    for x in xs[t:]:
        # prod_{j != i} (x - x_j) from exact prefix/suffix products of the small differences
        diff = [x - b for b in base]
        prefix = list(itertools.accumulate(diff, mul, initial=1))
        suffix = list(itertools.accumulate(reversed(diff), mul, initial=1))[::-1]
        rows.append(tuple(a * b % PRIME * wi % PRIME
                          for a, b, wi in zip(prefix, suffix[1:], w, strict=False)))
    return tuple(rows)


def _on_polynomial(rows: tuple[tuple[int, ...], ...], ys: Sequence[int], t: int) -> bool:
    """Whether the points ``ys[t:]`` lie on the polynomial through the first ``t`` points."""
    base = ys[:t]
    mul = operator.mul
    return all(sum(map(mul, row, base)) % PRIME == y
               for row, y in zip(rows, ys[t:], strict=True))


def consistent_many(share_sets: Sequence[Mapping[int, bytes]], t: int) -> list[bool]:
    """For each set of shares of one secret: do all its shares lie on ONE polynomial of
    degree < t? ``False`` means some share is wrong (whoever revealed it).

    Every share is validated first (index in ``[1, p)``, 33 bytes, value below ``p``): a
    malformed share, ``t < 1`` or a set with fewer than ``t`` shares raises
    :class:`~fedrx.errors.ShareError` (``t < 1``: CryptoError), as :func:`reconstruct` does.

    What is checked: a set with ``k > t`` shares is consistent iff its ``k - t`` extra points
    lie on the polynomial through its ``t`` smallest indices (the ones :func:`reconstruct`
    uses). A wrong share is therefore detected whenever at most ``k - t`` of the ``k`` shares
    are wrong (the true polynomial is then the only candidate), in particular any single
    wrong share when ``k > t``. A set with exactly ``t`` shares cannot be checked (every
    ``t`` points lie on some polynomial of degree < t) and is reported ``True``: there is
    nothing to check, and callers that need to know can test ``len(shares) > t``.

    Cost: sets are grouped by their sorted index set. A group of several secrets is checked
    at once: one random 128-bit weight ``rho_u`` per secret (:mod:`secrets`, drawn after the
    shares are fixed), the combined shares ``Y_x = sum_u rho_u * y_{u,x} mod p`` (a sharing
    of ``sum_u rho_u * f_u``, degree < t when every ``f_u`` is) are checked at the extra
    points with Lagrange rows cached per (index set, t). If some secret of the group is
    inconsistent, the combined check still passes with probability at most ``2**-128`` per
    group (for a nonzero error at one extra point, at most one of the ``2**128`` values of
    that secret's weight cancels it). Only when the combined check fails is each secret of
    the group checked on its own (exactly, no randomness) to name the offenders; a group of
    one secret is checked exactly. Per group: ``|group| * k`` multiplications for the
    combination plus ``(k - t) * t`` for the check.
    """
    if t < 1:
        raise CryptoError(f"Shamir threshold t={t} must be >= 1")
    groups: dict[tuple[int, ...], list[int]] = {}
    values: list[list[int]] = []
    for n, shares in enumerate(share_sets):
        xs, ys = _share_values(shares)
        if len(ys) < t:
            raise ShareError(f"need {t} shares to check consistency, have {len(ys)}")
        values.append(ys)  # ordered like xs
        groups.setdefault(xs, []).append(n)
    out = [True] * len(values)
    mul = operator.mul
    for xs, members in groups.items():
        if len(xs) == t:
            continue  # nothing to check
        rows = _extra_point_rows(xs, t)
        cols = [values[n] for n in members]
        if len(cols) > 1:
            rhos = [secrets.randbits(128) for _ in cols]
            combined = [sum(map(mul, rhos, at_x)) % PRIME
                        for at_x in zip(*cols, strict=True)]
            if _on_polynomial(rows, combined, t):
                continue
        for n, col in zip(members, cols, strict=True):
            out[n] = _on_polynomial(rows, col, t)
    return out
