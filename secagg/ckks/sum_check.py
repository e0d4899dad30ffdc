"""What a CKKS decryptor checks before it releases anything: that the aggregate it is asked to
decrypt IS the sum of the round's listed, distinct, signed uploads, and that the decrypted sum
lies in the range the configuration allows.

Reusable by every CKKS protection (the single-key ``ckks`` and a threshold variant):

* :func:`verify_headers` checks the listed upload headers against the verifier's OWN view of
  the round (:class:`RoundBinding`: session, round, key id, agreed context digest,
  participants, chunk and tag counts, the pinned minimum number of contributors) and the pinned
  federation's keys. Returns the contributors; raises :class:`~fedrx.errors.ProtocolAbort`.
* :func:`verify_confirmations` checks that a majority of the participants confirmed exactly
  that list (each confirms one list per round: no two lists can be decrypted and differenced).
* :func:`recompute_sum` is for a protection whose decryptors may see the individual
  ciphertexts (threshold CKKS: no single party can decrypt one): it takes the uploads
  themselves, checks them with :func:`verify_headers` and every chunk against its signed
  digest, and returns the homomorphic sum it computed itself (decrypt only that).
* :func:`check_tagged_sum` is for the single-key ``ckks`` protection, where every hospital holds
  the secret key and so must never receive another hospital's ciphertext: it checks the
  aggregate against the uploads' signed keyed linear tags (:mod:`fedrx.secagg.ckks.sum_tag`).
* :func:`check_sum_range` bounds a decrypted sum ``[sum c_i * delta_i ..., sum c_i]`` by
  :class:`SumBounds` (count in ``[1, n * max_count]``, weighted-delta norm within
  ``count * clip_norm``, every entry within ``n * max_abs_input``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tenseal as ts

from fedrx.errors import CryptoError, ProtocolAbort
from fedrx.secagg.ckks.messages import (
    CkksConfirmation,
    CkksUpload,
    UploadHeader,
    confirm_statement,
    upload_statement,
)
from fedrx.secagg.ckks.params import CkksConfig
from fedrx.secagg.ckks.sum_tag import SumTagKey, add_tags
from fedrx.secagg.identity import Federation


@dataclass(frozen=True)
class RoundBinding:
    """The verifier's own view of one round, which every listed upload header must match.

    ``context``: the digest of the round context the verifier checked itself (never a value
    the aggregator sends with the decrypt request). ``n_chunks``: ciphertexts per upload.
    ``n_tags``: keyed linear tags per header (0: the protection uses none).
    ``min_contributors``: the pinned minimum (>= 2)."""

    session_id: bytes
    round: int
    key_id: bytes
    context: bytes
    participants: tuple[str, ...]
    n_chunks: int
    n_tags: int
    min_contributors: int

    def statement(self, hdr: UploadHeader) -> bytes:
        """The bytes ``hdr.hospital`` must have signed for this round."""
        return upload_statement(self.session_id, self.round, self.key_id, hdr.hospital,
                                hdr.digests, self.context, hdr.tags)


def _well_typed(hdr: object) -> None:
    """ProtocolAbort unless ``hdr`` is an UploadHeader of the types the codec guarantees (an
    in-process caller could hand anything)."""
    ok = (isinstance(hdr, UploadHeader) and isinstance(hdr.hospital, str)
          and isinstance(hdr.signature, bytes)
          and all(isinstance(d, bytes) and len(d) == 32 for d in hdr.digests)
          and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 2**64
                  for t in hdr.tags))
    if not ok:
        raise ProtocolAbort("malformed upload header")


def verify_headers(headers: Sequence[UploadHeader], binding: RoundBinding,
                   federation: Federation) -> tuple[str, ...]:
    """Check a decrypt request's list of upload headers; returns the contributors in order.

    Each header must come from a round participant listed once, carry ``n_chunks`` digests
    and ``n_tags`` tags, and verify against that hospital's PINNED key over
    :meth:`RoundBinding.statement` (so an upload of another session, round, key epoch or
    round context, e.g. a hospital given another model, does not verify). No chunk digest may
    appear twice in the list; at least ``min_contributors`` headers. ProtocolAbort otherwise,
    naming the first failure."""
    seen: list[str] = []
    digests: set[bytes] = set()
    for hdr in headers:
        _well_typed(hdr)
        h = hdr.hospital
        if h in seen or h not in binding.participants:
            raise ProtocolAbort(f"contributor {h!r} repeated or not a participant of this "
                                "round")
        if len(hdr.digests) != binding.n_chunks or len(hdr.tags) != binding.n_tags:
            raise ProtocolAbort(f"upload header of {h!r} has {len(hdr.digests)} digests / "
                                f"{len(hdr.tags)} tags, expected {binding.n_chunks} / "
                                f"{binding.n_tags}")
        try:
            federation.verify(h, hdr.signature, binding.statement(hdr))
        except CryptoError:
            raise ProtocolAbort(f"upload header of {h!r} does not verify for this session, "
                                "round, key epoch and round context") from None
        if digests.intersection(hdr.digests) or len(set(hdr.digests)) != len(hdr.digests):
            raise ProtocolAbort(f"upload of {h!r} repeats a listed ciphertext (duplicate)")
        digests.update(hdr.digests)
        seen.append(h)
    if len(seen) < binding.min_contributors:
        raise ProtocolAbort(f"refusing to decrypt an aggregate of {len(seen)} signed uploads "
                            f"(< {binding.min_contributors})")
    return tuple(seen)


def confirm_quorum(n_participants: int) -> int:
    """Confirmations a contributor list needs: a strict majority of the round's participants
    (each signs one list per round, so no two lists both reach it)."""
    return int(n_participants) // 2 + 1


def verify_confirmations(confirmations: Sequence[CkksConfirmation],
                         headers: Sequence[UploadHeader], binding: RoundBinding,
                         federation: Federation) -> tuple[str, ...]:
    """Check that a majority of the round's participants (:func:`confirm_quorum`) signed
    :func:`~fedrx.secagg.ckks.messages.confirm_statement` of exactly ``headers``; returns the
    confirming hospitals. Each counts once; an invalid one is ignored (it may be a dropped
    hospital's); ProtocolAbort if fewer than the quorum remain. So an aggregator cannot have
    two different lists decrypted in one round and difference the sums."""
    stmt = confirm_statement(binding.session_id, binding.round, binding.key_id,
                             binding.context, headers)
    good: list[str] = []
    for c in confirmations:
        if not isinstance(c, CkksConfirmation) or not isinstance(c.signature, bytes):
            continue
        if c.hospital in good or c.hospital not in binding.participants or c.round != binding.round:
            continue
        try:
            federation.verify(c.hospital, c.signature, stmt)
        except CryptoError:
            continue
        good.append(c.hospital)
    need = confirm_quorum(len(binding.participants))
    if len(good) < need:
        raise ProtocolAbort(f"contributor list confirmed by {len(good)} of "
                            f"{len(binding.participants)} participants (< {need}): refusing "
                            "to decrypt")
    return tuple(good)


def recompute_sum(uploads: Sequence[CkksUpload], binding: RoundBinding,
                  federation: Federation, load_chunk: Callable[[bytes, int], ts.CKKSVector],
                  chunk_sizes: Sequence[int]) -> tuple[tuple[str, ...], list[ts.CKKSVector]]:
    """Verify the listed uploads and add them up -> (contributors, sum chunk by chunk).

    :func:`verify_headers` on their headers (round and key id of each upload too), then
    every chunk ``i`` must hash to its signed digest before ``load_chunk(data, size_i)``
    parses it (a structural check raising CryptoError). ProtocolAbort on any failure."""
    for u in uploads:
        if u.round != binding.round or u.key_id != binding.key_id:
            raise ProtocolAbort(f"upload of {u.header.hospital!r} is for another round or key")
    who = verify_headers([u.header for u in uploads], binding, federation)
    total: list[ts.CKKSVector] | None = None
    for u in uploads:
        if len(u.chunks) != len(chunk_sizes):
            raise ProtocolAbort(f"upload of {u.header.hospital!r} has {len(u.chunks)} chunks")
        vecs = []
        for i, (data, size) in enumerate(zip(u.chunks, chunk_sizes, strict=True)):
            if hashlib.sha256(bytes(data)).digest() != u.header.digests[i]:
                raise ProtocolAbort(f"chunk {i} of {u.header.hospital!r} does not match its "
                                    "signed digest")
            try:
                vecs.append(load_chunk(data, size))
            except CryptoError as exc:
                raise ProtocolAbort(f"chunk {i} of {u.header.hospital!r}: {exc}") from None
        if total is None:
            total = vecs
        else:
            for acc, v in zip(total, vecs, strict=True):
                acc.add_(v)
    assert total is not None  # verify_headers required >= min_contributors >= 1
    return who, total


def check_tagged_sum(aggregate: Sequence[ts.CKKSVector], headers: Sequence[UploadHeader],
                     key: SumTagKey) -> None:
    """Raise ProtocolAbort unless the loaded ``aggregate`` has exactly the keyed linear tags of
    the sum of the listed ``headers``' uploads (call :func:`verify_headers` first). A
    ciphertext that is not that sum (the victim's upload scaled, plus a known offset, alone,
    twice, or with chunks moved) fails except with probability < 2^-55 (q^-k, q^-5)."""
    try:
        expected = add_tags((h.tags for h in headers), key.n_tags, key.q)
        actual = key.vector_tags(aggregate)
    except CryptoError as exc:
        raise ProtocolAbort(f"aggregate cannot be checked: {exc}") from None
    if actual != expected:
        raise ProtocolAbort("aggregate is not the sum of the listed uploads (its keyed tags "
                            "differ): refusing to decrypt")


@dataclass(frozen=True)
class SumBounds:
    """What the configuration allows one hospital's input ``[c * delta..., c]`` to be:
    ``c`` an integer in ``[0, max_count]``; ``||c * delta||_2 <= c * clip_norm`` when
    ``clip_norm`` is set; every entry ``|x| <= max_abs_input``."""

    max_count: int
    clip_norm: float | None
    max_abs_input: float

    def check_input(self, x: np.ndarray) -> None:
        """ProtocolAbort unless ONE hospital's input is within the bounds (after clipping)."""
        if float(np.max(np.abs(x))) > self.max_abs_input:
            raise ProtocolAbort(f"an input entry exceeds the CKKS range |x| <= "
                                f"{self.max_abs_input:.6g}")
        c = float(x[-1])
        if c != math.floor(c) or not 0 <= c <= self.max_count:
            raise ProtocolAbort(f"example count {c:.6g} is not an integer in "
                                f"[0, max_count={self.max_count}]")


def bounds_for(config: CkksConfig, n_participants: int) -> SumBounds:
    """The :class:`SumBounds` of ``config`` for a round of ``n_participants``."""
    return SumBounds(config.max_count, config.clip_norm,
                     config.params.max_abs_input(n_participants))


def check_sum_range(total: np.ndarray, n_contributors: int, bounds: SumBounds,
                    slack: float) -> None:
    """ProtocolAbort unless a decrypted sum of ``n_contributors`` inputs is one the
    configuration allows: count in ``[1, n * max_count]``, ``||weighted delta||_2 <=
    count * clip_norm`` (if set), every entry within ``n * max_abs_input``; each up to
    ``slack`` per slot (the release error bound). A garbage or forged sum (e.g. a count of
    -9e8) aborts instead of becoming a model update."""
    x = np.asarray(total, dtype=np.float64)
    if x.ndim != 1 or x.size < 1 or not np.all(np.isfinite(x)):
        raise ProtocolAbort("decrypted sum is empty or not finite")
    n = max(1, int(n_contributors))
    count = float(x[-1])
    if not 1 - slack <= count <= n * bounds.max_count + slack:
        raise ProtocolAbort(f"decrypted example count {count:.6g} outside [1, "
                            f"{n} x max_count = {n * bounds.max_count}]")
    if float(np.max(np.abs(x))) > n * bounds.max_abs_input + slack:
        raise ProtocolAbort("decrypted sum exceeds what the CKKS range allows")
    if bounds.clip_norm is not None and x.size > 1:
        norm = float(np.linalg.norm(x[:-1]))
        limit = (count + slack) * bounds.clip_norm + slack * math.sqrt(x.size - 1)
        if norm > limit:
            raise ProtocolAbort(f"decrypted weighted update norm {norm:.6g} exceeds count x "
                                f"clip_norm = {limit:.6g}")
