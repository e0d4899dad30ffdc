"""CKKS parameters, precision bound, key custody, sealed delivery, packing, bad input."""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tenseal as ts

from fedrx.csprng import normal_from_key
from fedrx.errors import ConfigError, CryptoError
from fedrx.secagg.ckks.ciphertext import CkksPublicContext
from fedrx.secagg.ckks.keyring import SECRET_KEY_PURPOSE, CkksKeyring, SealedKeyPackage
from fedrx.secagg.ckks.params import HE_STANDARD_MAX_LOGQ_128, CkksParams
from fedrx.secagg.identity import Federation, Identity
from fedrx.secagg.seal import SealLabel, seal

HOSPITALS = ("h0", "h1", "h2")


@pytest.fixture(scope="module")
def fed():
    ids = {h: Identity.generate(h) for h in HOSPITALS}
    return ids, Federation.of(list(ids.values()))


@pytest.fixture(scope="module")
def ring(fed):
    ids, federation = fed
    return CkksKeyring.create(ids["h0"], federation, epoch=1, federation_id=os.urandom(32))


@pytest.fixture(scope="module")
def keys(fed, ring):
    ids, federation = fed
    return {h: ring.open(ids[h], federation) for h in HOSPITALS}


# ------------------------------------------------------------------- parameters (P16)


def test_params_meet_128_bit_security_additions_only():
    p = CkksParams()
    p.validate()
    assert p.poly_modulus_degree == 8192 and p.slots == 4096
    assert sum(p.coeff_mod_bit_sizes) <= HE_STANDARD_MAX_LOGQ_128[p.poly_modulus_degree]
    assert len(p.coeff_mod_bit_sizes) == 2  # one data prime + special prime: no chain
    assert p.security_bits() >= 128
    assert p.max_abs_sum() == 2.0 ** 22 - 1
    for bad in (replace(p, coeff_mod_bit_sizes=(60, 40, 40)),
                replace(p, poly_modulus_degree=2048),  # 100 bits > 54
                replace(p, poly_modulus_degree=3000),
                replace(p, scale_bits=58)):
        with pytest.raises(ConfigError):
            bad.validate()


def test_precision_bound_formula():
    p = CkksParams()
    n_poly, sigma, delta = 8192, 3.24, 2.0 ** 32
    for n in (1, 10, 50):
        expected = n * 8 * math.sqrt(n_poly * (sigma ** 2 + 1 / 12) / 2) / delta
        assert p.sum_error_bound(n) == pytest.approx(expected, rel=1e-12)
    assert p.sum_error_bound(50) < 2e-5


@pytest.mark.parametrize("n", [1, 10, 50])
def test_sum_of_n_updates_within_bound(fed, ring, keys, n):
    p = ring.manifest.params
    length = p.slots + 300  # two chunks, the second partly filled
    rng = np.random.default_rng(n)
    bound = p.max_abs_input(50)
    xs = [rng.uniform(-bound, bound, length) for _ in range(n)]
    pub = ring.server_context(fed[1])
    acc = pub.accumulator(length)
    for i, x in enumerate(xs):
        acc.add(f"h{i}", keys[HOSPITALS[i % 3]].encrypt(x))
    got = keys["h1"].decrypt(acc.chunks(), length)
    err = np.max(np.abs(got - np.sum(xs, axis=0)))
    assert err <= p.sum_error_bound(n), (err, p.sum_error_bound(n))


def test_sum_at_range_limit_does_not_wrap(fed, ring, keys):
    p = ring.manifest.params
    n, length = 4, 64
    x = np.full(length, p.max_abs_input(n))
    x[::2] *= -1
    acc = ring.server_context(fed[1]).accumulator(length)
    for i in range(n):
        acc.add(f"h{i}", keys["h0"].encrypt(x))
    got = keys["h2"].decrypt(acc.chunks(), length)
    assert np.max(np.abs(got - n * x)) <= p.sum_error_bound(n)


def test_packing_uses_fewest_ciphertexts_and_at_most_8x_float32(keys):
    k = keys["h0"]
    assert k.params.chunk_count(4096) == 1 and k.params.chunk_count(4097) == 2
    chunks = k.encrypt(np.zeros(3 * 4096 + 1))
    assert len(chunks) == 4
    full = chunks[0]
    assert len(full) <= k.params.max_chunk_bytes
    assert len(full) / (4096 * 4) <= 8.0  # bytes per parameter vs float32


# ----------------------------------------------------------------- key custody (P13)


def test_aggregator_context_has_no_secret_key_and_cannot_decrypt(fed, ring, keys):
    _, federation = fed
    pub = ring.server_context(federation)
    assert len(ring.public_context) < 256  # parameters and scale only: no keys at all
    raw = ts.context_from(ring.public_context)
    assert not raw.has_secret_key()
    acc = pub.accumulator(10)
    acc.add("h0", keys["h0"].encrypt(np.arange(10.0)))
    acc.add("h1", keys["h1"].encrypt(np.arange(10.0)))
    vec = pub.load_chunk(acc.chunks()[0], 10)
    with pytest.raises(ValueError, match="secret_key"):
        vec.decrypt()
    # a hospital decrypts the same bytes fine
    assert np.allclose(keys["h2"].decrypt(acc.chunks(), 10), 2 * np.arange(10.0), atol=1e-6)


