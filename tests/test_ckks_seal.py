"""Sealed boxes (fedrx-seal/1): known answers, label binding, tampering."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from fedrx.errors import CryptoError
from fedrx.secagg.seal import SealLabel, _seal_with, open_sealed, seal

VECTORS = json.loads((Path(__file__).parent / "vectors" / "ckks_seal.json").read_text())


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """Independent RFC 5869 implementation (stdlib hmac) to cross-check the construction."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, t, i = b"", b"", 1
    while len(okm) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        okm, i = okm + t, i + 1
    return okm[:length]


def _raw(key) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _label(v: dict) -> SealLabel:
    return SealLabel(v["purpose"], v["recipient"], v["epoch"], bytes.fromhex(v["context_id"]))


def test_reference_hkdf_matches_rfc5869_case1():
    c = VECTORS["rfc5869_case1"]
    okm = _hkdf_sha256(bytes.fromhex(c["ikm"]), bytes.fromhex(c["salt"]),
                       bytes.fromhex(c["info"]), c["length"])
    assert okm.hex() == c["okm"]


def test_seal_known_answer():
    v = VECTORS["seal"]
    eph = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["ephemeral_private"]))
    rcpt = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["recipient_private"]))
    assert _raw(eph.public_key()).hex() == v["ephemeral_public"]
    assert _raw(rcpt.public_key()).hex() == v["recipient_public"]
    shared = eph.exchange(rcpt.public_key())
    assert shared.hex() == v["shared_secret"]  # RFC 7748 section 6.1
    label = _label(v)
    ad = label.associated_data(_raw(eph.public_key()), _raw(rcpt.public_key()))
    assert ad.hex() == v["associated_data"]
    key = _hkdf_sha256(shared, _raw(eph.public_key()) + _raw(rcpt.public_key()),
                       b"fedrx-seal/1 key" + ad, 32)
    assert key.hex() == v["aead_key"]
    box = _seal_with(eph, bytes.fromhex(v["nonce"]), rcpt.public_key(),
                     bytes.fromhex(v["plaintext"]), label)
    assert box.hex() == v["box"]
    # the pinned box opens with the independently derived key, and via open_sealed
    assert ChaCha20Poly1305(key).decrypt(box[33:45], box[45:], ad).hex() == v["plaintext"]
    assert open_sealed(rcpt, bytes.fromhex(v["box"]), label).hex() == v["plaintext"]


@pytest.mark.parametrize("change", [
    {"purpose": "other-purpose"}, {"recipient": "hospital-c"}, {"epoch": 8},
    {"context_id": bytes(32)},
])
def test_open_fails_under_another_label(change):
    v = VECTORS["seal"]
    rcpt = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["recipient_private"]))
    with pytest.raises(CryptoError, match="does not open"):
        open_sealed(rcpt, bytes.fromhex(v["box"]), replace(_label(v), **change))


def test_open_fails_for_other_recipient_and_tampering():
    label = SealLabel("ckks-secret-key", "h1", 1, b"k" * 32)
    alice, bob = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    box = seal(alice.public_key(), b"secret material", label)
    assert open_sealed(alice, box, label) == b"secret material"
    with pytest.raises(CryptoError):
        open_sealed(bob, box, label)
    for pos in (0, 5, 40, len(box) - 1):
        bad = bytearray(box)
        bad[pos] ^= 0x01
        with pytest.raises(CryptoError):
            open_sealed(alice, bytes(bad), label)
    with pytest.raises(CryptoError, match="too short"):
        open_sealed(alice, box[:20], label)


def test_seal_is_randomised_and_message_has_no_secret():
    label = SealLabel("p", "h1", 0, b"")
    k = X25519PrivateKey.generate()
    a, b = seal(k.public_key(), b"x" * 10, label), seal(k.public_key(), b"x" * 10, label)
    assert a != b and len(a) == 10 + 61
    with pytest.raises(CryptoError) as err:
        open_sealed(X25519PrivateKey.generate(), a, label)
    assert "x" * 10 not in str(err.value)
