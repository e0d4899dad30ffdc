"""``ckks-threshold`` stage messages (plain dataclasses a transport can encode) and the
statements hospitals sign with their pinned Ed25519 identity keys.

Stages, in order: ``crs`` (signed nonces), ``keygen`` (public key contributions and sealed
Shamir shares), ``keyshares`` (relay; each member combines its share and acknowledges the
joint key), ``upload``, ``decrypt``. The three key stages run only when the aggregator opens
a new key epoch; otherwise nobody is asked in them.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

STAGES = ("crs", "keygen", "keyshares", "upload", "decrypt")


def statement(domain: str, *parts: bytes | str | int | Sequence[str]) -> bytes:
    """Domain-separated, length-prefixed bytes to sign (ints as u64, str lists joined)."""
    out = [b"fedrx-thckks/1\x00", domain.encode(), b"\x00"]
    for p in parts:
        if isinstance(p, int):
            b = struct.pack(">Q", p)
        elif isinstance(p, str):
            b = p.encode()
        elif isinstance(p, bytes):
            b = p
        else:
            b = b"".join(struct.pack(">I", len(s.encode())) + s.encode() for s in p)
        out.append(struct.pack(">I", len(b)) + b)
    return b"".join(out)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def crs_seed(federation_digest: bytes, session_id: bytes, epoch: int,
             members: Sequence[str], nonces: Sequence[bytes]) -> bytes:
    """The common reference string's seed: hash of the pinned federation, the session, the
    epoch, and EVERY member's signed nonce (the aggregator chooses none of them)."""
    return sha256(statement("crs-seed", federation_digest, session_id, epoch, members,
                            b"".join(nonces)))


def key_id_of(joint_public: bytes, seed: bytes, epoch: int, members: Sequence[str],
              threshold: int) -> bytes:
    """Names an epoch: its joint public key, seed, epoch number, members and threshold."""
    return sha256(statement("key-id", sha256(joint_public), seed, epoch, members, threshold))


# ---------------------------------------------------------------------- key epoch


@dataclass(frozen=True)
class ThCrsRequest:
    session_id: bytes
    round: int
    epoch: int
    members: tuple[str, ...]
    threshold: int


@dataclass(frozen=True)
class ThNonce:
    """A member's signed 32-byte contribution to the epoch's seed."""

    hospital: str
    epoch: int
    nonce: bytes
    signature: bytes


@dataclass(frozen=True)
class ThKeygenRequest:
    session_id: bytes
    round: int
    epoch: int
    members: tuple[str, ...]
    threshold: int
    nonces: tuple[ThNonce, ...]


@dataclass(frozen=True)
class ThContribution:
    """A member's public key contribution b_i and the SHA-256 of the sealed Shamir share it
    made for each member (member order), signed together with the epoch's seed."""

    hospital: str
    epoch: int
    public: bytes
    share_digests: tuple[bytes, ...]
    signature: bytes

    def __repr__(self) -> str:
        return f"ThContribution(hospital={self.hospital!r}, epoch={self.epoch})"


@dataclass(frozen=True)
class ThKeygenReply:
    contribution: ThContribution
    sealed_shares: tuple[bytes, ...]

    def __repr__(self) -> str:
        return f"ThKeygenReply({self.contribution.hospital!r}, shares={len(self.sealed_shares)})"


@dataclass(frozen=True)
class ThKeysharesRequest:
    session_id: bytes
    round: int
    epoch: int
    contributions: tuple[ThContribution, ...]
    sealed_shares: tuple[bytes, ...]

    def __repr__(self) -> str:
        return f"ThKeysharesRequest(epoch={self.epoch}, members={len(self.contributions)})"


@dataclass(frozen=True)
class ThKeyAck:
    """A member's signed acknowledgement of the joint key it computed itself."""

    hospital: str
    epoch: int
    key_id: bytes
    signature: bytes


# ---------------------------------------------------------------------- one round


@dataclass(frozen=True)
class ThUploadRequest:
    session_id: bytes
    round: int
    key_id: bytes
    vector_length: int


@dataclass(frozen=True)
class ThUpload:
    """A hospital's encrypted update under the joint key (one ciphertext per chunk), signed
    with ``(session, round, key id, hospital, SHA-256 of every chunk)``."""

    hospital: str
    round: int
    key_id: bytes
    chunks: tuple[bytes, ...]
    signature: bytes

    def __repr__(self) -> str:
        return (f"ThUpload(hospital={self.hospital!r}, round={self.round}, "
                f"chunks={len(self.chunks)})")


def upload_statement(session_id: bytes, round_: int, key_id: bytes, hospital: str,
                     chunks: Sequence[bytes]) -> bytes:
    return statement("upload", session_id, round_, key_id, hospital,
                     b"".join(sha256(c) for c in chunks))


@dataclass(frozen=True)
class ThDecryptRequest:
    """Decrypt the SUM of ``uploads`` (each hospital recomputes it) as one of ``decryptors``
    (t members; the first is the lead)."""

    session_id: bytes
    round: int
    key_id: bytes
    uploads: tuple[ThUpload, ...]
    decryptors: tuple[str, ...]

    def __repr__(self) -> str:
        return (f"ThDecryptRequest(round={self.round}, uploads="
                f"{[u.hospital for u in self.uploads]}, decryptors={list(self.decryptors)})")


@dataclass(frozen=True)
class ThPartial:
    """A decryptor's flooded partial decryptions of the sum, one per chunk, and the summed
    hospitals it computed them for."""

    hospital: str
    round: int
    key_id: bytes
    summed: tuple[str, ...]
    partials: tuple[bytes, ...]

    def __repr__(self) -> str:
        return f"ThPartial(hospital={self.hospital!r}, chunks={len(self.partials)})"

