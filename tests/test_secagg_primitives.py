"""Known-answer and property tests for the secagg building blocks (PRG, KDF, AEAD, Shamir,
quantisation, bit-packing, neighbour graphs)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrx.csprng import bernoulli
from fedrx.errors import (
    CiphertextError,
    ConfigError,
    CryptoError,
    ProtocolError,
    ShareError,
    SignatureError,
)
from fedrx.secagg import bitpack, graph, kex, prg, quantize, shamir
from fedrx.secagg.identity import Federation, Identity, PublicIdentity

KAT = json.loads((Path(__file__).parent / "vectors" / "secagg_kat.json").read_text())


# ------------------------------------------------------------------------------ PRG


def test_prg_kat_matches_direct_aes_ctr():
    v = KAT["prg"]
    key = bytes.fromhex(v["key"])
    direct = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(64))
    assert prg.prg_bytes(key, 64).hex() == v["bytes64"] == direct.hex()
    words8 = np.frombuffer(direct, dtype="<u8")
    assert [int(x) for x in prg.prg_vector(key, 8, 64)[:4]] == [int(x) for x in v["vector_m64"]]
    assert [int(x) for x in prg.prg_vector(key, 8, 37)] == \
        [int(w) & ((1 << 37) - 1) for w in words8] == [int(x) for x in v["vector_m37"]]
    words4 = np.frombuffer(direct[:32], dtype="<u4")
    assert [int(x) for x in prg.prg_vector(key, 8, 20)] == \
        [int(w) & ((1 << 20) - 1) for w in words4] == [int(x) for x in v["vector_m20"]]


def test_prg_range_and_key_checks():
    key = secrets.token_bytes(32)
    for m in (1, 7, 32, 33, 63, 64):
        v = prg.prg_vector(key, 1000, m)
        assert v.dtype == np.uint64 and v.shape == (1000,)
        if m < 64:
            assert int(v.max()) < (1 << m)
    with pytest.raises(CryptoError):
        prg.prg_bytes(b"short", 8)
    with pytest.raises(ConfigError):
        prg.prg_vector(key, 4, 65)


# ------------------------------------------------------------------------------ KDF


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _lp(*parts: bytes) -> bytes:
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def test_x25519_rfc7748_vector():
    v = KAT["x25519_rfc7748"]
    a = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["alice_private"]))
    b = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["bob_private"]))
    assert kex.public_bytes(a).hex() == v["alice_public"]
    assert kex.public_bytes(b).hex() == v["bob_public"]
    assert kex.agree(a, bytes.fromhex(v["bob_public"])).hex() == v["shared"]
    assert kex.agree(b, bytes.fromhex(v["alice_public"])).hex() == v["shared"]


def test_hkdf_derivations_pinned_and_recomputed():
    v = KAT["kdf"]
    a = kex.private_from_bytes(bytes.fromhex(v["sk_a"]))
    shared = kex.agree(a, bytes.fromhex(v["pk_b"]))
    assert shared.hex() == v["shared"]
    sid, seed, r = bytes.fromhex(v["sid"]), bytes.fromhex(v["seed"]), v["round"]
    rb = r.to_bytes(8, "big")
    mk = kex.mask_key(shared, sid, r, "h1", "h0")
    assert mk == kex.mask_key(shared, sid, r, "h0", "h1")  # order-independent
    assert mk.hex() == v["mask_key_h0_h1"] == _hkdf(
        shared, sid, _lp(b"fedrx/secagg/v1/pairwise-mask", rb, b"h0", b"h1")).hex()
    assert kex.self_mask_key(seed, sid, r, "h0").hex() == v["self_mask_key_h0"] == _hkdf(
        seed, sid, _lp(b"fedrx/secagg/v1/self-mask", rb, b"h0")).hex()
    assert kex.share_key(shared, sid, r, "h0", "h1").hex() == v["share_key_h0_to_h1"]
    assert kex.share_key(shared, sid, r, "h1", "h0").hex() == v["share_key_h1_to_h0"]
    assert v["share_key_h0_to_h1"] != v["share_key_h1_to_h0"]  # directional


def test_mask_keys_bound_to_session_round_and_pair():
    """P3: changing the session id, round or pair yields an unrelated key and mask."""
    shared, sid = secrets.token_bytes(32), secrets.token_bytes(32)
    base = kex.mask_key(shared, sid, 1, "a", "b")
    others = [kex.mask_key(shared, secrets.token_bytes(32), 1, "a", "b"),
              kex.mask_key(shared, sid, 2, "a", "b"), kex.mask_key(shared, sid, 1, "a", "c")]
    assert len({base, *others}) == 4
    v0 = prg.prg_vector(base, 256, 32)
    for k in others:
        assert np.mean(prg.prg_vector(k, 256, 32) == v0) < 0.02


# ----------------------------------------------------------------------------- AEAD


def test_aead_kat_and_direct_aesgcm():
    v = KAT["aead"]
    key, nonce = bytes.fromhex(v["key"]), bytes.fromhex(v["nonce"])
    pt, ad = bytes.fromhex(v["plaintext"]), bytes.fromhex(v["ad"])
    _, ct = kex.seal(key, pt, ad, nonce)
    assert ct.hex() == v["ciphertext"] == AESGCM(key).encrypt(nonce, pt, ad).hex()
    kd = KAT["kdf"]
    assert ad == kex.share_ad(bytes.fromhex(kd["sid"]), kd["round"], "h0", "h1")
    assert kex.open_sealed(key, nonce, ct, ad) == pt


def test_aead_rejects_tampering_wrong_ad_and_wrong_receiver():
    """P6: altered ciphertext, altered AD (other round/sender/receiver) are rejected."""
    v = KAT["aead"]
    key, nonce = bytes.fromhex(v["key"]), bytes.fromhex(v["nonce"])
    ct, ad = bytes.fromhex(v["ciphertext"]), bytes.fromhex(v["ad"])
    bad = bytearray(ct)
    bad[3] ^= 1
    sid = bytes.fromhex(KAT["kdf"]["sid"])
    for c, a in [(bytes(bad), ad), (ct, kex.share_ad(sid, 4, "h0", "h1")),
                 (ct, kex.share_ad(sid, 3, "h0", "h2")), (ct, kex.share_ad(sid, 3, "h1", "h0"))]:
        with pytest.raises(CryptoError, match="authentication"):
            kex.open_sealed(key, nonce, c, a)


def test_encode_fields_is_injective_on_boundaries():
    assert kex.encode_fields("ab", "c") != kex.encode_fields("a", "bc")
    assert kex.encode_fields(1) != kex.encode_fields(b"\x01")


# --------------------------------------------------------------------------- Shamir


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


# ---------------------------------------------------------------------- quantisation


def test_quantize_kat_exact_grid_values():
    v = KAT["quantize"]
    cfg = quantize.QuantConfig(v["clip_norm"], v["frac_bits"], v["max_count"])
    m = quantize.modulus_bits(cfg, v["n_hospitals"], v["model_length"])
    assert m == v["modulus_bits"]
    enc, stats = quantize.encode(np.array(v["exact_input"]), cfg, m)
    assert [int(x) for x in enc] == [int(x) for x in v["exact_encoded"]]
    assert not stats.norm_clipped and stats.clipped_coordinates == 0
    dec, clipped = quantize.decode(enc, cfg, m)
    assert np.array_equal(dec, np.array(v["exact_input"])) and clipped == 0
    for case in v["modulus_cases"]:
        c = quantize.QuantConfig(case["clip_norm"], case["frac_bits"], case["max_count"])
        assert quantize.modulus_bits(c, case["n"], case["d"]) == case["m"]


def test_modulus_refuses_configs_that_could_wrap():
    """P4: a config whose worst-case sum needs > 64 bits is refused, naming the fix."""
    cfg = quantize.QuantConfig(clip_norm=100.0, frac_bits=40, max_count=1_000_000)
    with pytest.raises(ConfigError, match="lower frac_bits"):
        quantize.modulus_bits(cfg, 10, 1000)
    # the chosen modulus really cannot wrap: n worst-case inputs decode exactly
    cfg = quantize.QuantConfig(clip_norm=1.0, frac_bits=8, max_count=50)
    n, d = 9, 4
    m = quantize.modulus_bits(cfg, n, d)
    worst = np.array([50 * 1.0, 0, 0, 0, 50.0])  # |c*delta_0| = max_count * clip
    for sign in (1, -1):
        w = worst.copy()
        w[0] *= sign
        total = np.zeros(d + 2, dtype=np.uint64)
        for _ in range(n):
            total += quantize.encode(w, cfg, m)[0]
        dec, _ = quantize.decode(total, cfg, m)
        assert dec[0] == sign * n * 50.0 and dec[-1] == n * 50
    assert (1 << m) > 2 * n * quantize.per_hospital_bound(cfg, d)
    assert (1 << (m - 1)) <= 2 * n * quantize.per_hospital_bound(cfg, d)


def test_quantize_rejects_bad_inputs():
    cfg = quantize.QuantConfig(1.0, 8, 10)
    m = quantize.modulus_bits(cfg, 3, 2)
    for bad in ([0.1, 0.2, 11.0], [0.1, 0.2, 2.5], [np.nan, 0, 1.0], [0.1, 0.0, 0.0]):
        with pytest.raises(ConfigError):
            quantize.encode(np.array(bad), cfg, m)
    with pytest.raises(ConfigError):
        quantize.QuantConfig(-1.0).check()


def test_clipping_l2_norm_of_unweighted_delta_and_clip_count():
    cfg = quantize.QuantConfig(clip_norm=1.0, frac_bits=20, max_count=100)
    m = quantize.modulus_bits(cfg, 2, 3)
    delta = np.array([3.0, 4.0, 0.0])  # norm 5
    enc, stats = quantize.encode(np.append(10 * delta, 10.0), cfg, m)
    assert stats.norm_clipped and stats.norm == pytest.approx(5.0)
    assert stats.clipped_coordinates == 2  # non-zero coordinates changed by the clip
    dec, clipped = quantize.decode(enc, cfg, m)
    assert clipped == 2 and dec[-1] == 10.0
    assert np.allclose(dec[:-1], 10 * delta / 5.0, atol=2**-20)


def test_stochastic_rounding_is_unbiased():
    """P4: mean of many CSPRNG-rounded draws is within 5 sigma of the true value."""
    vals = np.array([0.3, -1.7, 2.5, 1e-3, -0.999, 7.0])
    draws = 20000
    rounded = quantize.stochastic_round(np.tile(vals, (draws, 1)))
    assert rounded.dtype == np.int64
    assert np.all(rounded - np.floor(vals) >= 0) and np.all(rounded - np.floor(vals) <= 1)
    frac = vals - np.floor(vals)
    sigma = np.sqrt(frac * (1 - frac) / draws) + 1e-12
    assert np.all(np.abs(rounded.mean(axis=0) - vals) <= 5 * sigma + 1e-12)
    assert np.all(rounded[:, 5] == 7)  # grid values never move


def test_centred_lift_edges():
    for m in (8, 37, 64):
        R = 1 << m
        raw = np.array([0, 1, R // 2 - 1, R // 2, R - 1], dtype=np.uint64)
        assert [int(x) for x in quantize.centred_lift(raw, m)] == [0, 1, R // 2 - 1,
                                                                  -(R // 2), -1]


# ------------------------------------------------------------------------- bitpack


def test_bitpack_kat_and_roundtrip():
    v = KAT["bitpack"]
    vals = np.array(v["values"], dtype=np.uint64)
    packed = bitpack.pack(vals, v["m"])
    assert packed.hex() == v["packed"] and len(packed) == bitpack.packed_size(11, 5) == 7
    assert np.array_equal(bitpack.unpack(packed, 5, 11), vals)
    for m in (1, 5, 8, 13, 32, 37, 63, 64):
        x = prg.prg_vector(secrets.token_bytes(32), 101, m)
        p = bitpack.pack(x, m)
        assert len(p) == (101 * m + 7) // 8
        assert np.array_equal(bitpack.unpack(p, m, 101), x)


def test_bitpack_rejects_bad_size_padding_and_overflow():
    with pytest.raises(ProtocolError):
        bitpack.unpack(b"\x00" * 6, 5, 11)
    with pytest.raises(ProtocolError, match="padding"):
        bitpack.unpack(b"\x00" * 6 + b"\x80", 5, 11)
    with pytest.raises(ProtocolError):
        bitpack.pack(np.array([32], dtype=np.uint64), 5)


# --------------------------------------------------------------------------- graphs


@pytest.mark.parametrize("n,k", [(10, 4), (11, 6), (12, 5), (20, 8), (7, 6), (30, 3)])
def test_harary_graph_is_k_regular_connected_and_deterministic(n, k):
    parts = [f"h{i:02d}" for i in range(n)]
    sid = bytes(range(32))
    g = graph.harary_graph(parts, k, sid, 3)
    assert g.is_regular(k) and g.is_connected()
    assert all(h not in g.of(h) for h in parts)
    assert all(h in g.of(w) for h in parts for w in g.of(h))  # undirected
    assert g == graph.harary_graph(list(reversed(parts)), k, sid, 3)  # P12: deterministic
    if k < n - 1:
        assert g != graph.harary_graph(parts, k, sid, 4)  # re-drawn each round


def test_harary_rejects_impossible_and_default_rule():
    with pytest.raises(ConfigError, match="even k"):
        graph.harary_graph([str(i) for i in range(7)], 3, bytes(32), 1)
    for bad_k in (7, 1):
        with pytest.raises(ConfigError):
            graph.harary_graph([str(i) for i in range(7)], bad_k, bytes(32), 1)
    for n in (3, 5, 10, 20, 101, 1000):
        k = graph.default_k(n)
        assert 1 <= k <= n - 1 and (k % 2 == 0 or n % 2 == 0)
        graph.check_threshold(graph.default_threshold(k + 1), k + 1,
                              graph.default_corrupt(k + 1))
    assert graph.default_k(20) == 14 and graph.default_k(1000) == 30


def test_threshold_rule():
    for n in range(3, 40):
        graph.check_threshold(graph.default_threshold(n), n, graph.default_corrupt(n))
    with pytest.raises(ConfigError, match="exceeds"):
        graph.check_threshold(6, 5, 1)
    with pytest.raises(ConfigError, match="raise t"):
        graph.check_threshold(3, 5, 1)
    with pytest.raises(ConfigError, match="t - n_C"):
        graph.check_threshold(2, 2, 1)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 40).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(min(2, n - 1), n - 1))))
def test_harary_property(nk):
    n, k = nk
    if n % 2 == 1 and k % 2 == 1:
        return
    g = graph.harary_graph([f"p{i}" for i in range(n)], k, b"s" * 32, 1)
    assert g.is_regular(k) and g.is_connected()


# ------------------------------------------------------------- fast paths (issue 4 bench)


def _ref_pack(vals: np.ndarray, m: int) -> bytes:
    acc = 0
    for i, x in enumerate(int(v) for v in vals):
        acc |= x << (i * m)
    return acc.to_bytes(bitpack.packed_size(len(vals), m), "little")


def test_bitpack_fast_paths_match_reference_for_every_width():
    rng = np.random.default_rng(7)
    for m in range(1, 65):
        for n in (0, 1, 7, 8, 9, 17, 130):
            top = (1 << m) - 1
            vals = rng.integers(0, top, n, dtype=np.uint64, endpoint=True)
            if n:
                vals[0] = top
            packed = bitpack.pack(vals, m)
            assert packed == _ref_pack(vals, m), (m, n)
            assert np.array_equal(bitpack.unpack(packed, m, n), vals), (m, n)
            acc, want = bitpack.SumAccumulator(m, n), np.zeros(n, dtype=np.uint64)
            for _ in range(3):
                w = rng.integers(0, top, n, dtype=np.uint64, endpoint=True)
                acc.add(bitpack.pack(w, m))
                want += w
            assert np.array_equal(acc.total(), want & np.uint64(top)), (m, n)
    acc = bitpack.SumAccumulator(5, 11)
    with pytest.raises(ProtocolError):
        acc.add(b"\x00" * 6 + b"\x80")
    assert not acc.total().any()


def test_prg_accumulate_equals_reduced_vectors_and_prg_words_stream():
    key = secrets.token_bytes(32)
    for m in (7, 32, 33, 37, 64):
        for n in (0, 1, 5000, 70001):
            base = np.random.default_rng(m).integers(0, 2**63, n, dtype=np.uint64)
            got = base.copy()
            prg.prg_accumulate(key, got, m, -1)
            prg.prg_accumulate(key, got, m, 1)
            prg.prg_accumulate(key, got, m, 1)
            mask = np.uint64((1 << m) - 1) if m < 64 else np.uint64(2**64 - 1)
            assert np.array_equal(got & mask, (base + prg.prg_vector(key, n, m)) & mask)
    w = prg.word_bytes(37)
    assert prg.prg_words(key, 3000, w).tobytes() == prg.prg_bytes(key, 3000 * w)


def test_prg_accumulate_many_equals_one_mask_at_a_time():
    """The chunk-outer expansion (every key's stream advanced chunk by chunk) gives exactly
    the signed sum of the independently expanded masks, across chunk boundaries."""
    per = prg._CHUNK // 8
    keys = [(secrets.token_bytes(32), s) for s in (1, -1, 1, 1, -1, -1, 1)]
    for m in (7, 32, 37, 64):
        for n in (0, 1, per - 1, per, per + 1, 3 * per + 5):
            base = np.random.default_rng(n).integers(0, 2**63, n, dtype=np.uint64)
            got = base.copy()
            prg.prg_accumulate_many(keys, got, m)
            want = base.copy()
            for k, sign in keys:
                v = prg.prg_vector(k, n, m)
                want = want + v if sign > 0 else want - v
            mask = np.uint64((1 << m) - 1) if m < 64 else np.uint64(2**64 - 1)
            assert np.array_equal(got & mask, want & mask), (m, n)
    with pytest.raises(ConfigError):
        prg.prg_accumulate_many([(keys[0][0], 2)], np.zeros(4, dtype=np.uint64), 37)
    with pytest.raises(ConfigError):
        prg.prg_accumulate_many(keys, np.zeros(4, dtype=np.uint32), 37)


def test_stochastic_round_coin_rule_is_the_float_rule():
    rng = np.random.default_rng(11)
    words = rng.integers(0, 2**64 - 1, 50_000, dtype=np.uint64, endpoint=True)
    words[:4] = [0, 2**11 - 1, 2**64 - 1, 2**64 - 2**11]
    frac = rng.random(50_000)
    frac[:4] = [0.0, 5e-324, np.nextafter(1.0, 0.0), np.nextafter(1.0, 0.0)]
    u = (words >> np.uint64(11)).astype(np.float64) * 2.0**-53
    frac[4:1000] = u[4:1000]  # ties never round up
    frac[1000:2000] = np.nextafter(u[1000:2000], 2.0)
    assert np.array_equal(bernoulli(frac.copy(), words.copy()), u < frac)


def test_reproducible_rounding_coins_only_when_asked():
    import numpy as np

    from fedrx.secagg import quantize as qz

    cfg = qz.QuantConfig(clip_norm=10.0, frac_bits=16, max_count=1000)
    v = np.r_[np.linspace(-3, 3, 501) * 7.0, 7.0]
    m = qz.modulus_bits(cfg, 3, v.size - 1)
    k1 = qz.rounding_key(5, "h1", 2)
    assert len(k1) == 32 and k1 != qz.rounding_key(5, "h1", 3) != qz.rounding_key(5, "h2", 2)
    a, _ = qz.encode(v, cfg, m, coin_key=k1)
    b, _ = qz.encode(v, cfg, m, coin_key=k1)
    assert np.array_equal(a, b)
    # default: fresh OS coins each call (501 coordinates with fractional parts)
    c, _ = qz.encode(v, cfg, m)
    d, _ = qz.encode(v, cfg, m)
    assert not np.array_equal(c, d)


def test_signature_verification_raises_never_returns_false():
    """RFC 8032 §7.1 test 1 (Ed25519, empty message) through the pinned-key API: a valid
    signature returns None; a tampered signature or message, a malformed signature and a
    hospital outside the federation each raise SignatureError (never a False to forget)."""
    pk = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
                        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
    pub = PublicIdentity("h1", pk, bytes(32))
    fed = Federation({"h1": pub})
    assert pub.verify(sig, b"") is None
    assert fed.verify("h1", sig, b"") is None
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    for args in ((bad, b""), (sig, b"x"), (sig[:-1], b"")):
        with pytest.raises(SignatureError, match="signature of h1 does not verify"):
            pub.verify(*args)
        with pytest.raises(SignatureError):
            fed.verify("h1", *args)
    with pytest.raises(SignatureError, match="not in the federation"):
        fed.verify("h2", sig, b"")
    ident = Identity.generate("h3")
    Federation.of([ident]).verify("h3", ident.sign(b"m"), b"m")


def test_failures_have_their_own_error_types():
    """A tampered AEAD share raises CiphertextError, a wrong or malformed Shamir share
    ShareError; both are CryptoErrors (the protocol catches them as such)."""
    key, ad = bytes(32), b"ad"
    nonce, ct = kex.seal(key, b"x" * 66, ad)
    with pytest.raises(CiphertextError, match="failed authentication"):
        kex.open_sealed(key, nonce, ct[:-1] + bytes([ct[-1] ^ 1]), ad)
    with pytest.raises(CiphertextError):
        kex.open_sealed(key, nonce[:-1], ct, ad)
    shares = shamir.split(secrets.token_bytes(32), 2, [1, 2, 3])
    with pytest.raises(ShareError, match="malformed Shamir share"):
        shamir.reconstruct({1: shares[1][:-1], 2: shares[2]}, 2)
    with pytest.raises(ShareError, match="need 2 shares"):
        shamir.reconstruct({1: shares[1]}, 2)
    with pytest.raises(ShareError):
        shamir.consistent_many([{1: shares[1], 2: b"\xff" * 33}], 2)
    assert issubclass(CiphertextError, CryptoError) and issubclass(ShareError, CryptoError)
