"""Sealed boxes: encrypt a secret to one hospital's long-term X25519 identity key.

Construction (``fedrx-seal/2``): HPKE base mode (RFC 9180) with DHKEM(X25519, HKDF-SHA256),
HKDF-SHA256 and ChaCha20-Poly1305, single-shot, from pyca ``cryptography``
(:mod:`cryptography.hazmat.primitives.hpke`). For a recipient public key ``R`` and a
:class:`SealLabel`:

1. ``info = label.info()``: a length-prefixed encoding of the version, purpose, recipient
   id, key epoch and context id (e.g. the epoch's key id). HPKE binds it into the key
   schedule; the ephemeral key ``enc`` and ``R`` are bound by the KEM itself.
2. ``enc || ct = HPKE.Seal(R, info, aad="", plaintext)`` with a fresh ephemeral key (OS
   CSPRNG); ``enc`` is 32 bytes, ``ct`` carries the 16-byte tag.
3. The box is ``0x02 || enc || ct``: ``len(plaintext) + 49`` bytes.

Opening recomputes ``info`` from the label the RECIPIENT expects, so a box addressed to
another hospital, another epoch, another purpose or another context fails authentication.
The box is anonymous: anyone can seal to ``R``; authenticity of the sender is the caller's job
(fedrx signs the box with the sender's Ed25519 identity key, see
:mod:`fedrx.secagg.ckks.keyring`). Sealed keys have no forward secrecy: whoever later obtains
the recipient's X25519 private key can open every retained box addressed to it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedrx.errors import CryptoError

SEAL_VERSION = 2
_VERSION_LABEL = b"fedrx-seal/2"
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
_ENC = 32
_TAG = 16
#: Bytes a box adds to its plaintext: version byte, HPKE encapsulated key, AEAD tag.
SEAL_OVERHEAD = 1 + _ENC + _TAG
#: Largest plaintext :func:`seal` accepts and :func:`open_sealed` will try to open (bytes).
MAX_SEALED_PLAINTEXT = 16 * 1024 * 1024


@dataclass(frozen=True)
class SealLabel:
    """What a sealed box is for; bound into the HPKE ``info``.

    ``purpose`` names the kind of secret (e.g. ``"ckks-secret-key"``); ``recipient`` is the
    hospital id the box is addressed to; ``epoch`` is the key epoch (>= 0); ``context_id`` is
    an opaque id of the enclosing context (up to 64 bytes, e.g. a 32-byte key id).
    """

    purpose: str
    recipient: str
    epoch: int
    context_id: bytes

    def info(self) -> bytes:
        """Canonical HPKE info bytes: every field length-prefixed (u32, big-endian), epoch
        as u64."""
        if not 0 <= self.epoch < 2**64:
            raise CryptoError("seal label epoch out of range")
        if len(self.context_id) > 64:
            raise CryptoError("seal label context id longer than 64 bytes")
        parts = (_VERSION_LABEL, self.purpose.encode(), self.recipient.encode(),
                 struct.pack(">Q", self.epoch), bytes(self.context_id))
        return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def seal(recipient: X25519PublicKey, plaintext: bytes, label: SealLabel) -> bytes:
    """Seal ``plaintext`` to ``recipient`` (fresh HPKE ephemeral key from the OS CSPRNG).

    Output length is ``len(plaintext) + SEAL_OVERHEAD`` (49) bytes.
    """
    if len(plaintext) > MAX_SEALED_PLAINTEXT:
        raise CryptoError(f"sealed plaintext larger than {MAX_SEALED_PLAINTEXT} bytes")
    try:
        body = SUITE.encrypt(bytes(plaintext), recipient, info=label.info())
    except ValueError:
        raise CryptoError("HPKE encapsulation failed (low-order recipient key)") from None
    return bytes([SEAL_VERSION]) + body


def open_sealed(recipient: X25519PrivateKey, box: bytes, label: SealLabel) -> bytes:
    """Open a box sealed to ``recipient``'s public key under ``label``.

    Raises :class:`CryptoError` (without any key material in the message) if the box is
    malformed, too large, addressed to another key or label, or was modified.
    """
    if not isinstance(box, (bytes, bytearray)) or len(box) < SEAL_OVERHEAD:
        raise CryptoError("sealed box too short or not bytes")
    if len(box) > MAX_SEALED_PLAINTEXT + SEAL_OVERHEAD:
        raise CryptoError("sealed box larger than the limit")
    box = bytes(box)
    if box[0] != SEAL_VERSION:
        raise CryptoError(f"unsupported sealed box version {box[0]}")
    try:
        return SUITE.decrypt(box[1:], recipient, info=label.info())
    except (InvalidTag, ValueError):
        raise CryptoError(
            f"sealed box for {label.recipient!r} (purpose {label.purpose!r}, epoch {label.epoch})"
            " does not open: wrong recipient key, wrong label, or modified") from None