def test_context_with_secret_key_is_refused_for_the_aggregator(fed, ring):
    ids, federation = fed
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40],
                     encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC, n_threads=1)
    ctx.global_scale = 2.0 ** 36
    leaky = ctx.serialize(save_secret_key=True, save_public_key=False,
                          save_relin_keys=False, save_galois_keys=False)
    m = replace(ring.manifest, public_context_sha256=hashlib.sha256(leaky).digest())
    with pytest.raises(CryptoError):
        CkksPublicContext(m, leaky)


def test_public_context_must_match_signed_manifest(fed, ring):
    _, federation = fed
    with pytest.raises(CryptoError, match="manifest"):
        CkksPublicContext(ring.manifest, ring.public_context + b"\x00")
    forged = replace(ring.manifest, epoch=2)
    with pytest.raises(CryptoError, match="not signed"):
        forged.verify(federation)


# ----------------------------------------------------------- sealed delivery (P14)


def test_every_hospital_opens_its_own_package_same_key(fed, ring, keys):
    assert set(ring.packages) == set(HOSPITALS)
    x = np.linspace(-3, 3, 50)
    ct = keys["h0"].encrypt(x)
    for h in HOSPITALS:
        assert keys[h].key_id == ring.key_id
        assert np.allclose(keys[h].decrypt(ct, 50), x, atol=1e-7)


def test_hospital_cannot_open_another_hospitals_package(fed, ring):
    ids, federation = fed
    with pytest.raises(CryptoError, match="addressed to 'h2'"):
        ring.open(ids["h1"], federation, package=ring.packages["h2"])
    # relabelling the package breaks the key holder's signature
    relabelled = replace(ring.packages["h2"], recipient="h1")
    with pytest.raises(CryptoError, match="not signed"):
        ring.open(ids["h1"], federation, package=relabelled)
    # even with a valid signature, h1's X25519 key does not open a box sealed to h2
    from fedrx.secagg.seal import open_sealed
    with pytest.raises(CryptoError, match="does not open"):
        open_sealed(ids["h1"].seal_private(), ring.packages["h2"].sealed,
                    SealLabel(SECRET_KEY_PURPOSE, "h2", 1, ring.key_id))


def test_aggregator_cannot_substitute_its_own_key(fed, ring):
    ids, federation = fed
    # the relaying aggregator seals a key of its own choosing to h1; it has no holder signature
    box = seal(federation.get("h1").seal_key(), b"FRXCKKS1" + bytes(40),
               SealLabel(SECRET_KEY_PURPOSE, "h1", 1, ring.key_id))
    fake = SealedKeyPackage("h1", 1, ring.key_id, box, b"\x00" * 64)
    with pytest.raises(CryptoError, match="not signed"):
        ring.open(ids["h1"], federation, package=fake)
    # a package signed by another hospital (not the key holder) is refused too
    p = SealedKeyPackage("h1", 1, ring.key_id, box, b"")
    signed_by_h2 = replace(p, signature=ids["h2"].sign(p.statement()))
    with pytest.raises(CryptoError, match="not signed"):
        ring.open(ids["h1"], federation, package=signed_by_h2)


def test_non_member_cannot_open(fed, ring):
    _, federation = fed
    with pytest.raises(CryptoError):
        ring.open(Identity.generate("intruder"), federation, package=ring.packages["h0"])


def test_secrets_never_in_repr(fed, ring, keys):
    k = keys["h0"]
    text = repr(k) + repr(ring.packages["h0"]) + repr(ring.server_context(fed[1]))
    assert "hidden" in repr(k)
    assert ring.packages["h0"].sealed[:16].hex() not in text
    assert k._flood_key.hex() not in text


# --------------------------------------------------------------------- key rotation


def test_key_rotation_old_ciphertexts_do_not_decrypt(fed, ring, keys):
    ids, federation = fed
    ring2 = CkksKeyring.create(ids["h1"], federation, epoch=2,
                               federation_id=ring.manifest.federation_id)
    assert ring2.key_id != ring.key_id
    new = ring2.open(ids["h2"], federation)
    x = np.full(20, 5.0)
    old_ct = keys["h0"].encrypt(x)
    garbage = new.decrypt(old_ct, 20)  # parses (same parameters), but the key is wrong
    assert np.max(np.abs(garbage - x)) > 1e3
    # an old-epoch package cannot be opened as a new-epoch one
    with pytest.raises(CryptoError):
        ring2.open(ids["h0"], federation, package=ring.packages["h0"])


# ----------------------------------------------------------------------- bad input


