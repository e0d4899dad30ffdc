"""Messages of the pairwise-mask protocol (one dataclass per message; the wire codec in
:mod:`fedrx.nodes.codec` and ``proto/fedrx/v1/fedrx.proto`` mirror these fields).

Keys are 32 raw bytes (X25519 public keys), signatures 64 bytes (Ed25519), Shamir shares
``shamir.SHARE_BYTES`` (33) bytes. ``round`` is the federation round number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SELF_MASK = "self_mask"
SECRET_KEY = "secret_key"  # noqa: S105 (a share kind label, not a secret)
"""The two kinds of :class:`RevealedShare`: a share of the self-mask seed ``b`` (owner
survived) or of the owner's mask secret key (owner dropped after share_keys)."""


@dataclass(frozen=True)
class AdvertiseRequest:
    round: int


@dataclass(frozen=True)
class AdvertiseKeys:
    """Per-round public keys (32 raw bytes each), Ed25519-signed by ``hospital``."""

    hospital: str
    round: int
    enc_public: bytes
    mask_public: bytes
    signature: bytes


@dataclass(frozen=True)
class ShareKeysRequest:
    round: int
    advertised: tuple[AdvertiseKeys, ...]


@dataclass(frozen=True)
class EncryptedShare:
    """AES-GCM encryption of ``b_share || mask_key_share`` (2 x ``shamir.SHARE_BYTES``).

    Sender and receiver are not repeated in the plaintext: they are bound by the directional
    key (``kex.share_key``) and the associated data (``kex.share_ad``).
    """

    sender: str
    receiver: str
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class ShareKeysReply:
    hospital: str
    round: int
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True)
class MaskedInputRequest:
    round: int
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True)
class MaskedInput:
    """Masked vector, ``length`` entries of ``modulus_bits`` bits, bit-packed."""

    hospital: str
    round: int
    modulus_bits: int
    length: int
    packed: bytes = field(repr=False)


@dataclass(frozen=True)
class ConsistencyRequest:
    round: int
    survivors: tuple[str, ...]


@dataclass(frozen=True)
class ConsistencySignature:
    """``hospital``'s signature over its survivor list (its own neighbourhood's part of U3).

    Relayed to a neighbour ``w`` in an :class:`UnmaskRequest`, ``outside`` carries the
    signed names ``w`` cannot know (those outside ``w``'s neighbourhood); ``w`` rebuilds the
    rest from its own list, so the signature verifies only if the signer agrees with ``w``
    on every hospital they both neighbour. Empty on the complete graph and in the reply.
    """

    hospital: str
    round: int
    signature: bytes
    outside: tuple[str, ...] = ()


@dataclass(frozen=True)
class UnmaskRequest:
    round: int
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    signatures: tuple[ConsistencySignature, ...] = ()


@dataclass(frozen=True)
class RevealedShare:
    """One Shamir share of ``owner``'s secret of kind ``self_mask`` or ``secret_key``."""

    owner: str
    kind: str
    share: bytes = field(repr=False)


@dataclass(frozen=True)
class UnmaskReply:
    hospital: str
    round: int
    shares: tuple[RevealedShare, ...]
