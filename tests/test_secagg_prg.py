"""Known-answer and property tests of the masking PRG (AES-256-CTR expansion mod 2**m)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedrx.errors import (
    ConfigError,
    CryptoError,
)
from fedrx.secagg import prg

KAT = json.loads((Path(__file__).parent / "vectors" / "secagg_kat.json").read_text())


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