def test_accumulator_rejects_bad_chunks_and_keeps_the_sum(fed, ring, keys):
    ids, federation = fed
    pub = ring.server_context(federation)
    length = 4096 + 8
    good = keys["h0"].encrypt(np.ones(length))
    acc = pub.accumulator(length)
    acc.add("h0", good)

    # ciphertext from a context with other parameters
    other = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[40, 20],
                       encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC, n_threads=1)
    other.global_scale = 2.0 ** 30
    foreign = [ts.ckks_vector(other, np.ones(4096)).serialize()] * 2
    with pytest.raises(CryptoError, match="chunk 0"):
        acc.add("h1", foreign)
    # ciphertext under another key with the same parameters: caught by the signed digests
    # only if the digests are the ones the hospital signed; here the digest list is h0's
    ring2 = CkksKeyring.create(ids["h2"], federation, epoch=9,
                               federation_id=ring.manifest.federation_id)
    other_key = ring2.open(ids["h1"], federation).encrypt(np.ones(length))
    digests = [hashlib.sha256(c).digest() for c in good]
    with pytest.raises(CryptoError, match="signed digest"):
        acc.add("h1", other_key, digests)
    # corrupted bytes
    bad = bytearray(good[1])
    bad[len(bad) // 2] ^= 0x10
    with pytest.raises(CryptoError, match="signed digest"):
        acc.add("h1", [good[0], bytes(bad)], digests)
    bad_head = bytearray(good[0])
    bad_head[5] ^= 0xFF
    with pytest.raises(CryptoError, match="does not parse"):
        acc.add("h1", [bytes(bad_head), good[1]])
    # oversized bytes
    with pytest.raises(CryptoError, match="oversized"):
        acc.add("h1", [good[0], good[1] + bytes(pub.params.max_chunk_bytes)])
    # wrong number of chunks / wrong value count
    with pytest.raises(CryptoError, match="expected 2"):
        acc.add("h1", good[:1])
    with pytest.raises(CryptoError, match="values"):
        acc.add("h1", keys["h1"].encrypt(np.ones(length + 1)))
    # duplicate contributor
    with pytest.raises(CryptoError, match="already"):
        acc.add("h0", good)
    # a valid upload still goes through, and none of the rejected ones touched the sum
    acc.add("h2", keys["h2"].encrypt(np.ones(length)))
    assert acc.contributors == ["h0", "h2"]
    assert acc.retained_ciphertexts == 2  # O(model): one ciphertext per chunk
    assert np.allclose(keys["h1"].decrypt(acc.chunks(), length), 2.0, atol=1e-6)


def test_accumulator_memory_independent_of_hospitals(fed, ring, keys):
    pub = ring.server_context(fed[1])
    acc = pub.accumulator(100)
    ct = keys["h0"].encrypt(np.ones(100))
    for i in range(30):
        acc.add(f"x{i}", iter(ct))  # a generator works: streamed chunks
        assert acc.retained_ciphertexts == 1
    assert np.allclose(keys["h0"].decrypt(acc.chunks(), 100), 30.0, atol=1e-5)


# -------------------------------------------------------------- release / flooding (P15)


def test_release_is_flooded_rounded_deterministic_and_within_bound(fed, ring, keys):
    length, n = 300, 3
    rng = np.random.default_rng(7)
    xs = [rng.normal(0, 100, length) for _ in range(n)]
    acc = ring.server_context(fed[1]).accumulator(length)
    for i, x in enumerate(xs):
        acc.add(HOSPITALS[i], keys[HOSPITALS[i]].encrypt(x))
    chunks = acc.chunks()
    raw = keys["h0"].decrypt(chunks, length)
    a, policy = keys["h1"].release(chunks, length, n)
    b, _ = keys["h2"].release(chunks, length, n)
    assert np.array_equal(a, b)  # every honest decryptor releases the same vector
    assert np.all(np.abs(a / policy.grid - np.round(a / policy.grid)) == 0)  # on the grid
    assert policy.grid >= ring.manifest.params.sum_error_bound(n)
    assert np.max(np.abs(a - np.sum(xs, axis=0))) <= policy.error_bound
    noise = a - raw
    assert np.std(noise) == pytest.approx(policy.flood_sigma, rel=0.25)  # noise is there
    # a different aggregate gets different noise
    acc2 = ring.server_context(fed[1]).accumulator(length)
    for i, x in enumerate(xs):
        acc2.add(HOSPITALS[i], keys[HOSPITALS[i]].encrypt(x))
    c, _ = keys["h1"].release(acc2.chunks(), length, n)
    assert not np.array_equal(a, c)


def test_flood_noise_known_answer():
    v = json.loads((Path(__file__).parent / "vectors" / "ckks_flood.json").read_text())
    z = normal_from_key(bytes.fromhex(v["seed"]), v["length"])
    assert np.allclose(z, v["normals"], rtol=0, atol=1e-12)
    big = normal_from_key(os.urandom(32), 20000)
    assert abs(big.mean()) < 0.05 and abs(big.std() - 1) < 0.05
