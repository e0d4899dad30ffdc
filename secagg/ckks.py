"""CKKS (TenSEAL) additive aggregation where the aggregator never holds a secret key.

Parameters (:class:`CkksParams`, defaults)
------------------------------------------
* ``poly_modulus_degree`` N = 8192, so one ciphertext packs ``N/2 = 4096`` real slots.
* ``coeff_mod_bit_sizes`` = (56, 40): ONE 56-bit data prime ``q`` plus the 40-bit special prime
  SEAL reserves for key switching (unused: fedrx only adds). Total log2 Q = 96 bits; the
  HomomorphicEncryption.org standard allows 218 bits at N = 8192 for 128-bit classical security
  (ternary secret), and 118 bits for 256-bit, so these parameters sit above 256-bit security.
  Ciphertexts live at the single data level: no modulus chain, no rescaling, no relinearisation.
  A 56-bit (rather than 60-bit) prime lets SEAL's zstd compression bring a full ciphertext to
  ~7.6 bytes per value (float32: 4), i.e. ~7.6x float32 on the wire.
* ``scale`` Δ = 2^32. A value ``m`` is stored as ``round(Δ·m)`` modulo ``q`` (2^55 < q < 2^56),
  so a decryptable SUM must satisfy ``|Σ m| < 2^(56-2-32) = 2^22`` (:meth:`CkksParams.max_abs_sum`).
  Every hospital checks ``|x_i| <= max_abs_sum / n_participants`` before encrypting, so the sum of
  any subset of participants cannot wrap.
* Hospitals encrypt with the SECRET key (SEAL symmetric encryption): ``c = (-a·s + e + Δm, a)``.
  It has a smaller error than public-key encryption and the aggregator needs no public key.
* Slots: N/2 = 4096 values per ciphertext; a vector of L values takes ceil(L/4096) ciphertexts.

Precision bound (checked in tests/test_ckks.py)
-----------------------------------------------
One fresh ciphertext decrypts to ``m + (e + r)/Δ`` where ``e`` is SEAL's error polynomial
(coefficient std σ = 3.24, centred binomial) and ``r`` the encoding rounding (uniform on
[-1/2, 1/2], variance 1/12). Through the canonical embedding each slot's real part is a sum of N
such terms, with standard deviation ``s1 = sqrt(N·(σ² + 1/12)/2)``. Bounding one ciphertext's slot
error by ``T = 8`` standard deviations (Gaussian tail ~1e-15 per slot) and letting the errors of the
n summands add in the worst case (linearly), the sum of n ciphertexts satisfies, per slot::

    |decrypt(Σ ct_i) − Σ x_i|  <=  n · T · sqrt(N·(σ² + 1/12)/2) / Δ     (sum_error_bound(n))

At the defaults: ``3.88e-7 · n`` (e.g. 1.9e-5 for n = 50) in the units of the summed vector
(``Σ count·delta``); relative to the averaged model that is divided by the total example count.

Key epochs and custody
----------------------
A key-holder hospital runs :meth:`CkksKeyring.create` once per epoch. It generates the TenSEAL
context with the secret key plus a 32-byte flooding key (both from the OS CSPRNG), and emits:

* an :class:`EpochManifest`, signed with its Ed25519 identity key: epoch, params, the SHA-256 of
  the PUBLIC context, a commitment (SHA-256) to the secret material, the recipient list;
  ``key_id = SHA-256(manifest statement)`` names the epoch everywhere;
* the public context: parameters and scale only, serialised WITHOUT secret key, public key, relin
  or Galois keys (~90 bytes). This is all the aggregator ever receives;
* one :class:`SealedKeyPackage` per hospital: the secret material sealed to that hospital's X25519
  identity key (:mod:`fedrx.secagg.seal`, label binds recipient, epoch and key id) and signed by
  the key holder, so the relaying aggregator can neither open nor substitute it.

Rotation = a new epoch with fresh keys; ciphertexts of an old epoch carry the old key id and are
rejected, and do not decrypt under the new key.

Nothing here pickles: ciphertexts and contexts use TenSEAL/SEAL's own serialisation, and every
incoming byte string is size-checked before it is parsed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import tenseal as ts
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedrx.errors import ConfigError, CryptoError
from fedrx.secagg.identity import Federation, Identity
from fedrx.secagg.seal import SealLabel, open_sealed, seal

#: Max total coefficient-modulus bits for 128-bit classical security with a ternary secret
#: (HomomorphicEncryption.org security standard, Table 1; the same bounds SEAL enforces).
HE_STANDARD_MAX_LOGQ_128: Mapping[int, int] = {
    1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881,
}
#: Same table for 256-bit classical security (for information; not required).
HE_STANDARD_MAX_LOGQ_256: Mapping[int, int] = {
    1024: 13, 2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476,
}

SECRET_KEY_PURPOSE = "ckks-secret-key"  # noqa: S105 (a seal label, not a secret)
_MANIFEST_DOMAIN = b"fedrx-ckks-manifest/1\x00"
_PACKAGE_DOMAIN = b"fedrx-ckks-package/1\x00"
_COMMIT_DOMAIN = b"fedrx-ckks-key-commitment/1\x00"
_FLOOD_INFO = b"fedrx-ckks-flood/1"
_SECRET_MAGIC = b"FRXCKKS1"
_MAX_PUBLIC_CONTEXT = 4096
_MAX_SECRET_CONTEXT = 4 * 1024 * 1024


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class CkksParams:
    """CKKS parameters for additions only (see module docstring for the defaults' numbers).

    ``noise_sigma`` is SEAL's error standard deviation; ``tail`` the number of standard
    deviations the per-slot error bound allows (``8`` -> failure probability ~1e-15 per slot).
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (56, 40)
    scale_bits: int = 32
    noise_sigma: float = 3.24
    tail: float = 8.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "coeff_mod_bit_sizes", tuple(self.coeff_mod_bit_sizes))

    @property
    def slots(self) -> int:
        """Real values per ciphertext (N/2)."""
        return self.poly_modulus_degree // 2

    @property
    def data_modulus_bits(self) -> int:
        """Bits of the single data-level prime q."""
        return self.coeff_mod_bit_sizes[0]

    @property
    def scale(self) -> float:
        return float(2 ** self.scale_bits)

    def validate(self) -> None:
        """Raise ConfigError unless the parameters are additions-only and >= 128-bit secure."""
        n = self.poly_modulus_degree
        if n not in HE_STANDARD_MAX_LOGQ_128:
            raise ConfigError(f"CKKS poly_modulus_degree {n} not in the HE standard table")
        if len(self.coeff_mod_bit_sizes) != 2:
            raise ConfigError("CKKS for aggregation uses exactly one data prime plus the special "
                              "prime (coeff_mod_bit_sizes of length 2): no modulus chain")
        if any(not 20 <= b <= 60 for b in self.coeff_mod_bit_sizes):
            raise ConfigError("CKKS coefficient primes must be 20..60 bits")
        total = sum(self.coeff_mod_bit_sizes)
        if total > HE_STANDARD_MAX_LOGQ_128[n]:
            raise ConfigError(f"CKKS log2 Q = {total} exceeds {HE_STANDARD_MAX_LOGQ_128[n]} bits, "
                              f"the 128-bit security bound at N = {n}")
        if not 20 <= self.scale_bits <= self.data_modulus_bits - 4:
            raise ConfigError("CKKS scale_bits must be in [20, data prime bits - 4]")
        if not (0 < self.noise_sigma < 100 and 1 <= self.tail <= 40):
            raise ConfigError("CKKS noise_sigma/tail out of range")

    def security_bits(self) -> int:
        """Classical security level met per the HE standard table: 256 or 128."""
        total = sum(self.coeff_mod_bit_sizes)
        return 256 if total <= HE_STANDARD_MAX_LOGQ_256[self.poly_modulus_degree] else 128

    def max_abs_sum(self) -> float:
        """Largest |Σ x| per slot that decrypts correctly: ``2^(q_bits-2-scale_bits)``, minus 1."""
        return float(2 ** (self.data_modulus_bits - 2 - self.scale_bits) - 1)

    def max_abs_input(self, n_participants: int) -> float:
        """Per-hospital |x_i| limit so that any sum of up to ``n_participants`` cannot wrap."""
        return self.max_abs_sum() / max(1, n_participants)

    def slot_error_std(self, n: int = 1) -> float:
        """Std of one slot's error after summing ``n`` fresh ciphertexts (independent case)."""
        n_poly = self.poly_modulus_degree
        return math.sqrt(n * n_poly * (self.noise_sigma ** 2 + 1 / 12) / 2) / self.scale

    def sum_error_bound(self, n: int) -> float:
        """Per-slot bound on |decrypt(Σ_{i<n} ct_i) − Σ x_i|: ``n·tail·slot_error_std(1)``."""
        return max(1, n) * self.tail * self.slot_error_std(1)

    def chunk_count(self, length: int) -> int:
        """Ciphertexts needed for a vector of ``length`` values (ceil(length / slots))."""
        return max(1, -(-length // self.slots))

    def chunk_sizes(self, length: int) -> list[int]:
        """Number of used slots of each chunk, in order."""
        k = self.chunk_count(length)
        return [self.slots] * (k - 1) + [length - self.slots * (k - 1)]

    @property
    def max_chunk_bytes(self) -> int:
        """Upper bound on one serialised ciphertext: 2 polys x N x 8 bytes + framing slack."""
        return 16 * self.poly_modulus_degree * (len(self.coeff_mod_bit_sizes) - 1) + 4096

    def to_json(self) -> dict:
        return {"poly_modulus_degree": self.poly_modulus_degree,
                "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
                "scale_bits": self.scale_bits, "noise_sigma": self.noise_sigma, "tail": self.tail}

    @staticmethod
    def from_json(obj: Mapping) -> CkksParams:
        try:
            p = CkksParams(int(obj["poly_modulus_degree"]),
                           tuple(int(b) for b in obj["coeff_mod_bit_sizes"]),
                           int(obj["scale_bits"]), float(obj["noise_sigma"]), float(obj["tail"]))
        except (KeyError, TypeError, ValueError):
            raise ConfigError("malformed CKKS parameters") from None
        p.validate()
        return p


def _canonical(obj: Mapping) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class EpochManifest:
    """Public, signed description of one CKKS key epoch (all hashes are 32-byte SHA-256)."""

    federation_id: bytes
    epoch: int
    key_holder: str
    params: CkksParams
    public_context_sha256: bytes
    key_commitment: bytes
    recipients: tuple[str, ...]
    signature: bytes = b""

    def statement(self) -> bytes:
        """The bytes the key holder signs."""
        return _MANIFEST_DOMAIN + _canonical({
            "federation_id": self.federation_id.hex(), "epoch": self.epoch,
            "key_holder": self.key_holder, "params": self.params.to_json(),
            "public_context_sha256": self.public_context_sha256.hex(),
            "key_commitment": self.key_commitment.hex(), "recipients": list(self.recipients),
        })

    @property
    def key_id(self) -> bytes:
        """32-byte id of this epoch's keys: SHA-256 of the signed statement."""
        return _sha256(self.statement())

    def verify(self, federation: Federation) -> None:
        """Raise CryptoError unless the key holder's pinned Ed25519 key signed this manifest."""
        if not federation.verify(self.key_holder, self.signature, self.statement()):
            raise CryptoError(f"CKKS epoch {self.epoch} manifest is not signed by its key holder "
                              f"{self.key_holder!r}")
        self.params.validate()


@dataclass(frozen=True)
class SealedKeyPackage:
    """The epoch's secret material sealed to ONE hospital, signed by the key holder."""

    recipient: str
    epoch: int
    key_id: bytes
    sealed: bytes
    signature: bytes

    def statement(self) -> bytes:
        return (_PACKAGE_DOMAIN + self.key_id + struct.pack(">Q", self.epoch)
                + self.recipient.encode() + b"\x00" + _sha256(self.sealed))

    def __repr__(self) -> str:
        return (f"SealedKeyPackage(recipient={self.recipient!r}, epoch={self.epoch}, "
                f"key_id={self.key_id.hex()[:16]}, sealed=<{len(self.sealed)} bytes>)")


def _check_chunk(params: CkksParams, vec: ts.CKKSVector, expected_size: int) -> None:
    cts = vec.ciphertext()
    if len(cts) != 1:
        raise CryptoError("chunk must hold exactly one ciphertext")
    ct = cts[0]
    if ct.size() != 2 or ct.coeff_modulus_size() != len(params.coeff_mod_bit_sizes) - 1:
        raise CryptoError("chunk is not a fresh two-component data-level ciphertext")
    if ct.poly_modulus_degree() != params.poly_modulus_degree:
        raise CryptoError("chunk has the wrong polynomial degree")
    if ct.scale != params.scale:
        raise CryptoError(f"chunk scale {ct.scale!r} != 2^{params.scale_bits}")
    if vec.size() != expected_size:
        raise CryptoError(f"chunk holds {vec.size()} values, expected {expected_size}")


def _load_chunk(params: CkksParams, ctx: ts.Context, data: bytes, expected_size: int
                ) -> ts.CKKSVector:
    if not isinstance(data, (bytes, bytearray)):
        raise CryptoError("chunk is not bytes")
    if len(data) > params.max_chunk_bytes:
        raise CryptoError(f"chunk of {len(data)} bytes exceeds the {params.max_chunk_bytes}-byte "
                          "limit (oversized)")
    try:
        vec = ts.ckks_vector_from(ctx, bytes(data))
    except (ValueError, RuntimeError, TypeError) as exc:
        # TenSEAL/SEAL messages describe the parse failure, never key material.
        raise CryptoError(f"chunk does not parse as a ciphertext of this context "
                          f"({type(exc).__name__}: {str(exc)[:80]})") from None
    _check_chunk(params, vec, expected_size)
    return vec


class CkksPublicContext:
    """The aggregator's view of one epoch: parameters, scale, key id. No key of any kind."""

    def __init__(self, manifest: EpochManifest, context_bytes: bytes):
        if len(context_bytes) > _MAX_PUBLIC_CONTEXT:
            raise CryptoError("public CKKS context too large (it must carry no keys)")
        if _sha256(context_bytes) != manifest.public_context_sha256:
            raise CryptoError("public CKKS context does not match the signed manifest")
        try:
            ctx = ts.context_from(bytes(context_bytes), n_threads=1)
        except (ValueError, RuntimeError, TypeError):
            raise CryptoError("public CKKS context does not parse") from None
        if ctx.has_secret_key():
            raise CryptoError("refusing a CKKS context that carries a secret key")
        if ctx.global_scale != manifest.params.scale:
            raise CryptoError("public CKKS context scale differs from the manifest")
        self.manifest = manifest
        self.params = manifest.params
        self.key_id = manifest.key_id
        self.epoch = manifest.epoch
        self._ctx = ctx

    def __repr__(self) -> str:
        return f"CkksPublicContext(epoch={self.epoch}, key_id={self.key_id.hex()[:16]})"

    def load_chunk(self, data: bytes, expected_size: int) -> ts.CKKSVector:
        """Parse and structurally check one ciphertext chunk; CryptoError if bad."""
        return _load_chunk(self.params, self._ctx, data, expected_size)

    def accumulator(self, length: int) -> CkksAccumulator:
        return CkksAccumulator(self, length)


class CkksAccumulator:
    """Running homomorphic sum of uploads of a ``length``-value vector.

    Memory: one ciphertext per chunk for the sum, plus the chunks of the ONE upload being
    folded (an upload is folded only when every chunk of it has been checked, so a bad chunk
    rejects the whole upload and leaves the sum unchanged). Independent of the number of
    uploads: O(model), not O(hospitals x model).
    """

    def __init__(self, public: CkksPublicContext, length: int):
        if length < 1:
            raise ConfigError("vector length must be >= 1")
        self.public = public
        self.length = length
        self.sizes = public.params.chunk_sizes(length)
        self._sum: list[ts.CKKSVector] | None = None
        self.contributors: list[str] = []

    @property
    def retained_ciphertexts(self) -> int:
        """Ciphertexts currently held (== number of chunks once something was added)."""
        return 0 if self._sum is None else len(self._sum)

    def add(self, hospital: str, chunks: Iterable[bytes],
            digests: Sequence[bytes] | None = None) -> None:
        """Check and fold one hospital's upload; CryptoError (sum unchanged) if any chunk is bad.

        ``chunks`` may be a generator (streamed chunks). If ``digests`` is given, chunk ``i``
        must hash (SHA-256) to ``digests[i]`` before it is even parsed.
        """
        if hospital in self.contributors:
            raise CryptoError(f"{hospital!r} already contributed to this sum")
        pending: list[ts.CKKSVector] = []
        for i, data in enumerate(chunks):
            if i >= len(self.sizes):
                raise CryptoError(f"upload of {hospital!r} has more than {len(self.sizes)} chunks")
            if digests is not None and (i >= len(digests) or _sha256(bytes(data)) != digests[i]):
                raise CryptoError(f"chunk {i} of {hospital!r} does not match its signed digest "
                                  "(corrupted or substituted)")
            try:
                pending.append(self.public.load_chunk(data, self.sizes[i]))
            except CryptoError as exc:
                raise CryptoError(f"chunk {i} of {hospital!r}: {exc}") from None
        if len(pending) != len(self.sizes):
            raise CryptoError(f"upload of {hospital!r} has {len(pending)} chunks, "
                              f"expected {len(self.sizes)}")
        if self._sum is None:
            self._sum = pending
        else:
            for acc, vec in zip(self._sum, pending, strict=True):
                acc.add_(vec)
        self.contributors.append(hospital)

    def chunks(self) -> list[bytes]:
        """The aggregate, serialised chunk by chunk (one ciphertext each)."""
        if self._sum is None:
            raise CryptoError("nothing was added to the CKKS sum")
        return [v.serialize() for v in self._sum]


def _flood_normal(seed: bytes, length: int) -> np.ndarray:
    """``length`` standard normals from a ChaCha20 keystream keyed by ``seed`` (Box-Muller)."""
    half = -(-length // 2)
    enc = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
    words = np.frombuffer(enc.update(bytes(16 * half)), dtype="<u8").reshape(2, half)
    u1 = ((words[0] >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0 ** -53  # (0, 1]
    u2 = (words[1] >> np.uint64(11)).astype(np.float64) * 2.0 ** -53  # [0, 1)
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])
    return z[:length]


@dataclass(frozen=True)
class ReleasePolicy:
    """How a hospital post-processes a decrypted aggregate before it leaves the node.

    ``flood_sigma`` = ``2^flood_bits · slot_error_std(n)`` (absolute, units of the sum): the
    Gaussian flooding noise; ``grid`` = the smallest power of two >= ``sum_error_bound(n)``: the
    output is rounded to multiples of it. ``error_bound`` bounds |released − true sum| per slot
    (CKKS error + ``tail`` flooding standard deviations + half a grid step).
    """

    flood_sigma: float
    grid: float
    error_bound: float

    @staticmethod
    def for_sum(params: CkksParams, n: int, flood_bits: int | None) -> ReleasePolicy:
        ckks = params.sum_error_bound(n)
        grid = 2.0 ** math.ceil(math.log2(ckks))
        sigma = 0.0 if flood_bits is None else 2.0 ** flood_bits * params.slot_error_std(n)
        return ReleasePolicy(sigma, grid, ckks + params.tail * sigma + grid / 2)


class CkksSecretKey:
    """A hospital's copy of one epoch's secret key (and flooding key). Never printed."""

    def __init__(self, manifest: EpochManifest, context: ts.Context, flood_key: bytes):
        self.manifest = manifest
        self.params = manifest.params
        self.key_id = manifest.key_id
        self.epoch = manifest.epoch
        self._ctx = context
        self._flood_key = flood_key

    def __repr__(self) -> str:
        return (f"CkksSecretKey(epoch={self.epoch}, key_id={self.key_id.hex()[:16]}, "
                "<secret key hidden>)")

    def encrypt(self, vector: np.ndarray) -> list[bytes]:
        """Encrypt a float64 vector into ``chunk_count(len)`` serialised ciphertexts.

        Raises CryptoError on non-finite values; range checks are the caller's policy
        (``params.max_abs_input``).
        """
        x = np.asarray(vector, dtype=np.float64).ravel()
        if x.size == 0 or not np.all(np.isfinite(x)):
            raise CryptoError("CKKS input must be a non-empty finite vector")
        s = self.params.slots
        return [ts.ckks_vector(self._ctx, x[i:i + s]).serialize() for i in range(0, x.size, s)]

    def _load_all(self, chunks: Sequence[bytes], length: int) -> list[ts.CKKSVector]:
        sizes = self.params.chunk_sizes(length)
        if len(chunks) != len(sizes):
            raise CryptoError(f"aggregate has {len(chunks)} chunks, expected {len(sizes)}")
        vecs = []
        for i, (data, size) in enumerate(zip(chunks, sizes, strict=True)):
            try:
                vecs.append(_load_chunk(self.params, self._ctx, data, size))
            except CryptoError as exc:
                raise CryptoError(f"aggregate chunk {i}: {exc}") from None
        return vecs

    @staticmethod
    def _values(vecs: Sequence[ts.CKKSVector], length: int) -> np.ndarray:
        out = np.concatenate([np.asarray(v.decrypt(), dtype=np.float64) for v in vecs])
        if out.shape != (length,):
            raise CryptoError("aggregate decrypted to the wrong number of values")
        return out

    def decrypt(self, chunks: Sequence[bytes], length: int) -> np.ndarray:
        """Decrypt serialised chunks of a ``length``-value vector (raw, full precision).

        Raw decryptions of a ciphertext the aggregator holds leak the key (IND-CPA-D): use
        :meth:`release` for anything that leaves the node.
        """
        return self._values(self._load_all(chunks, length), length)

    def release(self, chunks: Sequence[bytes], length: int, n_contributors: int,
                flood_bits: int | None = 16) -> tuple[np.ndarray, ReleasePolicy]:
        """Decrypt an aggregate of ``n_contributors`` uploads, flood and round it for release.

        The flooding noise is a deterministic function of the flooding key (shared by the
        epoch's hospitals, unknown to the aggregator) and of the canonical ciphertext bytes, so
        every honest decryptor of the same aggregate releases the SAME vector, and asking again
        for the same ciphertext yields no fresh noise to average out.
        """
        policy = ReleasePolicy.for_sum(self.params, n_contributors, flood_bits)
        vecs = self._load_all(chunks, length)
        raw = self._values(vecs, length)
        if policy.flood_sigma > 0:
            h = hashlib.sha256()
            for v in vecs:  # canonical re-serialisation: re-encoding tricks give no fresh noise
                h.update(_sha256(v.serialize()))
            seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=self.key_id,
                        info=_FLOOD_INFO + h.digest()).derive(self._flood_key)
            raw = raw + policy.flood_sigma * _flood_normal(seed, length)
        released = np.round(raw / policy.grid) * policy.grid
        return released, policy


def _encode_secret(context_bytes: bytes, flood_key: bytes) -> bytes:
    return _SECRET_MAGIC + struct.pack(">I", len(context_bytes)) + context_bytes + flood_key


def _decode_secret(blob: bytes) -> tuple[bytes, bytes]:
    head = len(_SECRET_MAGIC) + 4
    if len(blob) < head + 32 or blob[:len(_SECRET_MAGIC)] != _SECRET_MAGIC:
        raise CryptoError("sealed CKKS key package has a malformed payload")
    (n,) = struct.unpack(">I", blob[len(_SECRET_MAGIC):head])
    if n > _MAX_SECRET_CONTEXT or len(blob) != head + n + 32:
        raise CryptoError("sealed CKKS key package has a malformed payload")
    return blob[head:head + n], blob[head + n:]


def _public_bytes(ctx: ts.Context) -> bytes:
    return ctx.serialize(save_public_key=False, save_secret_key=False,
                         save_galois_keys=False, save_relin_keys=False)


@dataclass(frozen=True)
class CkksKeyring:
    """Everything distributed for one epoch: signed manifest, public context, sealed packages.

    Safe to hand to the aggregator: it contains no secret in the clear. The aggregator uses
    :meth:`server_context` and relays ``packages[h]`` to hospital ``h``, which calls
    :meth:`open`.
    """

    manifest: EpochManifest
    public_context: bytes
    packages: Mapping[str, SealedKeyPackage] = field(default_factory=dict)

    @property
    def key_id(self) -> bytes:
        return self.manifest.key_id

    @property
    def epoch(self) -> int:
        return self.manifest.epoch

    @staticmethod
    def create(holder: Identity, federation: Federation, *, epoch: int, federation_id: bytes,
               params: CkksParams | None = None,
               recipients: Sequence[str] | None = None) -> CkksKeyring:
        """Generate epoch ``epoch``'s keys at the key holder and seal them to ``recipients``.

        ``recipients`` defaults to every federation member (the holder included: it opens its
        own package like everyone else). Secret material exists in the clear only inside this
        call and inside each recipient after :meth:`open`.
        """
        params = params or CkksParams()
        params.validate()
        if not 0 <= epoch < 2**63:
            raise ConfigError("CKKS epoch must be a non-negative integer")
        if len(federation_id) != 32:
            raise ConfigError("federation_id must be 32 bytes")
        federation.get(holder.hospital)
        rcpts = tuple(sorted(recipients if recipients is not None else federation.members))
        if not rcpts or len(set(rcpts)) != len(rcpts):
            raise ConfigError("CKKS recipients must be a non-empty list without repeats")
        for h in rcpts:
            federation.get(h)
        try:
            ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree,
                             coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
                             encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC, n_threads=1)
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"TenSEAL rejected the CKKS parameters: {exc}") from None
        ctx.global_scale = params.scale
        public = _public_bytes(ctx)
        secret = _encode_secret(
            ctx.serialize(save_public_key=False, save_secret_key=True,
                          save_galois_keys=False, save_relin_keys=False),
            os.urandom(32))
        del ctx
        unsigned = EpochManifest(federation_id, epoch, holder.hospital, params, _sha256(public),
                                 _sha256(_COMMIT_DOMAIN + secret), rcpts)
        manifest = EpochManifest(**{**unsigned.__dict__,
                                    "signature": holder.sign(unsigned.statement())})
        key_id = manifest.key_id
        packages = {}
        for h in rcpts:
            box = seal(federation.get(h).seal_key(), secret,
                       SealLabel(SECRET_KEY_PURPOSE, h, epoch, key_id))
            pkg = SealedKeyPackage(h, epoch, key_id, box, b"")
            packages[h] = SealedKeyPackage(h, epoch, key_id, box, holder.sign(pkg.statement()))
        return CkksKeyring(manifest, public, packages)

    def server_context(self, federation: Federation) -> CkksPublicContext:
        """The aggregator's context, after checking the manifest signature and context hash."""
        self.manifest.verify(federation)
        return CkksPublicContext(self.manifest, self.public_context)

    def open(self, identity: Identity, federation: Federation,
             package: SealedKeyPackage | None = None) -> CkksSecretKey:
        """Open ``identity``'s package (default: ``packages[identity.hospital]``).

        Checks, in order: manifest signature (pinned key holder), that the package is addressed
        to this hospital for this epoch/key id and signed by the key holder, the AEAD, the
        commitment in the manifest, and that the key's public context is the manifest's.
        """
        me = identity.hospital
        m = self.manifest
        m.verify(federation)
        if package is None:
            if me not in self.packages:
                raise CryptoError(f"no CKKS key package for {me!r} in epoch {m.epoch}")
            package = self.packages[me]
        if me not in m.recipients:
            raise CryptoError(f"{me!r} is not a recipient of CKKS epoch {m.epoch}")
        if package.recipient != me or package.epoch != m.epoch or package.key_id != m.key_id:
            raise CryptoError(f"CKKS key package is addressed to {package.recipient!r} epoch "
                              f"{package.epoch}, not to {me!r} epoch {m.epoch}")
        if not federation.verify(m.key_holder, package.signature, package.statement()):
            raise CryptoError("CKKS key package is not signed by the epoch's key holder")
        secret = open_sealed(identity.seal_private(), package.sealed,
                             SealLabel(SECRET_KEY_PURPOSE, me, m.epoch, m.key_id))
        if _sha256(_COMMIT_DOMAIN + secret) != m.key_commitment:
            raise CryptoError("CKKS key package does not match the manifest's key commitment")
        ctx_bytes, flood_key = _decode_secret(secret)
        try:
            ctx = ts.context_from(ctx_bytes, n_threads=1)
        except (ValueError, RuntimeError, TypeError):
            raise CryptoError("CKKS secret context does not parse") from None
        if not ctx.has_secret_key() or _sha256(_public_bytes(ctx)) != m.public_context_sha256:
            raise CryptoError("CKKS secret context does not match the manifest")
        return CkksSecretKey(m, ctx, flood_key)
