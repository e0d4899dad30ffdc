"""Known answers and properties of the CKKS keyed linear sum tags (secagg/ckks/sum_tag.py) and
the reusable decrypt-side checks (secagg/ckks/sum_check.py)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tenseal as ts
import tenseal.sealapi as sealapi

from fedrx.csprng import KeyStream
from fedrx.errors import CryptoError, ProtocolAbort
from fedrx.protocol.protection import RoundContext
from fedrx.protocol.protections.ckks import CkksProtection
from fedrx.secagg.ckks import sum_tag
from fedrx.secagg.ckks.params import CkksParams
from fedrx.secagg.ckks.sum_check import (
    RoundBinding,
    SumBounds,
    check_sum_range,
    recompute_sum,
)
from fedrx.secagg.ckks.sum_tag import SumTagKey, add_tags, coefficients, data_prime

PARAMS = CkksParams()
N = PARAMS.poly_modulus_degree


@pytest.fixture(scope="module")
def ctx() -> ts.Context:
    c = ts.context(ts.SCHEME_TYPE.CKKS, N, coeff_mod_bit_sizes=list(PARAMS.coeff_mod_bit_sizes))
    c.global_scale = PARAMS.scale
    return c


def _vec(ctx, seed: int, n: int = 4096) -> ts.CKKSVector:
    return ts.ckks_vector(ctx, np.random.default_rng(seed).normal(size=n))


def test_data_prime_known_answer():
    q = data_prime(PARAMS)
    assert q == 72057594037616641  # SEAL's 56-bit NTT prime for N = 8192
    assert 2**55 < q < 2**56 and q % (2 * N) == 1
    assert pow(3, q - 1, q) == 1 and pow(5, q - 1, q) == 1


def test_coefficients_equal_seals_own_reading(ctx, tmp_path: Path):
    """Independent reference: SEAL's own loader (tenseal.sealapi) reads every coefficient."""
    v = _vec(ctx, 0)
    ours = coefficients(v.serialize(), PARAMS)
    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(N)
    parms.set_coeff_modulus(sealapi.CoeffModulus.Create(N, list(PARAMS.coeff_mod_bit_sizes)))
    sctx = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128)
    path = str(tmp_path / "ct.bin")
    v.ciphertext()[0].save(path)
    ref = sealapi.Ciphertext()
    ref.load(sctx, path)
    assert ours.shape == (2 * N,)
    assert np.array_equal(ours, np.array([ref[i] for i in range(2 * N)], dtype=np.uint64))
    assert int(ours[0]) == v.ciphertext()[0].data(0) and int(ours[N]) == v.ciphertext()[0].data(1)


def test_coefficients_add_mod_q(ctx):
    a, b = _vec(ctx, 1), _vec(ctx, 2)
    q = data_prime(PARAMS)
    ca, cb = coefficients(a.serialize(), PARAMS), coefficients(b.serialize(), PARAMS)
    cs = coefficients((a + b).serialize(), PARAMS)
    assert [int(x) for x in cs] == [(int(x) + int(y)) % q for x, y in zip(ca, cb, strict=True)]


def test_row_entries_known_answer_rfc8439_and_rejection():
    """Zero key, zero nonce: ChaCha20's first block is RFC 8439 A.1 #1 (76 b8 e0 ad a0 f1 3d
    90 40 5d 6a e5 53 86 bd 28 ...); a row entry is the low 56 bits of one little-endian word."""
    q = data_prime(PARAMS)
    rows = sum_tag.row_entries(KeyStream(bytes(32)), 1, 2, q)
    block = bytes.fromhex("76b8e0ada0f13d90405d6ae55386bd28")  # RFC 8439 A.1 #1, first 16
    want = [int.from_bytes(block[i:i + 8], "little") & (2**56 - 1) for i in (0, 8)]
    assert want[0] == 0x3DF1A0ADE0B876
    assert [int(x) for x in rows[0]] == want

    class Stream:  # words at and above q are replaced, in order, by the next ones below q
        def __init__(self, words):
            self.words = list(words)

        def words64(self, n):
            out, self.words = self.words[:n], self.words[n:]
            return np.array(out, dtype=np.uint64)

    rows = sum_tag.row_entries(Stream([5, q, 7, 2**56 - 1, q + 1, 9, 11]), 1, 3, q)
    assert [int(x) for x in rows[0]] == [5, 9, 7]  # q -> (2^56-1 -> q+1 rejected) -> 9


