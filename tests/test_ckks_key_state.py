"""CKKS key state split by role: the aggregator's checkpointed epoch, reconnects, custody."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedrx.errors import ConfigError, CryptoError
from fedrx.protocol.protection import RoundContext
from fedrx.protocol.protections.ckks import CHECKPOINT_BLOB, make_ckks_protection
from fedrx.secagg.ckks.keyring_json import keyring_from_json, keyring_to_json
from fedrx.secagg.ckks.messages import CkksUploadRequest
from fedrx.secagg.identity import Federation, Identity

HOSPITALS = ("a", "b", "c")


def _ctx(round_: int) -> RoundContext:
    return RoundContext(b"s" * 32, round_, HOSPITALS, 20)


def _round(server, nodes, round_: int) -> dict:
    """One full round through the Protection interface; returns the upload requests."""
    ctx = _ctx(round_)
    srv = server.new_server(ctx)
    clients = {h: nodes[h].new_client(ctx, h) for h in HOSPITALS}
    for i, h in enumerate(HOSPITALS):
        clients[h].set_input(np.full(20, float(i + 1)))
    seen = {}
    for stage in srv.stages:
        reqs = srv.requests(stage, list(HOSPITALS))
        seen[stage] = reqs
        srv.collect(stage, {h: clients[h].handle(stage, r) for h, r in reqs.items()})
    res = srv.result()
    assert np.max(np.abs(res.total - 6.0)) <= res.stats["error_bound"]
    return seen


@pytest.fixture()
def federation():
    ids = [Identity.generate(h) for h in HOSPITALS]
    fed = Federation.of(ids)
    nodes = {i.hospital: make_ckks_protection(federation=fed, identity=i) for i in ids}
    return fed, nodes


def test_checkpoint_restore_keeps_the_epoch(federation):
    fed, nodes = federation
    server = make_ckks_protection(federation=fed)
    assert server.checkpoint() == {}  # no epoch yet: nothing to keep
    _round(server, nodes, 1)
    blobs = server.checkpoint()
    assert set(blobs) == {CHECKPOINT_BLOB}
    ring = server.aggregator.keyring
    doc = json.loads(blobs[CHECKPOINT_BLOB])
    assert doc["manifest"]["epoch"] == ring.epoch == 1
    for pkg in ring.packages.values():  # sealed packages only: no context with a secret key
        assert pkg.sealed.hex() in blobs[CHECKPOINT_BLOB].decode()
    assert keyring_to_json(keyring_from_json(blobs[CHECKPOINT_BLOB])) == blobs[CHECKPOINT_BLOB]

    restarted = make_ckks_protection(federation=fed)  # a new aggregator process
    restarted.restore(blobs)
    assert restarted.aggregator.keyring.key_id == ring.key_id
    reqs = _round(restarted, nodes, 2)
    assert reqs["keys"] == {}  # the same epoch: no new key generation
    ups = reqs["upload"]
    assert all(isinstance(r, CkksUploadRequest) and r.key_id == ring.key_id for r in ups.values())
    assert all(r.delivery is not None for r in ups.values())  # relayed again after a restart
    assert restarted.checkpoint() == blobs
    restarted.restore({})  # nothing checkpointed: nothing to do
    with pytest.raises(ConfigError, match="not newer"):
        restarted.restore(blobs)


@pytest.mark.parametrize("tamper", ["signature", "public_context", "package", "epoch", "json"])
def test_tampered_checkpoint_is_refused(federation, tamper):
    fed, nodes = federation
    server = make_ckks_protection(federation=fed)
    _round(server, nodes, 1)
    blob = server.checkpoint()[CHECKPOINT_BLOB]
    doc = json.loads(blob)
    if tamper == "signature":
        doc["manifest"]["signature"] = "00" * 64
    elif tamper == "public_context":
        doc["public_context"] = doc["public_context"][:-2] + "00"
    elif tamper == "package":
        pkg = doc["packages"]["b"]
        pkg["sealed"] = ("ff" if pkg["sealed"][:2] != "ff" else "00") + pkg["sealed"][2:]
    elif tamper == "epoch":
        doc["manifest"]["epoch"] = 9
    bad = b"{not json" if tamper == "json" else json.dumps(doc).encode()
    fresh = make_ckks_protection(federation=fed)
    with pytest.raises(CryptoError):
        fresh.restore({CHECKPOINT_BLOB: bad})
    assert fresh.aggregator.keyring is None and fresh.checkpoint() == {}


def test_reconnected_hospital_gets_its_package_again(federation):
    fed, nodes = federation
    server = make_ckks_protection(federation=fed)
    first = _round(server, nodes, 1)
    assert all(r.delivery is not None for r in first["upload"].values())
    second = _round(server, nodes, 2)
    assert all(r.delivery is None for r in second["upload"].values())  # all confirmed
    server.reconnected(["b"])
    third = _round(server, nodes, 3)
    assert {h for h, r in third["upload"].items() if r.delivery is not None} == {"b"}


def test_roles_are_split(federation):
    fed, nodes = federation
    server = make_ckks_protection(federation=fed)
    _round(server, nodes, 1)
    assert server.hospitals == {}  # the aggregator holds no hospital key state
    for h, node in nodes.items():
        key = node.hospitals[h].held()
        assert key is not None and key.key_id == server.aggregator.keyring.key_id
        assert "hidden" in repr(key) and h in repr(node.hospitals[h])
