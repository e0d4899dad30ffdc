"""Keyed linear tags of CKKS ciphertexts: how a decryptor checks that an aggregate IS the sum
of the listed uploads without ever seeing one of them.

Why not send the decryptor the uploads and let it add them itself? In the single-key ``ckks``
protection every hospital holds the epoch's secret key, so a decryptor given the individual
ciphertexts could decrypt each hospital's update. Instead each hospital signs, with its upload,
``k`` tags of its ciphertext under a round key the aggregator does not know::

    T_i[j] = sum over chunks c, coefficients l of  R_c[j, l] * ct_i,c[l]   (mod q)

``ct_i,c`` is chunk ``c`` of hospital ``i``'s upload as SEAL stores it (2 polynomials x N
coefficients mod the data prime ``q``), ``R_c[j, l]`` is uniform on ``Z_q`` (56-bit words of a
ChaCha20 stream, rejection-sampled below ``q``), the stream keyed by :meth:`SumTagKey.derive`:
the epoch's flooding key (held by every epoch member, never by the aggregator), the session,
round and agreed round context. Ciphertext addition is coefficient-wise mod ``q``, so the tag of
a sum is the sum of the tags: the decryptor computes the tag of the aggregate it is asked to
decrypt and refuses unless it equals ``sum_i T_i mod q`` over the listed, signed uploads.

Soundness (what the aggregator cannot do). It knows the uploads ``ct_i`` and their tags, hence
the tag of any combination ``sum beta_i ct_i`` with one coefficient per upload; it knows nothing
else about ``R`` (fresh per round). An aggregate ``A = sum_listed ct_i + D`` passes only if
``R D = 0`` on all ``k`` rows. If ``D`` has a part outside the span of the uploads (a trivial
encryption of a known offset, an older round's ciphertext, chunks moved between positions), each
row vanishes with probability exactly 1/q < 2^-55 (given everything the aggregator saw, that
part's tag is uniform). If ``D = sum beta_i ct_i`` (e.g. the victim's upload times 4095), it
needs a non-zero ``beta`` with ``sum beta_i T_i = 0``: the ``k x n`` tag matrix must be
rank-deficient, probability <= q^(n-1) * q^(-k) = q^-5 < 2^-275 for ``k = n + TAG_MARGIN`` tags
(``n`` = round participants: each uploads once per round; ``TAG_MARGIN = 4``). (With fewer tags
than uploads a short kernel vector exists, ~q^(k/n) by lattice reduction: k >= n is necessary.)

What the tags reveal: they are a keyed function of the ciphertext (which the aggregator holds
anyway) under a key it does not know: nothing about the plaintext.

Cost per upload: ``k`` 8-byte tags; per party and round, ``k * 2N`` keystream words and an
exact integer dot product per chunk (16- and 14-bit limbs, float64 BLAS: every partial sum
< 2^44).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
import tenseal as ts
import tenseal.sealapi as sealapi
import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedrx.csprng import KeyStream
from fedrx.errors import CryptoError
from fedrx.secagg.ckks.params import CkksParams

TAG_DOMAIN = b"fedrx-ckks-sum-tag/1\x00"
TAG_MARGIN = 4
"""Tags beyond the number of participants (each adds 55 bits of soundness)."""
_LIMB_BITS = 14
_LIMBS = 4  # coefficients: 4 x 14-bit limbs; row entries: 4 x 16-bit limbs (56 bits)
_ROW_LIMB_BITS = 16
_MASK56 = np.uint64(2**56 - 1)
_ROW_BLOCK = 16  # tag rows generated at a time: 16 x 4 x 2N float64 = 8 MiB at N = 8192
_SEAL_MAGIC = 0xA15E
_SEAL_HEADER = struct.Struct("<HBBBBHQ")
_COMPR_NONE, _COMPR_ZLIB, _COMPR_ZSTD = 0, 1, 2


def tag_count(n_participants: int) -> int:
    """Tags per upload for a round of ``n_participants``: ``n + TAG_MARGIN``."""
    return max(1, int(n_participants)) + TAG_MARGIN


@lru_cache(maxsize=8)
def _data_prime(poly_modulus_degree: int, bits: tuple[int, ...]) -> int:
    return int(sealapi.CoeffModulus.Create(poly_modulus_degree, list(bits))[0].value())


def data_prime(params: CkksParams) -> int:
    """The data-level prime ``q`` SEAL picks for ``params`` (deterministic in N and the bit
    sizes, so every party computes the same one)."""
    return _data_prime(params.poly_modulus_degree, tuple(params.coeff_mod_bit_sizes))


# ------------------------------------------------------------------ ciphertext coefficients


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CryptoError("malformed varint in a serialised ciphertext")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _seal_blob(serialised: bytes) -> bytes:
    """The one SEAL ciphertext inside TenSEAL's ``CKKSVectorProto`` (field 2)."""
    pos, found = 0, []
    while pos < len(serialised):
        key, pos = _varint(serialised, pos)
        field, wire = key >> 3, key & 7
        if wire == 2:
            n, pos = _varint(serialised, pos)
            if pos + n > len(serialised):
                raise CryptoError("truncated field in a serialised ciphertext")
            if field == 2:
                found.append(serialised[pos:pos + n])
            pos += n
        elif wire == 1:
            pos += 8
        elif wire == 0:
            _, pos = _varint(serialised, pos)
        elif wire == 5:
            pos += 4
        else:
            raise CryptoError("unexpected protobuf wire type in a serialised ciphertext")
    if len(found) != 1 or pos != len(serialised):
        raise CryptoError("a chunk must serialise exactly one ciphertext")
    return found[0]