def test_tag_key_derivation_known_answer():
    key = SumTagKey.derive(bytes(32), b"k" * 32, b"s" * 32, 7, b"c" * 32, PARAMS, 9)
    assert key.n_tags == 9 and key.q == data_prime(PARAMS)
    assert key._key.hex() == KAT_TAG_KEY
    other = SumTagKey.derive(bytes(32), b"k" * 32, b"s" * 32, 8, b"c" * 32, PARAMS, 9)
    assert other._key != key._key  # fresh per round
    assert "hidden" in repr(key) and key._key.hex() not in repr(key)


KAT_TAG_KEY = "cf4fa9cc4dbe1a94c9b76a403a5d88d7445f11526a6c02da00c746c8704fed9c"


def _reference_tags(key: bytes, blobs, k: int) -> list[int]:
    """The documented definition with Python integers: row j, entry l of each chunk is the
    low 56 bits of the next keystream word (rejected if >= q); tag j = sum entry * coeff mod q."""
    q, width = data_prime(PARAMS), 2 * N
    stream = KeyStream(key)
    out = [0] * k
    for blob in blobs:
        coeffs = [int(c) for c in coefficients(blob, PARAMS)]
        for j0 in range(0, k, sum_tag._ROW_BLOCK):
            b = min(sum_tag._ROW_BLOCK, k - j0)
            words = [int(w) & (2**56 - 1) for w in stream.words64(b * width)]
            for i, w in enumerate(words):
                while w >= q:
                    w = int(stream.words64(1)[0]) & (2**56 - 1)
                words[i] = w
            for j in range(b):
                row = words[j * width:(j + 1) * width]
                out[j0 + j] += sum(e * c for e, c in zip(row, coeffs, strict=True))
    return [x % q for x in out]


def test_tags_equal_the_integer_reference_and_add(ctx):
    k = 3
    key = SumTagKey(bytes(range(32)), PARAMS, k)
    a, b = [_vec(ctx, 3), _vec(ctx, 4, 100)], [_vec(ctx, 5), _vec(ctx, 6, 100)]
    ta, tb = key.vector_tags(a), key.vector_tags(b)
    assert list(ta) == _reference_tags(bytes(range(32)), [v.serialize() for v in a], k)
    s = [x + y for x, y in zip(a, b, strict=True)]
    assert key.vector_tags(s) == add_tags([ta, tb], k, key.q)
    assert key.vector_tags([a[0] + a[0], a[1] + a[1]]) != add_tags([ta, tb], k, key.q)
    with pytest.raises(CryptoError, match="tags, expected"):
        add_tags([ta[:2]], k, key.q)


def test_tags_are_computed_in_row_blocks_in_stream_order(ctx):
    """More tags than one block: the first rows are the same stream words as with few tags."""
    one = [_vec(ctx, 8).serialize()]
    many = SumTagKey(bytes(range(32)), PARAMS, sum_tag._ROW_BLOCK + 5).tags(one)
    assert many[:3] == SumTagKey(bytes(range(32)), PARAMS, 3).tags(one)
    assert len(set(many)) == len(many)


def test_malformed_headers_are_refusals_not_crashes():
    from fedrx.secagg.ckks.messages import UploadHeader
    from fedrx.secagg.ckks.sum_check import verify_headers
    from fedrx.secagg.identity import Federation

    binding = RoundBinding(b"s" * 32, 1, b"k" * 32, b"c" * 32, ("a", "b"), 1, 6, 2)
    good = UploadHeader("a", (b"d" * 32,), b"x" * 64, (1,) * 6)
    for bad in (replace(good, tags=("1",) * 6), replace(good, tags=(2**64,) * 6),
                replace(good, digests=(b"short",)), replace(good, hospital=None),
                replace(good, signature="sig"), "not a header"):
        with pytest.raises(ProtocolAbort, match="malformed upload header"):
            verify_headers([bad], binding, Federation({}))


def test_tag_count_is_participants_plus_margin():
    assert sum_tag.TAG_MARGIN == 4
    assert [sum_tag.tag_count(n) for n in (2, 10, 100)] == [6, 14, 104]


