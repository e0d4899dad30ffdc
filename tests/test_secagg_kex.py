"""Known-answer tests of key agreement (X25519), key derivation (HKDF) and the share AEAD."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedrx.errors import (
    CiphertextError,
    CryptoError,
)
from fedrx.secagg import kex, prg

KAT = json.loads((Path(__file__).parent / "vectors" / "secagg_kat.json").read_text())


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _lp(*parts: bytes) -> bytes:
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def test_x25519_rfc7748_vector():
    v = KAT["x25519_rfc7748"]
    a = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["alice_private"]))
    b = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["bob_private"]))
    assert kex.public_bytes(a).hex() == v["alice_public"]
    assert kex.public_bytes(b).hex() == v["bob_public"]
    assert kex.agree(a, bytes.fromhex(v["bob_public"])).hex() == v["shared"]
    assert kex.agree(b, bytes.fromhex(v["alice_public"])).hex() == v["shared"]


def test_hkdf_derivations_pinned_and_recomputed():
    v = KAT["kdf"]
    a = kex.private_from_bytes(bytes.fromhex(v["sk_a"]))
    shared = kex.agree(a, bytes.fromhex(v["pk_b"]))
    assert shared.hex() == v["shared"]
    sid, seed, r = bytes.fromhex(v["sid"]), bytes.fromhex(v["seed"]), v["round"]
    rb = r.to_bytes(8, "big")
    mk = kex.mask_key(shared, sid, r, "h1", "h0")
    assert mk == kex.mask_key(shared, sid, r, "h0", "h1")  # order-independent
    assert mk.hex() == v["mask_key_h0_h1"] == _hkdf(
        shared, sid, _lp(b"fedrx/secagg/v1/pairwise-mask", rb, b"h0", b"h1")).hex()
    assert kex.self_mask_key(seed, sid, r, "h0").hex() == v["self_mask_key_h0"] == _hkdf(
        seed, sid, _lp(b"fedrx/secagg/v1/self-mask", rb, b"h0")).hex()
    assert kex.share_key(shared, sid, r, "h0", "h1").hex() == v["share_key_h0_to_h1"]
    assert kex.share_key(shared, sid, r, "h1", "h0").hex() == v["share_key_h1_to_h0"]
    assert v["share_key_h0_to_h1"] != v["share_key_h1_to_h0"]  # directional


def test_mask_keys_bound_to_session_round_and_pair():
    """P3: changing the session id, round or pair yields an unrelated key and mask."""
    shared, sid = secrets.token_bytes(32), secrets.token_bytes(32)
    base = kex.mask_key(shared, sid, 1, "a", "b")
    others = [kex.mask_key(shared, secrets.token_bytes(32), 1, "a", "b"),
              kex.mask_key(shared, sid, 2, "a", "b"), kex.mask_key(shared, sid, 1, "a", "c")]
    assert len({base, *others}) == 4
    v0 = prg.prg_vector(base, 256, 32)
    for k in others:
        assert np.mean(prg.prg_vector(k, 256, 32) == v0) < 0.02


# ----------------------------------------------------------------------------- AEAD


def test_aead_kat_and_direct_aesgcm():
    v = KAT["aead"]
    key, nonce = bytes.fromhex(v["key"]), bytes.fromhex(v["nonce"])
    pt, ad = bytes.fromhex(v["plaintext"]), bytes.fromhex(v["ad"])
    _, ct = kex.seal(key, pt, ad, nonce)
    assert ct.hex() == v["ciphertext"] == AESGCM(key).encrypt(nonce, pt, ad).hex()
    kd = KAT["kdf"]
    assert ad == kex.share_ad(bytes.fromhex(kd["sid"]), kd["round"], "h0", "h1")
    assert kex.open_sealed(key, nonce, ct, ad) == pt


def test_aead_rejects_tampering_wrong_ad_and_wrong_receiver():
    """P6: altered ciphertext, altered AD (other round/sender/receiver) are rejected."""
    v = KAT["aead"]
    key, nonce = bytes.fromhex(v["key"]), bytes.fromhex(v["nonce"])
    ct, ad = bytes.fromhex(v["ciphertext"]), bytes.fromhex(v["ad"])
    bad = bytearray(ct)
    bad[3] ^= 1
    sid = bytes.fromhex(KAT["kdf"]["sid"])
    for c, a in [(bytes(bad), ad), (ct, kex.share_ad(sid, 4, "h0", "h1")),
                 (ct, kex.share_ad(sid, 3, "h0", "h2")), (ct, kex.share_ad(sid, 3, "h1", "h0"))]:
        with pytest.raises(CryptoError, match="authentication"):
            kex.open_sealed(key, nonce, c, a)


def test_encode_fields_is_injective_on_boundaries():
    assert kex.encode_fields("ab", "c") != kex.encode_fields("a", "bc")
    assert kex.encode_fields(1) != kex.encode_fields(b"\x01")


def test_aead_failure_is_a_ciphertext_error():
    """A tampered AEAD share (or a nonce of the wrong length) raises CiphertextError, a
    CryptoError (the protocol catches it as such)."""
    key, ad = bytes(32), b"ad"
    nonce, ct = kex.seal(key, b"x" * 66, ad)
    with pytest.raises(CiphertextError, match="failed authentication"):
        kex.open_sealed(key, nonce, ct[:-1] + bytes([ct[-1] ^ 1]), ad)
    with pytest.raises(CiphertextError):
        kex.open_sealed(key, nonce[:-1], ct, ad)
    assert issubclass(CiphertextError, CryptoError)
