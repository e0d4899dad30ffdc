"""Known-answer tests of m-bit packing and its fast paths (against a reference packer)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import numpy as np
import pytest

from fedrx.errors import (
    ProtocolError,
)
from fedrx.secagg import bitpack, prg

KAT = json.loads((Path(__file__).parent / "vectors" / "secagg_kat.json").read_text())


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