def _reframe(blob: bytes, mode: int) -> bytes:
    """The same ciphertext under another SEAL compression mode (0 none, 1 zlib)."""
    inner = sum_tag._unframe(sum_tag._seal_blob(blob), 1 << 22)
    body = inner if mode == 0 else zlib.compress(inner)
    seal = struct.pack("<HBBBBHQ", 0xA15E, 16, 4, 3, mode, 0, 16 + len(body)) + body
    proto = b"\x12" + _varint(len(seal)) + seal
    return proto


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def test_parser_reads_other_compression_modes_and_refuses_malformed(ctx):
    blob = _vec(ctx, 7).serialize()
    want = coefficients(blob, PARAMS)
    for mode in (0, 1):
        assert np.array_equal(coefficients(_reframe(blob, mode), PARAMS), want)
    seal = sum_tag._seal_blob(blob)
    bad = {
        "truncated": blob[:-10],
        "two ciphertexts": blob + b"\x12" + _varint(len(seal)) + seal,
        "wrong magic": blob.replace(b"\x5e\xa1", b"\x5e\xa2", 1),
        "empty": b"",
        "other params": _vec_other().serialize(),
    }
    for data in bad.values():
        with pytest.raises(CryptoError):
            coefficients(data, PARAMS)


def _vec_other() -> ts.CKKSVector:
    c = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[40, 20])
    c.global_scale = 2.0**20
    return ts.ckks_vector(c, [1.0])


# ------------------------------------------------------------------- sum_check helpers


def test_recompute_sum_adds_only_verified_uploads():
    """The API for a protection whose decryptors may see uploads (threshold CKKS)."""
    hospitals = ("a", "b", "c")
    prot = CkksProtection.simulated(hospitals)
    length = 4096 + 5
    ctx = RoundContext(b"s" * 32, 1, hospitals, length, model_hash="m")
    clients = {h: prot.new_client(ctx, h) for h in hospitals}
    xs = {h: np.concatenate([np.full(length - 1, i + 1.0), [10.0]])
          for i, h in enumerate(hospitals)}
    for h in hospitals:
        clients[h].set_input(xs[h])
    server = prot.new_server(ctx)
    server.collect("keys", {})
    reqs = server.requests("upload", list(hospitals))
    ups = [clients[h].handle("upload", reqs[h]) for h in hospitals]
    pub = prot.aggregator.public_context()
    r = clients["a"]._round
    binding = r.binding(prot.hospitals["a"].held())
    sizes = pub.params.chunk_sizes(length)
    who, total = recompute_sum(ups, binding, prot.federation, pub.load_chunk, sizes)
    assert who == hospitals
    got = prot.hospitals["a"].held().decrypt([v.serialize() for v in total], length)
    assert np.max(np.abs(got - sum(xs.values()))) < 1e-4
    with pytest.raises(ProtocolAbort, match="repeated"):
        recompute_sum([ups[0], ups[0]], binding, prot.federation, pub.load_chunk, sizes)
    bad = replace(ups[1], chunks=(ups[0].chunks[0],) + ups[1].chunks[1:])
    with pytest.raises(ProtocolAbort, match="signed digest"):
        recompute_sum([ups[0], bad], binding, prot.federation, pub.load_chunk, sizes)
    with pytest.raises(ProtocolAbort, match="refusing to decrypt"):
        recompute_sum(ups[:1], binding, prot.federation, pub.load_chunk, sizes)
    assert isinstance(binding, RoundBinding)


def test_sum_range_bounds():
    b = SumBounds(max_count=100, clip_norm=1.0, max_abs_input=1e3)
    ok = np.array([30.0, 40.0, 50.0])  # norm 50 <= count 50 x 1.0
    check_sum_range(ok, 2, b, 1e-3)
    for bad, why in ((np.array([0.0, 0.0, 0.0]), "count"), (np.array([0.0, 0.0, 201.0]),
                     "count"), (np.array([0.0, 0.0, -9e8]), "count"),
                     (np.array([60.0, 0.0, 50.0]), "norm"), (np.array([np.nan, 0, 5]),
                     "finite")):
        with pytest.raises(ProtocolAbort, match=why):
            check_sum_range(bad, 2, b, 1e-3)
    with pytest.raises(ProtocolAbort, match="max_count"):
        b.check_input(np.array([0.0, 0.5]))
    with pytest.raises(ProtocolAbort, match="CKKS range"):
        b.check_input(np.array([2e3, 1.0]))
    b.check_input(np.array([0.5, 1.0]))
