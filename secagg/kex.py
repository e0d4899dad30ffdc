"""Key agreement, key derivation and share encryption for secure aggregation.

* Key agreement: X25519 (``cryptography``); private keys come from the OS CSPRNG.
* Key derivation: HKDF-SHA256 with ``salt`` = the round session id and an ``info`` string
  that starts with a version/purpose label and length-prefixes every context field
  (:func:`encode_fields`), so no two contexts share an ``info`` value.
* AEAD: AES-256-GCM, 12-byte nonce, associated data binding session id, round, sender and
  receiver. A ciphertext whose tag, AD, key or nonce does not match raises
  :class:`~fedrx.errors.CiphertextError` (the message never includes key material).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedrx.errors import CiphertextError, CryptoError

KEY_BYTES = 32
NONCE_BYTES = 12
_RAW = serialization.Encoding.Raw


def encode_fields(*fields: bytes | str | int) -> bytes:
    """Injective encoding: each field as 4-byte big-endian length + bytes.

    ``str`` is UTF-8; ``int`` is 8-byte big-endian unsigned (rounds, indices).
    """
    parts: list[bytes] = []
    for f in fields:
        if isinstance(f, str):
            b = f.encode("utf-8")
        elif isinstance(f, (bytes, bytearray, memoryview)):
            b = bytes(f)
        elif isinstance(f, int) and not isinstance(f, bool):
            b = f.to_bytes(8, "big")
        else:
            raise TypeError(f"{type(f).__name__} is not an encodable field")
        parts.append(len(b).to_bytes(4, "big"))
        parts.append(b)
    return b"".join(parts)


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256(ikm, salt, info) -> ``length`` bytes."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def generate_keypair() -> tuple[X25519PrivateKey, bytes]:
    """A fresh X25519 key pair from the OS CSPRNG: (private key, 32-byte raw public key)."""
    sk = X25519PrivateKey.generate()
    return sk, public_bytes(sk)


def public_bytes(sk: X25519PrivateKey) -> bytes:
    return sk.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)


def private_bytes(sk: X25519PrivateKey) -> bytes:
    """Raw 32-byte private scalar (only for Shamir sharing; never log it)."""
    return sk.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def private_from_bytes(raw: bytes) -> X25519PrivateKey:
    try:
        return X25519PrivateKey.from_private_bytes(bytes(raw))
    except ValueError:
        raise CryptoError("malformed X25519 private key") from None


def agree(sk: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519 shared secret; rejects malformed or low-order peer keys."""
    try:
        return sk.exchange(X25519PublicKey.from_public_bytes(bytes(peer_public)))
    except ValueError:
        raise CryptoError("invalid X25519 peer public key") from None


def mask_key(shared: bytes, sid: bytes, round_: int, a: str, b: str) -> bytes:
    """Pairwise mask PRG key for the unordered pair {a, b}: order-independent by design."""
    lo, hi = sorted((a, b))
    return hkdf(shared, sid, encode_fields("fedrx/secagg/v1/pairwise-mask", round_, lo, hi))


def self_mask_key(seed: bytes, sid: bytes, round_: int, hospital: str) -> bytes:
    """Self-mask PRG key derived from the 32-byte seed ``b``."""
    return hkdf(seed, sid, encode_fields("fedrx/secagg/v1/self-mask", round_, hospital))


def share_key(shared: bytes, sid: bytes, round_: int, sender: str, receiver: str) -> bytes:
    """Directional AEAD key for shares sent from ``sender`` to ``receiver``."""
    return hkdf(shared, sid, encode_fields("fedrx/secagg/v1/share-enc", round_, sender, receiver))


def share_ad(sid: bytes, round_: int, sender: str, receiver: str) -> bytes:
    """Associated data of an encrypted share."""
    return encode_fields("fedrx/secagg/v1/share-ad", sid, round_, sender, receiver)


def seal(key: bytes, plaintext: bytes, ad: bytes,
         nonce: bytes | None = None) -> tuple[bytes, bytes]:
    """AES-256-GCM encrypt; returns (nonce, ciphertext||tag). Nonce from os.urandom if None."""
    if len(key) != KEY_BYTES:
        raise CryptoError("AEAD key must be 32 bytes")
    nonce = os.urandom(NONCE_BYTES) if nonce is None else bytes(nonce)
    if len(nonce) != NONCE_BYTES:
        raise CryptoError("AEAD nonce must be 12 bytes")
    return nonce, AESGCM(key).encrypt(nonce, plaintext, ad)


def open_sealed(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    """AES-256-GCM decrypt; raises CiphertextError (a CryptoError) on any authentication
    failure or a nonce of the wrong length."""
    if len(key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise CiphertextError("AEAD key/nonce has the wrong length")
    try:
        return AESGCM(key).decrypt(bytes(nonce), bytes(ciphertext), ad)
    except InvalidTag:
        raise CiphertextError("share ciphertext failed authentication") from None
