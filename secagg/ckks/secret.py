"""A hospital's opened copy of one epoch's secret key: encrypt, decrypt, release."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import tenseal as ts
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedrx.csprng import normal_from_key
from fedrx.errors import CryptoError
from fedrx.secagg.ckks.ciphertext import _load_chunk, sha256
from fedrx.secagg.ckks.release import ReleasePolicy
from fedrx.secagg.ckks.sum_tag import SumTagKey

if TYPE_CHECKING:
    from fedrx.secagg.ckks.keyring import EpochManifest

_FLOOD_INFO = b"fedrx-ckks-flood/1"


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

    def sum_tag_key(self, session_id: bytes, round_: int, context: bytes,
                    n_tags: int) -> SumTagKey:
        """The round's keyed-linear-tag key (:mod:`fedrx.secagg.ckks.sum_tag`), derived from
        this epoch's flooding key: every epoch member derives the same, the aggregator none."""
        return SumTagKey.derive(self._flood_key, self.key_id, session_id, round_, context,
                                self.params, n_tags)

    def release(self, chunks: Sequence[bytes], length: int, n_contributors: int,
                flood_bits: int | None = 16,
                check: Callable[[Sequence[ts.CKKSVector]], None] | None = None
                ) -> tuple[np.ndarray, ReleasePolicy]:
        """Decrypt an aggregate of ``n_contributors`` uploads, flood and round it for release.

        ``check`` sees the loaded (structurally checked) aggregate BEFORE anything is
        decrypted and raises to refuse it (e.g. :func:`fedrx.secagg.ckks.sum_check.
        check_tagged_sum`).

        The flooding noise is a deterministic function of the flooding key (shared by the
        epoch's hospitals, unknown to the aggregator) and of the canonical ciphertext bytes, so
        every honest decryptor of the same aggregate releases the SAME vector, and asking again
        for the same ciphertext yields no fresh noise to average out.
        """
        policy = ReleasePolicy.for_sum(self.params, n_contributors, flood_bits)
        vecs = self._load_all(chunks, length)
        if check is not None:
            check(vecs)
        raw = self._values(vecs, length)
        if policy.flood_sigma > 0:
            h = hashlib.sha256()
            for v in vecs:  # canonical re-serialisation: re-encoding tricks give no fresh noise
                h.update(sha256(v.serialize()))
            seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=self.key_id,
                        info=_FLOOD_INFO + h.digest()).derive(self._flood_key)
            raw = raw + policy.flood_sigma * normal_from_key(seed, length)
        released = np.round(raw / policy.grid) * policy.grid
        return released, policy