def _unframe(blob: bytes, limit: int) -> bytes:
    """SEAL's serialisation header (magic, version 4.x, compression mode, size) -> payload."""
    if len(blob) < _SEAL_HEADER.size:
        raise CryptoError("SEAL object shorter than its header")
    magic, hsize, major, _minor, mode, reserved, size = _SEAL_HEADER.unpack_from(blob)
    if (magic != _SEAL_MAGIC or hsize != _SEAL_HEADER.size or major != 4 or reserved
            or size != len(blob)):
        raise CryptoError("not a SEAL 4.x object of the stated size")
    body = blob[_SEAL_HEADER.size:]
    if mode == _COMPR_NONE:
        return body
    try:
        if mode == _COMPR_ZSTD:
            out = zstandard.ZstdDecompressor().decompressobj().decompress(body)
        elif mode == _COMPR_ZLIB:
            out = zlib.decompressobj().decompress(body, limit + 1)
        else:
            raise CryptoError(f"unknown SEAL compression mode {mode}")
    except (zstandard.ZstdError, zlib.error):
        raise CryptoError("SEAL object does not decompress") from None
    if len(out) > limit:
        raise CryptoError("SEAL object decompresses beyond its size limit")
    return out


def coefficients(serialised: bytes, params: CkksParams) -> np.ndarray:
    """The ``2 * N`` coefficients (uint64, mod ``q``; NTT form, as SEAL stores them) of the ONE
    fresh-size data-level ciphertext in ``serialised`` (TenSEAL's ``CKKSVector.serialize()``).

    Pass bytes TenSEAL itself produced from a loaded, checked vector (the decryptor re-serialises
    what it will decrypt), so this parser and SEAL's loader can never read different things.
    CryptoError on anything else (SEAL 4.x ``Ciphertext::save`` layout: parms_id, NTT flag,
    size, N, coefficient-modulus count, scale, correction factor, then the coefficient array).
    """
    n_poly, level = params.poly_modulus_degree, len(params.coeff_mod_bit_sizes) - 1
    count = 2 * n_poly * level
    members = _unframe(_seal_blob(serialised), 32 + 41 + 24 + 8 * count)
    if len(members) < 73:
        raise CryptoError("SEAL ciphertext truncated")
    is_ntt = members[32]
    size, degree, moduli = struct.unpack_from("<QQQ", members, 33)
    (correction,) = struct.unpack_from("<Q", members, 65)
    if is_ntt != 1 or size != 2 or degree != n_poly or moduli != level or correction != 1:
        raise CryptoError("not a two-component data-level CKKS ciphertext in NTT form")
    inner = _unframe(members[73:], 8 + 8 * count)
    if len(inner) != 8 + 8 * count or struct.unpack_from("<Q", inner)[0] != count:
        raise CryptoError("SEAL ciphertext holds the wrong number of coefficients")
    out = np.frombuffer(inner, dtype="<u8", offset=8).astype(np.uint64)
    if int(out.max(initial=0)) >= data_prime(params):
        raise CryptoError("ciphertext coefficient not reduced mod the data prime")
    return out


# ------------------------------------------------------------------------------ the tags


