"""Sealed boxes: encrypt a secret to one hospital's long-term X25519 identity key.

Construction (``fedrx-seal/1``), for a recipient public key ``R`` and a :class:`SealLabel`:

1. ``e`` = fresh ephemeral X25519 private key (OS CSPRNG), ``E = e·G`` its public key.
2. ``shared = X25519(e, R)`` (32 bytes); an all-zero result (low-order ``R``) is refused.
3. ``ad = label.associated_data(E, R)``: a length-prefixed encoding of the version, purpose,
   recipient id, key epoch, context id (e.g. the epoch's key id), ``E`` and ``R``.
4. ``key = HKDF-SHA256(ikm=shared, salt=E || R, info="fedrx-seal/1 key" || ad, length=32)``.
5. ``nonce`` = 12 random bytes; ``ct = ChaCha20-Poly1305(key).encrypt(nonce, plaintext, ad)``.
6. The box is ``0x01 || E (32) || nonce (12) || ct`` (``ct`` carries the 16-byte tag).

Opening recomputes ``ad`` from the label the RECIPIENT expects, so a box addressed to another
hospital, another epoch, another purpose or another context fails authentication. The box is
anonymous: anyone can seal to ``R``; authenticity of the sender is the caller's job (fedrx
signs the box with the sender's Ed25519 identity key, see :mod:`fedrx.secagg.ckks`).
Sealed keys have no forward secrecy: whoever later obtains the recipient's X25519 private key
can open every retained box addressed to it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedrx.errors import CryptoError

SEAL_VERSION = 1
_VERSION_LABEL = b"fedrx-seal/1"
_KEY_INFO = b"fedrx-seal/1 key"
_HEADER = 1 + 32 + 12
_TAG = 16
#: Largest plaintext :func:`seal` accepts and :func:`open_sealed` will try to open (bytes).
MAX_SEALED_PLAINTEXT = 16 * 1024 * 1024


@dataclass(frozen=True)
class SealLabel:
    """What a sealed box is for; bound into the AEAD associated data and the HKDF info.

    ``purpose`` names the kind of secret (e.g. ``"ckks-secret-key"``); ``recipient`` is the
    hospital id the box is addressed to; ``epoch`` is the key epoch (>= 0); ``context_id`` is
    an opaque id of the enclosing context (up to 64 bytes, e.g. a 32-byte key id).
    """

    purpose: str
    recipient: str
    epoch: int
    context_id: bytes

    def associated_data(self, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
        """Canonical AD bytes: every field length-prefixed (u32, big-endian), epoch as u64."""
        if not 0 <= self.epoch < 2**64:
            raise CryptoError("seal label epoch out of range")
        if len(self.context_id) > 64:
            raise CryptoError("seal label context id longer than 64 bytes")
        parts = (_VERSION_LABEL, self.purpose.encode(), self.recipient.encode(),
                 struct.pack(">Q", self.epoch), bytes(self.context_id),
                 ephemeral_public, recipient_public)
        return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _derive_key(shared: bytes, eph_pub: bytes, rcpt_pub: bytes, ad: bytes) -> bytes:
    if shared == bytes(32):
        raise CryptoError("X25519 produced an all-zero shared secret (low-order public key)")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=eph_pub + rcpt_pub,
                info=_KEY_INFO + ad).derive(shared)


def _seal_with(ephemeral: X25519PrivateKey, nonce: bytes, recipient: X25519PublicKey,
               plaintext: bytes, label: SealLabel) -> bytes:
    """Deterministic core of :func:`seal` (fixed ephemeral key and nonce: for test vectors)."""
    if len(nonce) != 12:
        raise CryptoError("seal nonce must be 12 bytes")
    if len(plaintext) > MAX_SEALED_PLAINTEXT:
        raise CryptoError(f"sealed plaintext larger than {MAX_SEALED_PLAINTEXT} bytes")
    eph_pub = _raw_public(ephemeral.public_key())
    rcpt_pub = _raw_public(recipient)
    try:
        shared = ephemeral.exchange(recipient)
    except ValueError:
        raise CryptoError("X25519 exchange failed (low-order recipient key)") from None
    ad = label.associated_data(eph_pub, rcpt_pub)
    key = _derive_key(shared, eph_pub, rcpt_pub, ad)
    ct = ChaCha20Poly1305(key).encrypt(nonce, plaintext, ad)
    return bytes([SEAL_VERSION]) + eph_pub + nonce + ct


def seal(recipient: X25519PublicKey, plaintext: bytes, label: SealLabel) -> bytes:
    """Seal ``plaintext`` to ``recipient`` (fresh ephemeral key and nonce from the OS CSPRNG).

    Output length is ``len(plaintext) + 61`` bytes.
    """
    return _seal_with(X25519PrivateKey.generate(), os.urandom(12), recipient, plaintext, label)


def open_sealed(recipient: X25519PrivateKey, box: bytes, label: SealLabel) -> bytes:
    """Open a box sealed to ``recipient``'s public key under ``label``.

    Raises :class:`CryptoError` (without any key material in the message) if the box is
    malformed, too large, addressed to another key or label, or was modified.
    """
    if not isinstance(box, (bytes, bytearray)) or len(box) < _HEADER + _TAG:
        raise CryptoError("sealed box too short or not bytes")
    if len(box) > MAX_SEALED_PLAINTEXT + _HEADER + _TAG:
        raise CryptoError("sealed box larger than the limit")
    box = bytes(box)
    if box[0] != SEAL_VERSION:
        raise CryptoError(f"unsupported sealed box version {box[0]}")
    eph_pub, nonce, ct = box[1:33], box[33:45], box[45:]
    rcpt_pub = _raw_public(recipient.public_key())
    try:
        shared = recipient.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    except ValueError:
        raise CryptoError("sealed box carries an invalid ephemeral key") from None
    ad = label.associated_data(eph_pub, rcpt_pub)
    key = _derive_key(shared, eph_pub, rcpt_pub, ad)
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, ct, ad)
    except InvalidTag:
        raise CryptoError(
            f"sealed box for {label.recipient!r} (purpose {label.purpose!r}, epoch {label.epoch})"
            " does not open: wrong recipient key, wrong label, or modified") from None
