"""The ``ckks`` protection's stage messages (plain dataclasses a transport can encode) and
the statements a hospital signs (its upload; the round's one contributor list). Stages:
``keys``, ``upload``, ``confirm``, ``decrypt``."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedrx.secagg.ckks.keyring import CkksKeyring, EpochManifest, SealedKeyPackage

STAGES = ("keys", "upload", "confirm", "decrypt")
_UPLOAD_DOMAIN = b"fedrx-ckks-upload/2\x00"
_CONFIRM_DOMAIN = b"fedrx-ckks-confirm/1\x00"


def upload_statement(session_id: bytes, round_: int, key_id: bytes, hospital: str,
                     digests: Sequence[bytes], context: bytes = b"",
                     tags: Sequence[int] = ()) -> bytes:
    """The bytes a hospital signs for its upload (domain-separated, length-prefixed).

    ``context``: the digest of the round context the hospital verified itself (model hash,
    participants, round, session, configuration; ``fedrx.protocol.protections.ckks``), so a
    decryptor with another context cannot verify it. ``tags``: the upload's keyed linear tags
    (:mod:`fedrx.secagg.ckks.sum_tag`, each < 2^64), so a decryptor can check an aggregate is
    the sum of the listed uploads."""
    h = hospital.encode()
    return (_UPLOAD_DOMAIN + session_id + struct.pack(">QI", round_, len(h)) + h + key_id
            + struct.pack(">I", len(context)) + context
            + struct.pack(">I", len(digests)) + b"".join(digests)
            + struct.pack(f">I{len(tags)}Q", len(tags), *tags))


def confirm_statement(session_id: bytes, round_: int, key_id: bytes, context: bytes,
                      headers: Sequence[UploadHeader]) -> bytes:
    """The bytes a hospital signs to confirm the round's contributor list: every listed
    upload by hospital and upload signature (which covers its digests and tags), in order.
    A hospital signs at most one list per round, so with a majority of participants required
    two different lists (whose decryptions could be differenced) cannot both be confirmed."""
    out = [_CONFIRM_DOMAIN, session_id, struct.pack(">QI", round_, len(context)), context,
           key_id, struct.pack(">I", len(headers))]
    for hdr in headers:
        h = hdr.hospital.encode()
        out += [struct.pack(">II", len(h), len(hdr.signature)), h, hdr.signature]
    return b"".join(out)


# ------------------------------------------------------------------------------ messages


@dataclass(frozen=True)
class CkksKeyringRequest:
    """Aggregator -> key holder: create key epoch ``epoch`` for this session."""

    session_id: bytes
    round: int
    epoch: int


@dataclass(frozen=True)
class CkksKeyringReply:
    """Key holder -> aggregator: the new epoch (no secret in the clear)."""

    round: int
    keyring: CkksKeyring


@dataclass(frozen=True)
class KeyDelivery:
    """The epoch's signed manifest, public context and THIS hospital's sealed package."""

    manifest: EpochManifest
    public_context: bytes
    package: SealedKeyPackage


@dataclass(frozen=True)
class CkksUploadRequest:
    session_id: bytes
    round: int
    epoch: int
    key_id: bytes
    vector_length: int
    delivery: KeyDelivery | None = None


@dataclass(frozen=True)
class UploadHeader:
    """A hospital's signed statement of what it uploaded: SHA-256 of each chunk, in order,
    and the upload's keyed linear tags (:mod:`fedrx.secagg.ckks.sum_tag`). The signature
    covers :func:`upload_statement` of these with the round's session, round, key id and
    agreed context digest (which the header does not carry: every verifier uses its own)."""

    hospital: str
    digests: tuple[bytes, ...]
    signature: bytes
    tags: tuple[int, ...] = ()


@dataclass(frozen=True)
class CkksUpload:
    """One hospital's encrypted update: header first, then ``chunks`` (one ciphertext each).

    A streaming transport can send ``header`` then each chunk; the aggregator checks chunk
    ``i`` against ``header.digests[i]`` before parsing it.
    """

    round: int
    key_id: bytes
    header: UploadHeader
    chunks: tuple[bytes, ...]

    def __repr__(self) -> str:
        return (f"CkksUpload(hospital={self.header.hospital!r}, round={self.round}, "
                f"chunks={len(self.chunks)}, bytes={sum(len(c) for c in self.chunks)})")


@dataclass(frozen=True)
class CkksConfirmRequest:
    """Aggregator -> every live participant: the ONE list of uploads this round may decrypt."""

    session_id: bytes
    round: int
    key_id: bytes
    contributors: tuple[UploadHeader, ...]


@dataclass(frozen=True)
class CkksConfirmation:
    """A participant's signature over :func:`confirm_statement` of the list it was sent."""

    hospital: str
    round: int
    signature: bytes


@dataclass(frozen=True)
class CkksDecryptRequest:
    """The aggregate, its listed uploads' headers, and a majority of the participants'
    confirmations of exactly that list."""

    session_id: bytes
    round: int
    key_id: bytes
    contributors: tuple[UploadHeader, ...]
    aggregate: tuple[bytes, ...]
    confirmations: tuple[CkksConfirmation, ...] = ()

    def __repr__(self) -> str:
        return (f"CkksDecryptRequest(round={self.round}, contributors="
                f"{[c.hospital for c in self.contributors]}, chunks={len(self.aggregate)})")


@dataclass(frozen=True)
class CkksDecryption:
    """The released (flooded, rounded) sum and the bound the decryptor applied."""

    hospital: str
    round: int
    key_id: bytes
    total: np.ndarray
    error_bound: float
