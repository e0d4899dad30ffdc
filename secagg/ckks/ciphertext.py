"""The aggregator's view of a CKKS epoch: the key-less public context and the running sum.

Every incoming byte string is size-checked before TenSEAL parses it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import tenseal as ts

from fedrx.errors import ConfigError, CryptoError
from fedrx.secagg.ckks.params import CkksParams

if TYPE_CHECKING:
    from fedrx.secagg.ckks.keyring import EpochManifest

_MAX_PUBLIC_CONTEXT = 4096


def sha256(data: bytes) -> bytes:
    """SHA-256 digest (32 bytes)."""
    return hashlib.sha256(data).digest()


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
        if sha256(context_bytes) != manifest.public_context_sha256:
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
            if digests is not None and (i >= len(digests) or sha256(bytes(data)) != digests[i]):
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
