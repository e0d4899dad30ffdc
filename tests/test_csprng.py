"""Known answers and hygiene of the one CSPRNG stream module (fedrx.csprng)."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from scipy import stats

from fedrx import csprng
from fedrx.errors import ConfigError

KEY = bytes(range(32))


def _chacha_words(key: bytes, n: int) -> list[int]:
    """The first ``n`` little-endian 64-bit ChaCha20 keystream words, from pyca directly."""
    enc = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    return list(struct.unpack(f"<{n}Q", enc.update(bytes(8 * n))))


def _reference_flood_normal(seed: bytes, length: int) -> np.ndarray:
    """secagg/ckks.py ``_flood_normal`` as it was before it moved here, verbatim."""
    half = -(-length // 2)
    enc = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
    words = np.frombuffer(enc.update(bytes(16 * half)), dtype="<u8").reshape(2, half)
    u1 = ((words[0] >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0 ** -53  # (0, 1]
    u2 = (words[1] >> np.uint64(11)).astype(np.float64) * 2.0 ** -53  # [0, 1)
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])
    return z[:length]


def test_keystream_words_known_answer():
    # RFC 8439 appendix A.1 test vector 1: zero key, zero counter and nonce
    rfc = bytes.fromhex("76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7")
    assert csprng.KeyStream(bytes(32)).words64(4).tobytes() == rfc
    want = _chacha_words(KEY, 9)
    s = csprng.KeyStream(KEY)
    got = list(s.words64(4)) + list(s.words64(5))  # a stream: split reads continue it
    assert got == want
    assert want[0] == 0x6A19C5D97D2BFD39  # pinned first word for key 00..1f
    halves = csprng.KeyStream(KEY).words32(3)
    assert list(halves) == [want[0] & 0xFFFFFFFF, want[0] >> 32, want[1] & 0xFFFFFFFF]


def test_uniform_conversions_known_answer():
    words = _chacha_words(KEY, 6)
    w = np.array(words, dtype=np.uint64)
    top = [x >> 11 for x in words]  # Python ints: exact
    assert list(csprng.uniform_open(w.copy())) == [(t + 0.5) / 2**53 for t in top]
    assert list(csprng.uniform_co(w.copy())) == [t / 2**53 for t in top]
    assert list(csprng.uniform_oc(w.copy())) == [(t + 1) / 2**53 for t in top]
    assert list(csprng.KeyStream(KEY).uniform(6)) == [(t + 0.5) / 2**53 for t in top]
    edges = np.array([0, 2**11 - 1, 2**64 - 1], dtype=np.uint64)
    assert list(csprng.uniform_open(edges)) == [2.0**-54, 2.0**-54, 1 - 2.0**-54]
    assert list(csprng.uniform_co(edges)) == [0.0, 0.0, 1 - 2.0**-53]
    assert list(csprng.uniform_oc(edges)) == [2.0**-53, 2.0**-53, 1.0]


def test_normal_float64_known_answer():
    n = 7
    words = _chacha_words(KEY, 8)
    want = []
    u1 = [((x >> 11) + 1) / 2**53 for x in words[:4]]
    u2 = [(x >> 11) / 2**53 for x in words[4:]]
    rs = [math.sqrt(-2.0 * math.log(a)) for a in u1]
    want = [r * math.cos(2 * math.pi * b) for r, b in zip(rs, u2, strict=True)]
    want += [r * math.sin(2 * math.pi * b) for r, b in zip(rs, u2, strict=True)]
    got = csprng.normal_from_key(KEY, n)
    assert got.dtype == np.float64 and got.shape == (n,)
    assert np.allclose(got, want[:n], rtol=1e-14, atol=0)  # libm vs numpy sin/cos: ulps


def test_normal_from_key_is_the_ckks_flooding_noise_bit_for_bit():
    v = json.loads((Path(__file__).parent / "vectors" / "ckks_flood.json").read_text())
    seed = bytes.fromhex(v["seed"])
    assert np.array_equal(csprng.normal_from_key(seed, v["length"]),
                          _reference_flood_normal(seed, v["length"]))
    assert np.allclose(csprng.normal_from_key(seed, v["length"]), v["normals"],
                       rtol=0, atol=1e-12)
    for length in (0, 1, 2, 3, 64, 1001, 20000):
        key = os.urandom(32)
        assert np.array_equal(csprng.normal_from_key(key, length),
                              _reference_flood_normal(key, length)), length


def test_normal_f32_known_answer():
    std = 2.5
    words = _chacha_words(KEY, 4)  # n = 5: 3 radius words, then 3 half-words (2 words)
    radius = np.float32([std * math.sqrt(-2.0 * math.log(((x >> 11) + 0.5) / 2**53))
                         for x in words[:3]])
    halves = [words[3] & 0xFFFFFFFF, words[3] >> 32, _chacha_words(KEY, 5)[4] & 0xFFFFFFFF]
    theta = np.float32([((h >> 8) + 0.5) * 2 * math.pi / 2**24 for h in halves])
    want = np.concatenate([np.cos(theta) * radius, np.sin(theta) * radius])[:5]
    got = csprng.KeyStream(KEY).normal_f32(5, std)
    assert got.dtype == np.float32 and got.shape == (5,)
    assert np.allclose(got, want, rtol=1e-6, atol=0)


def test_bernoulli_known_answer():
    # u = t * 2**-53 for t = w >> 11; coin = u < p, ties never come up
    t = [0, 0, 1, 2**52, 2**52, 2**53 - 1, 2**53 - 1]
    p = [0.0, 5e-324, 2.0**-53, 0.5, np.nextafter(0.5, 1.0), np.nextafter(1.0, 0.0), 0.75]
    words = (np.array(t, dtype=np.uint64) << np.uint64(11)) | np.uint64(2**11 - 1)
    got = csprng.bernoulli(np.array(p), words)
    assert list(got) == [False, True, False, False, True, False, False]


def test_os_keyed_streams_differ_and_hide_the_key():
    a, b = csprng.KeyStream(), csprng.KeyStream()
    assert not np.array_equal(a.words64(4), b.words64(4))
    assert "key hidden" in repr(a)
    assert KEY.hex() not in repr(csprng.KeyStream(KEY))
    with pytest.raises(ConfigError):
        csprng.KeyStream(b"short")
    with pytest.raises(ConfigError):
        csprng.normal_from_key(bytes(16), 4)


def test_statistics():
    z = csprng.KeyStream().normal(200_000)
    assert abs(z.mean()) < 0.02 and z.std() == pytest.approx(1.0, rel=0.01)
    assert stats.kstest(z[:50_000], "norm").pvalue > 1e-4
    u = csprng.KeyStream().uniform(100_000)
    assert 0 < u.min() and u.max() < 1 and stats.kstest(u, "uniform").pvalue > 1e-4


def test_counter_space_limit():
    from fedrx.errors import CryptoError

    keyed = csprng.KeyStream(KEY)
    keyed._words = 2**50 - 1  # as if 2**50 - 1 words had been read
    keyed.words64(1)
    with pytest.raises(CryptoError, match="exhausted"):
        keyed.words64(1)  # a keyed stream never wraps or silently re-keys
    fresh = csprng.KeyStream()
    fresh._words = 2**50
    assert len(fresh.words64(3)) == 3 and fresh._words == 3  # OS-keyed: a new OS key
