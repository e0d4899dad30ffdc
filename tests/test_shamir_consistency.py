"""Consistency of revealed Shamir shares (shamir.consistent_many): known answers, every
single-share tampering detected and attributed to its secret, grouping by index set, the
exactly-t case (nothing to check), the k - t detection limit, and malformed input."""

from __future__ import annotations

import secrets

import pytest

from fedrx.errors import CryptoError
from fedrx.secagg import shamir

P = (1 << 256) + 297


def _enc(y: int) -> bytes:
    return (y % P).to_bytes(33, "big")


def _poly(coeffs: list[int], x: int) -> int:
    return sum(c * pow(x, i, P) for i, c in enumerate(coeffs)) % P


def _shares(coeffs: list[int], xs) -> dict[int, bytes]:
    return {x: _enc(_poly(coeffs, x)) for x in xs}


def _shift(shares: dict[int, bytes], x: int, delta: int) -> dict[int, bytes]:
    out = dict(shares)
    out[x] = _enc(int.from_bytes(shares[x], "big") + delta)
    return out


def _ref_eval(pts: dict[int, int], x: int) -> int:
    """Textbook Lagrange interpolation through ``pts`` evaluated at ``x`` (no caching)."""
    acc = 0
    for xi, yi in pts.items():
        num = den = 1
        for xj in pts:
            if xj != xi:
                num, den = num * (x - xj) % P, den * (xi - xj) % P
        acc = (acc + yi * num * pow(den, -1, P)) % P
    return acc


def test_known_answer_consistent_and_off_polynomial():
    """f(x) = 5 + 7x + 11x^2 (t = 3): f(1..5) = 23, 63, 125, 209, 315 lie on it; moving f(4)
    to 210 does not, and the same points with only t of them cannot be checked."""
    assert [_poly([5, 7, 11], x) for x in range(1, 6)] == [23, 63, 125, 209, 315]
    good = {x: _enc(y) for x, y in zip(range(1, 6), [23, 63, 125, 209, 315], strict=True)}
    bad = dict(good)
    bad[4] = _enc(210)
    assert shamir.consistent_many([good, bad], 3) == [True, False]
    assert shamir.reconstruct(good, 3) == (5).to_bytes(32, "big")
    # the first t points of ``bad`` are honest: reconstruction would give the right secret,
    # yet the set is still reported (a wrong share is a wrong share wherever it sits)
    assert shamir.reconstruct(bad, 3) == (5).to_bytes(32, "big")
    # exactly t shares: nothing to check, reported True whatever the values
    assert shamir.consistent_many([{1: _enc(23), 2: _enc(63), 4: _enc(1)}], 3) == [True]
    # t = 1: every share equals the secret
    assert shamir.consistent_many([{1: _enc(9), 2: _enc(9)}, {1: _enc(9), 2: _enc(8)}], 1) \
        == [True, False]


def test_split_shares_are_consistent_for_every_k_above_t():
    xs = list(range(1, 11))
    for t in (1, 2, 5, 9, 10):
        sets = [shamir.split(secrets.token_bytes(32), t, xs) for _ in range(6)]
        for k in range(t, 11):
            sub = [{x: s[x] for x in xs[:k]} for s in sets]
            assert shamir.consistent_many(sub, t) == [True] * 6


def test_any_single_changed_share_of_any_secret_is_detected_and_named():
    t, xs = 3, [1, 2, 4, 7, 9]
    sets = [shamir.split(secrets.token_bytes(32), t, xs) for _ in range(4)]
    assert shamir.consistent_many(sets, t) == [True] * 4
    for u in range(len(sets)):
        for x in xs:
            for delta in (1, -1, secrets.randbelow(P - 1) + 1):
                tampered = list(sets)
                tampered[u] = _shift(sets[u], x, delta)
                got = shamir.consistent_many(tampered, t)
                assert got == [i != u for i in range(len(sets))], (u, x)


def test_cancelling_errors_across_secrets_are_caught_by_the_random_weights():
    """+e in one secret and -e in another at the same index cancel in an unweighted sum;
    independent 128-bit weights catch them (miss probability <= 2**-128)."""
    t, xs = 2, [1, 2, 3, 4]
    sets = [shamir.split(secrets.token_bytes(32), t, xs) for _ in range(3)]
    e = secrets.randbelow(P - 1) + 1
    tampered = [_shift(sets[0], 4, e), sets[1], _shift(sets[2], 4, -e)]
    assert shamir.consistent_many(tampered, t) == [False, True, False]


def test_several_offenders_in_one_group_and_a_clean_group_is_checked_once(monkeypatch):
    t, xs = 4, list(range(1, 9))
    sets = [shamir.split(secrets.token_bytes(32), t, xs) for _ in range(10)]
    calls = []
    real = shamir._on_polynomial
    monkeypatch.setattr(shamir, "_on_polynomial", lambda *a: calls.append(1) or real(*a))
    assert shamir.consistent_many(sets, t) == [True] * 10
    assert len(calls) == 1  # one combined check for the whole group, no per-secret pass
    calls.clear()
    bad = list(sets)
    bad[2] = _shift(bad[2], 1, 5)
    bad[7] = _shift(_shift(bad[7], 8, 1), 3, 2)
    assert shamir.consistent_many(bad, t) == [i not in (2, 7) for i in range(10)]
    assert len(calls) == 1 + 10  # the combined check failed: then each secret on its own