def _limbs(x: np.ndarray) -> np.ndarray:
    """uint64 values < 2^56 -> float64 14-bit limbs, limb axis first (exact)."""
    mask = np.uint64(2**_LIMB_BITS - 1)
    return np.stack([((x >> np.uint64(_LIMB_BITS * a)) & mask).astype(np.float64)
                     for a in range(_LIMBS)])


def row_entries(stream: KeyStream, k: int, width: int, q: int) -> np.ndarray:
    """The next chunk's ``k`` rows, shape ``(k, width)``, uint64 uniform on ``[0, q)``: the
    low 56 bits of consecutive little-endian keystream words, row by row; a value ``>= q``
    (probability ~2^-37.5) is replaced, in order, by the next stream word below ``q``."""
    rows = stream.words64(k * width) & _MASK56
    for i in np.flatnonzero(rows >= np.uint64(q)):
        while True:
            w = int(stream.words64(1)[0]) & (2**56 - 1)
            if w < q:
                rows[i] = w
                break
    return rows.reshape(k, width)


def _row_limbs(rows: np.ndarray) -> np.ndarray:
    """(k, width) uint64 < 2^56 -> (k, 4, width) float64 16-bit limbs (exact)."""
    k, width = rows.shape
    return rows.view("<u2").reshape(k, width, _LIMBS).transpose(0, 2, 1).astype(np.float64)


class SumTagKey:
    """One round's tag key: ``k`` rows of uniform ``Z_q`` entries per ciphertext
    coefficient, from a ChaCha20 stream (chunk by chunk, in order). Never printed."""

    def __init__(self, key: bytes, params: CkksParams, n_tags: int):
        if len(key) != 32 or n_tags < 1:
            raise CryptoError("a sum-tag key is 32 bytes with at least one tag")
        self._key = key
        self.params = params
        self.n_tags = n_tags
        self.q = data_prime(params)

    def __repr__(self) -> str:
        return f"SumTagKey(n_tags={self.n_tags}, <key hidden>)"

    @staticmethod
    def derive(flood_key: bytes, key_id: bytes, session_id: bytes, round_: int,
               context: bytes, params: CkksParams, n_tags: int) -> SumTagKey:
        """HKDF-SHA256(flood key; salt = key id; info = domain, session, round, context)."""
        info = (TAG_DOMAIN + struct.pack(">QI", round_, n_tags) + session_id + context)
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=key_id, info=info
                   ).derive(flood_key)
        return SumTagKey(key, params, n_tags)

    def tags(self, serialised_chunks: Iterable[bytes]) -> tuple[int, ...]:
        """The ``n_tags`` tags (ints in ``[0, q)``) of one upload or aggregate, given its chunks
        as TenSEAL serialises them (see :func:`coefficients`)."""
        k, q = self.n_tags, self.q
        width = 2 * self.params.poly_modulus_degree * (len(self.params.coeff_mod_bit_sizes) - 1)
        stream = KeyStream(self._key)
        acc = [0] * k
        for blob in serialised_chunks:
            limbs = _limbs(coefficients(blob, self.params)).T
            for j0 in range(0, k, _ROW_BLOCK):  # rows in stream order, bounded memory
                b = min(_ROW_BLOCK, k - j0)
                rows = _row_limbs(row_entries(stream, b, width, q)).reshape(b * _LIMBS, width)
                # (b*4, width) @ (width, 4): products < 2^30, sums < 2^44: exact in float64
                part = (rows @ limbs).reshape(b, _LIMBS, _LIMBS)
                for j in range(b):
                    acc[j0 + j] += sum(int(part[j, x, y]) << (_ROW_LIMB_BITS * x + _LIMB_BITS * y)
                                       for x in range(_LIMBS) for y in range(_LIMBS))
        return tuple(a % q for a in acc)

    def vector_tags(self, vecs: Sequence[ts.CKKSVector]) -> tuple[int, ...]:
        """:meth:`tags` of loaded vectors (canonical re-serialisation)."""
        return self.tags(v.serialize() for v in vecs)


def add_tags(tag_lists: Iterable[Sequence[int]], n_tags: int, q: int) -> tuple[int, ...]:
    """Element-wise sum mod ``q`` of several uploads' tags (the expected tag of their sum)."""
    acc = [0] * n_tags
    for tags in tag_lists:
        if len(tags) != n_tags:
            raise CryptoError(f"an upload carries {len(tags)} tags, expected {n_tags}")
        for j, t in enumerate(tags):
            acc[j] += int(t)
    return tuple(a % q for a in acc)
