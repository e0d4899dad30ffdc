"""Known-answer and property tests of Shamir sharing over GF(2**256 + 297)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from fedrx.errors import (
    ConfigError,
    CryptoError,
    ShareError,
)
from fedrx.secagg import shamir

KAT = json.loads((Path(__file__).parent / "vectors" / "secagg_kat.json").read_text())


P256 = (1 << 256) + 297  # written out here, independently of shamir.PRIME


def _ref_reconstruct(pts: dict[int, int], p: int) -> int:
    """Textbook Lagrange interpolation at 0 (one inversion per term, no caching)."""
    secret = 0
    for xi, yi in pts.items():
        num = den = 1
        for xj in pts:
            if xj != xi:
                num, den = num * xj % p, den * (xj - xi) % p
        secret = (secret + yi * num * pow(den, -1, p)) % p
    return secret


def test_shamir_field_and_encoding_constants():
    assert shamir.PRIME == P256 and shamir.SHARE_BYTES == 33 and shamir.SECRET_BYTES == 32
    # P256 is prime (Miller-Rabin, fixed bases) and no integer in (2**256, P256) is
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        d, r = P256 - 1, 0
        while d % 2 == 0:
            d, r = d // 2, r + 1
        x = pow(a, d, P256)
        assert x in (1, P256 - 1) or any(pow(x, 2**k, P256) == P256 - 1 for k in range(1, r))
    for q in range((1 << 256) + 1, P256, 2):
        assert any(pow(a, q - 1, q) != 1 for a in (2, 3, 5))  # composite (Fermat witness)


def test_shamir_kat_reconstruct_from_every_subset():
    v = KAT["shamir"]
    assert v["prime"] == "2^256+297" and v["share_bytes"] == 33
    shares = {int(x): bytes.fromhex(s) for x, s in v["shares"].items()}
    coeffs = [int(c) for c in v["coefficients"]]
    assert coeffs[0] == int(v["secret"], 16) and all(0 <= c < P256 for c in coeffs)
    for x, s in shares.items():  # independent polynomial evaluation
        assert len(s) == 33
        assert int.from_bytes(s, "big") == sum(c * x**i for i, c in enumerate(coeffs)) % P256
    assert int.from_bytes(shares[1], "big") == P256 - 1  # a share value >= 2**256
    import itertools
    for sub in itertools.combinations(sorted(shares), v["t"]):
        assert shamir.reconstruct({x: shares[x] for x in sub}, v["t"]).hex() == v["secret"]
    # more than t shares: the t smallest indices are used
    assert shamir.reconstruct(shares, v["t"]).hex() == v["secret"]
    with pytest.raises(CryptoError):
        shamir.reconstruct({1: shares[1], 2: shares[2]}, 3)


def test_shamir_kat_split_with_pinned_coefficients(monkeypatch):
    """split() with its CSPRNG replaced by the pinned coefficients gives the pinned shares."""
    v = KAT["shamir"]
    coeffs = [int(c) for c in v["coefficients"]]
    draws = iter(coeffs[1:])

    def fake_randbelow(n):
        assert n == P256
        return next(draws)

    monkeypatch.setattr(shamir.secrets, "randbelow", fake_randbelow)
    got = shamir.split(bytes.fromhex(v["secret"]), v["t"], [1, 2, 3, 4, 5])
    assert {str(x): s.hex() for x, s in got.items()} == v["shares"]


def test_lagrange_coefficients_kat_and_cache_matches_reference():
    v = KAT["shamir"]
    # l_i = prod_{j != i} x_j / (x_j - x_i) for xs = (1, 3, 5): 15/8, -5/4, 3/8
    want = [15 * pow(8, -1, P256) % P256, -5 * pow(4, -1, P256) % P256,
            3 * pow(8, -1, P256) % P256]
    assert [int(c) for c in v["lagrange_at_zero_1_3_5"]] == want
    assert list(shamir.lagrange_at_zero([5, 1, 3])) == want  # order of input irrelevant
    # cached batch-inverted coefficients equal the textbook ones on random index sets
    import random
    rng = random.Random(5)
    for t in (1, 2, 3, 17, 51):
        xs = sorted(rng.sample(range(1, 300), t))
        ref = []
        for xi in xs:
            num = den = 1
            for xj in xs:
                if xj != xi:
                    num, den = num * xj % P256, den * (xj - xi) % P256
            ref.append(num * pow(den, -1, P256) % P256)
        assert list(shamir.lagrange_at_zero(xs)) == ref
        assert shamir.lagrange_at_zero(xs) is shamir.lagrange_at_zero(list(reversed(xs)))
    for bad in ([], [0, 1], [2, 2], [1, P256]):
        with pytest.raises(CryptoError):
            shamir.lagrange_at_zero(bad)


def test_shamir_reconstruct_from_different_subsets_matches_reference():
    secret = secrets.token_bytes(32)
    xs = list(range(1, 21))
    t = 11
    sh = shamir.split(secret, t, xs)
    assert all(len(s) == shamir.SHARE_BYTES for s in sh.values())
    import random
    rng = random.Random(9)
    for _ in range(10):
        sub = rng.sample(xs, t + rng.randrange(0, 3))
        got = shamir.reconstruct({x: sh[x] for x in sub}, t)
        ref = _ref_reconstruct({x: int.from_bytes(sh[x], "big") for x in sorted(sub)[:t]}, P256)
        assert got == secret == ref.to_bytes(32, "big")


def test_shamir_tampering_and_malformed_shares():
    """The fits-in-32-bytes check is a sanity check, not integrity: it catches a wrong share
    only when the result lands in [2**256, p), i.e. for 297 of the p possible results."""
    secret = secrets.token_bytes(32)
    sh = shamir.split(secret, 3, [1, 2, 3, 4])
    pts = {x: sh[x] for x in (1, 2, 3)}
    lam = shamir.lagrange_at_zero([1, 2, 3])
    s = int.from_bytes(secret, "big")
    # a tampered share whose effect pushes the result to 2**256 + 5: detected
    delta = ((1 << 256) + 5 - s) * pow(lam[1], -1, P256) % P256
    bad = dict(pts)
    bad[2] = ((int.from_bytes(pts[2], "big") + delta) % P256).to_bytes(33, "big")
    assert _ref_reconstruct({x: int.from_bytes(y, "big") for x, y in bad.items()}, P256) == \
        (1 << 256) + 5
    with pytest.raises(CryptoError, match="inconsistent"):
        shamir.reconstruct(bad, 3)
    # an arbitrary tampering (flip one bit) is almost surely NOT detected: a wrong secret
    flipped = dict(pts)
    flipped[3] = bytes([pts[3][0]]) + bytes([pts[3][1] ^ 0x01]) + pts[3][2:]
    wrong = _ref_reconstruct({x: int.from_bytes(y, "big") for x, y in flipped.items()}, P256)
    if wrong < (1 << 256):  # probability 1 - 297/p
        assert shamir.reconstruct(flipped, 3) == wrong.to_bytes(32, "big") != secret
    # malformed encodings are always rejected
    for raw in (P256.to_bytes(33, "big"), ((1 << 264) - 1).to_bytes(33, "big"), pts[3][1:],
                pts[3] + b"\x00"):
        with pytest.raises(CryptoError, match="malformed"):
            shamir.reconstruct({1: pts[1], 2: pts[2], 3: raw}, 3)
    with pytest.raises(CryptoError, match="malformed"):
        shamir.reconstruct({0: pts[1], 2: pts[2], 3: pts[3]}, 3)


def test_shamir_split_reconstruct_and_t_minus_one_privacy():
    """P5: any t shares reconstruct; t-1 shares are consistent with every secret."""
    secret = secrets.token_bytes(32)
    xs = list(range(1, 8))
    sh = shamir.split(secret, 4, xs)
    assert shamir.reconstruct({x: sh[x] for x in (2, 5, 6, 7)}, 4) == secret
    # With t-1 = 3 shares, for ANY candidate secret there is a degree-3 polynomial through
    # (0, candidate) and the 3 shares: interpolating with a 4th point at x=0 never fails.
    other = secrets.token_bytes(32)
    pts = {x: sh[x] for x in (1, 3, 4)}
    p = shamir.PRIME
    # Lagrange-evaluate the degree-3 polynomial through (0, other) + pts at x = 2
    allp = [(0, int.from_bytes(other, "big"))] + [(x, int.from_bytes(y, "big"))
                                                  for x, y in pts.items()]
    val = 0
    for i, (xi, yi) in enumerate(allp):
        num = den = 1
        for j, (xj, _) in enumerate(allp):
            if i != j:
                num, den = num * (2 - xj) % p, den * (xi - xj) % p
        val = (val + yi * num * pow(den, -1, p)) % p
    fake = dict(pts)
    fake[2] = val.to_bytes(shamir.SHARE_BYTES, "big")
    assert shamir.reconstruct(fake, 4) == other
    with pytest.raises(ConfigError):
        shamir.split(secret, 8, xs)
    with pytest.raises(CryptoError):
        shamir.split(b"short", 2, xs)


def test_share_failure_is_a_share_error():
    """A wrong or malformed Shamir share raises ShareError, a CryptoError."""
    shares = shamir.split(secrets.token_bytes(32), 2, [1, 2, 3])
    with pytest.raises(ShareError, match="malformed Shamir share"):
        shamir.reconstruct({1: shares[1][:-1], 2: shares[2]}, 2)
    with pytest.raises(ShareError, match="need 2 shares"):
        shamir.reconstruct({1: shares[1]}, 2)
    with pytest.raises(ShareError):
        shamir.consistent_many([{1: shares[1], 2: b"\xff" * 33}], 2)
    assert issubclass(ShareError, CryptoError)