def test_different_index_sets_are_grouped_and_reported_in_input_order():
    t = 3
    layouts = [(1, 2, 3, 4, 5), (2, 3, 4, 5, 6), (1, 2, 3, 4, 5), (1, 3, 5, 7, 9, 11),
               (2, 3, 4, 5, 6), (4, 8, 15), (1, 3, 5, 7, 9, 11), (1, 2, 3, 4)]
    sets = [shamir.split(secrets.token_bytes(32), t, list(xs)) for xs in layouts]
    assert shamir.consistent_many(sets, t) == [True] * len(sets)
    for u, xs in enumerate(layouts):
        tampered = list(sets)
        tampered[u] = _shift(sets[u], xs[-1], 1)
        want = [i != u or len(xs) == t for i in range(len(sets))]  # (4, 8, 15): k == t
        assert shamir.consistent_many(tampered, t) == want
    # a tampered secret in every group at once
    tampered = [_shift(s, xs[0], 3) if u in (0, 1, 3, 7) else s
                for u, (s, xs) in enumerate(zip(sets, layouts, strict=True))]
    assert shamir.consistent_many(tampered, t) == \
        [False, False, True, False, True, True, True, False]
    # the same shares given in another key order: the same answer
    shuffled = [dict(reversed(list(s.items()))) for s in tampered]
    assert shamir.consistent_many(shuffled, t) == \
        [False, False, True, False, True, True, True, False]
    assert shamir.consistent_many([], t) == []


def test_exactly_t_shares_cannot_be_checked():
    """With exactly t shares every value set lies on some polynomial of degree < t: reported
    True (nothing to check), and reconstruction returns a wrong secret undetected."""
    t, xs = 4, [2, 3, 5, 8]
    secret = secrets.token_bytes(32)
    sh = shamir.split(secret, t, xs)
    bad = _shift(sh, 5, 1)
    assert shamir.consistent_many([sh, bad], t) == [True, True]
    assert shamir.reconstruct(bad, t) != secret  # (fits 32 bytes except w.p. ~2**-248)


def test_detection_limit_is_k_minus_t_wrong_shares():
    """Up to k - t wrong shares of k are always detected; k - t + 1 coordinated wrong shares
    can move all k points onto another polynomial of degree < t (not detectable)."""
    t, xs = 3, [1, 2, 3, 4, 5]
    f = [secrets.randbelow(1 << 256), secrets.randbelow(P), secrets.randbelow(P)]
    sh = _shares(f, xs)
    for wrong in ([5], [1, 4], [2, 3], [1, 5]):  # up to k - t = 2 wrong shares
        bad = dict(sh)
        for x in wrong:
            bad = _shift(bad, x, secrets.randbelow(P - 1) + 1)
        assert shamir.consistent_many([bad], t) == [False]
    # g = f + c (x - 1)(x - 2) agrees with f on x = 1, 2 and has degree < t: three colluding
    # holders (x = 3, 4, 5) reveal g instead of f, consistently
    c = secrets.randbelow(P - 1) + 1
    g = {x: _enc(_poly(f, x) + c * (x - 1) * (x - 2)) for x in xs}
    assert shamir.consistent_many([g], t) == [True]
    assert shamir.reconstruct(g, t) != shamir.reconstruct(sh, t)


def test_extra_point_rows_match_textbook_interpolation_and_are_cached():
    xs, t = (3, 5, 6, 10, 11, 17, 40), 4
    rows = shamir._extra_point_rows(xs, t)
    assert len(rows) == len(xs) - t and all(len(r) == t for r in rows)
    pts = {x: secrets.randbelow(P) for x in xs[:t]}
    for row, x in zip(rows, xs[t:], strict=True):
        got = sum(c * pts[b] for c, b in zip(row, xs[:t], strict=True)) % P
        assert got == _ref_eval(pts, x)
    assert shamir._extra_point_rows(xs, t) is rows


def test_malformed_shares_and_arguments_raise():
    t, xs = 2, [1, 2, 3]
    good = shamir.split(secrets.token_bytes(32), t, xs)
    for raw in (P.to_bytes(33, "big"), ((1 << 264) - 1).to_bytes(33, "big"), good[3][1:],
                good[3] + b"\x00", b"", "not bytes"):
        bad = dict(good)
        bad[3] = raw
        with pytest.raises(CryptoError, match="malformed"):
            shamir.consistent_many([good, bad], t)
    for x in (0, -1, P, "3", 3.0, 2.5, None):
        bad = {1: good[1], 2: good[2], x: good[3]}
        with pytest.raises(CryptoError, match="malformed"):
            shamir.consistent_many([bad], t)
    with pytest.raises(CryptoError, match="need 2 shares"):
        shamir.consistent_many([good, {1: good[1]}], t)
    with pytest.raises(CryptoError, match="need 2 shares"):
        shamir.consistent_many([{}], t)
    with pytest.raises(CryptoError, match="t=0"):
        shamir.consistent_many([good], 0)


def test_errors_name_no_share_material():
    t, xs = 2, [1, 2, 3]
    good = shamir.split(secrets.token_bytes(32), t, xs)
    bad = dict(good)
    bad[3] = good[3][:-1]
    with pytest.raises(CryptoError) as exc:
        shamir.consistent_many([bad], t)
    for raw in good.values():
        assert raw.hex() not in str(exc.value) and raw[:-1].hex() not in str(exc.value)
