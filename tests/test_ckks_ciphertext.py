"""The aggregator's public context (no secret key) and the running sum (bad input)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest
import tenseal as ts
from ckks_epoch import epoch_fixtures

from fedrx.errors import CryptoError
from fedrx.secagg.ckks.ciphertext import CkksPublicContext
from fedrx.secagg.ckks.keyring import CkksKeyring

fed, ring, keys = epoch_fixtures()


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
