"""CKKS key epochs: key custody, sealed delivery, rotation, the signed manifest."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from ckks_epoch import HOSPITALS, epoch_fixtures

from fedrx.errors import ConfigError, CryptoError
from fedrx.secagg.ckks.keyring import SECRET_KEY_PURPOSE, CkksKeyring, SealedKeyPackage
from fedrx.secagg.identity import Federation, Identity
from fedrx.secagg.seal import SealLabel, seal

fed, ring, keys = epoch_fixtures()


def test_every_hospital_opens_its_own_package_same_key(fed, ring, keys):
    assert set(ring.packages) == set(HOSPITALS)
    x = np.linspace(-3, 3, 50)
    ct = keys["h0"].encrypt(x)
    for h in HOSPITALS:
        assert keys[h].key_id == ring.key_id
        assert np.allclose(keys[h].decrypt(ct, 50), x, atol=1e-7)


def test_hospital_cannot_open_another_hospitals_package(fed, ring):
    ids, federation = fed
    with pytest.raises(CryptoError, match="addressed to 'h2'"):
        ring.open(ids["h1"], federation, package=ring.packages["h2"])
    # relabelling the package breaks the key holder's signature
    relabelled = replace(ring.packages["h2"], recipient="h1")
    with pytest.raises(CryptoError, match="not signed"):
        ring.open(ids["h1"], federation, package=relabelled)
    # even with a valid signature, h1's X25519 key does not open a box sealed to h2
    from fedrx.secagg.seal import open_sealed
    with pytest.raises(CryptoError, match="does not open"):
        open_sealed(ids["h1"].seal_private(), ring.packages["h2"].sealed,
                    SealLabel(SECRET_KEY_PURPOSE, "h2", 1, ring.key_id))


def test_aggregator_cannot_substitute_its_own_key(fed, ring):
    ids, federation = fed
    # the relaying aggregator seals a key of its own choosing to h1; it has no holder signature
    box = seal(federation.get("h1").seal_key(), b"FRXCKKS1" + bytes(40),
               SealLabel(SECRET_KEY_PURPOSE, "h1", 1, ring.key_id))
    fake = SealedKeyPackage("h1", 1, ring.key_id, box, b"\x00" * 64)
    with pytest.raises(CryptoError, match="not signed"):
        ring.open(ids["h1"], federation, package=fake)
    # a package signed by another hospital (not the key holder) is refused too
    p = SealedKeyPackage("h1", 1, ring.key_id, box, b"")
    signed_by_h2 = replace(p, signature=ids["h2"].sign(p.statement()))
    with pytest.raises(CryptoError, match="not signed"):
        ring.open(ids["h1"], federation, package=signed_by_h2)


def test_non_member_cannot_open(fed, ring):
    _, federation = fed
    with pytest.raises(CryptoError):
        ring.open(Identity.generate("intruder"), federation, package=ring.packages["h0"])


def test_secrets_never_in_repr(fed, ring, keys):
    k = keys["h0"]
    text = repr(k) + repr(ring.packages["h0"]) + repr(ring.server_context(fed[1]))
    assert "hidden" in repr(k)
    assert ring.packages["h0"].sealed[:16].hex() not in text
    assert k._flood_key.hex() not in text


def test_key_rotation_old_ciphertexts_do_not_decrypt(fed, ring, keys):
    ids, federation = fed
    ring2 = CkksKeyring.create(ids["h1"], federation, epoch=2,
                               federation_id=ring.manifest.federation_id)
    assert ring2.key_id != ring.key_id
    new = ring2.open(ids["h2"], federation)
    x = np.full(20, 5.0)
    old_ct = keys["h0"].encrypt(x)
    garbage = new.decrypt(old_ct, 20)  # parses (same parameters), but the key is wrong
    assert np.max(np.abs(garbage - x)) > 1e3
    # an old-epoch package cannot be opened as a new-epoch one
    with pytest.raises(CryptoError):
        ring2.open(ids["h0"], federation, package=ring.packages["h0"])


def test_manifest_statement_is_the_canonical_json_it_always_was(fed, ring):
    """The one canonical JSON gives the bytes manifests were signed with before (ASCII ids,
    finite floats), so existing signatures verify; non-ASCII ids are refused."""
    ids, federation = fed
    m = ring.manifest
    fields = {
        "federation_id": m.federation_id.hex(), "epoch": m.epoch, "key_holder": m.key_holder,
        "params": m.params.to_json(), "public_context_sha256": m.public_context_sha256.hex(),
        "key_commitment": m.key_commitment.hex(), "recipients": list(m.recipients)}
    before = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    assert m.statement() == b"fedrx-ckks-manifest/1\x00" + before
    m.verify(federation)
    with pytest.raises(CryptoError, match="ASCII"):
        replace(m, key_holder="h\u00f6").statement()
    umlaut = Identity.generate("h\u00f6")
    with pytest.raises(ConfigError, match="ASCII"):
        CkksKeyring.create(umlaut, Federation.of([umlaut]), epoch=1, federation_id=bytes(32))
