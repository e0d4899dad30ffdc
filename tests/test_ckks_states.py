"""The CKKS round states one by one (secagg/ckks/client.py and server.py): what each state
holds, what it answers, and the state it returns."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedrx.errors import ProtocolAbort
from fedrx.protocol.protection import RoundContext
from fedrx.protocol.protections.ckks import CkksProtection
from fedrx.secagg.ckks.client import ClientConfirmed, ClientDone, ClientReady, ClientUploaded
from fedrx.secagg.ckks.messages import CkksConfirmation, CkksDecryption, CkksUpload
from fedrx.secagg.ckks.server import (
    ServerConfirm,
    ServerDecrypt,
    ServerDone,
    ServerKeys,
    ServerUpload,
)

HOSPITALS = ("a", "b", "c")
LENGTH = 12


@pytest.fixture(scope="module")
def prot() -> CkksProtection:
    return CkksProtection.simulated(HOSPITALS)


def _ctx(round_: int) -> RoundContext:
    return RoundContext(b"s" * 32, round_, HOSPITALS, LENGTH)


def _setup(prot, round_):
    ctx = _ctx(round_)
    server = prot.new_server(ctx)
    clients = {h: prot.new_client(ctx, h) for h in HOSPITALS}
    for i, h in enumerate(HOSPITALS):
        clients[h].set_input(np.full(LENGTH, float(i)))
    return server, clients


def _confirm(server, clients, hospitals=HOSPITALS):
    reqs = server.requests("confirm", list(hospitals))
    server.collect("confirm", {h: clients[h].handle("confirm", q) for h, q in reqs.items()})


def test_client_walks_ready_uploaded_confirmed_done(prot):
    server, clients = _setup(prot, 1)
    c = clients["a"]
    assert isinstance(c.state, ClientReady) and c.state.vector is not None
    server.collect("keys", {})
    reqs = server.requests("upload", list(HOSPITALS))
    up = c.handle("upload", reqs["a"])
    assert isinstance(up, CkksUpload) and isinstance(c.state, ClientUploaded)
    assert not hasattr(c.state, "vector")  # the plaintext is gone once encrypted
    assert c.handle("upload", reqs["a"]) is up  # a repeated request: the same ciphertexts
    with pytest.raises(ProtocolAbort, match="after the upload"):
        c.set_input(np.zeros(LENGTH))
    server.collect("upload", {h: clients[h].handle("upload", reqs[h]) for h in HOSPITALS})
    conf = server.requests("confirm", list(HOSPITALS))
    mine = c.handle("confirm", conf["a"])
    assert isinstance(mine, CkksConfirmation) and isinstance(c.state, ClientConfirmed)
    assert c.handle("confirm", conf["a"]) is mine  # the same list: the same signature
    other = replace(conf["a"], contributors=conf["a"].contributors[:2])
    with pytest.raises(ProtocolAbort, match="another contributor list"):
        c.handle("confirm", other)  # one list per round
    server.collect("confirm", {h: mine if h == "a" else clients[h].handle("confirm", q)
                               for h, q in conf.items()})
    dec = server.requests("decrypt", list(HOSPITALS))
    out = c.handle("decrypt", dec["a"])
    assert isinstance(out, CkksDecryption) and isinstance(c.state, ClientDone)
    with pytest.raises(ProtocolAbort, match="unexpected request"):
        c.handle("upload", reqs["a"])


def test_failed_decryption_still_ends_the_clients_round(prot):
    server, clients = _setup(prot, 2)
    server.collect("keys", {})
    reqs = server.requests("upload", list(HOSPITALS))
    server.collect("upload", {h: clients[h].handle("upload", reqs[h]) for h in HOSPITALS})
    _confirm(server, clients)
    req = server.requests("decrypt", list(HOSPITALS))["b"]
    garbled = replace(req, aggregate=(b"\x00" * 100,))
    with pytest.raises(ProtocolAbort, match="does not decrypt"):
        clients["b"].handle("decrypt", garbled)
    assert isinstance(clients["b"].state, ClientDone)  # no second try with other inputs
    with pytest.raises(ProtocolAbort, match="already decrypted"):
        clients["b"].handle("decrypt", req)


def test_server_walks_keys_upload_confirm_decrypt_done(prot):
    server, clients = _setup(prot, 3)
    assert isinstance(server.state, ServerKeys) and server.state.new_epoch is None
    with pytest.raises(ProtocolAbort, match="out of order"):
        server.requests("upload", list(HOSPITALS))
    with pytest.raises(ProtocolAbort, match="unknown stage"):
        server.requests("bogus", list(HOSPITALS))
    with pytest.raises(ProtocolAbort, match="not completed"):
        server.result()
    assert server.requests("keys", list(HOSPITALS)) == {}
    server.collect("keys", {})
    assert isinstance(server.state, ServerUpload)
    reqs = server.requests("upload", ["a", "b"])  # only live participants are asked
    assert set(reqs) == {"a", "b"}
    server.collect("upload", {h: clients[h].handle("upload", reqs[h]) for h in reqs})
    assert isinstance(server.state, ServerConfirm)
    assert server.state.acc.contributors == ["a", "b"]
    conf = server.requests("confirm", ["a", "b"])
    assert set(conf) == {"a", "b"}  # every live participant is asked
    server.collect("confirm", {h: clients[h].handle("confirm", q) for h, q in conf.items()})
    assert isinstance(server.state, ServerDecrypt)
    assert len(server.state.confirmations) == 2  # a majority of the 3 participants
    dec = server.requests("decrypt", list(HOSPITALS))
    assert list(dec) == ["a", "b"]  # contributors first, config.decryptors = 2 of them
    server.collect("decrypt", {h: clients[h].handle("decrypt", r) for h, r in dec.items()})
    assert isinstance(server.state, ServerDone)
    res = server.result()
    assert res.contributors == ("a", "b")
    assert np.max(np.abs(res.total - 1.0)) <= res.stats["error_bound"]
    with pytest.raises(ProtocolAbort, match="out of order"):
        server.collect("decrypt", {})


def test_server_aborts_without_a_majority_confirming(prot):
    server, clients = _setup(prot, 4)
    server.collect("keys", {})
    reqs = server.requests("upload", list(HOSPITALS))
    server.collect("upload", {h: clients[h].handle("upload", reqs[h]) for h in HOSPITALS})
    conf = server.requests("confirm", list(HOSPITALS))
    forged = replace(clients["b"].handle("confirm", conf["b"]), signature=bytes(64))
    with pytest.raises(ProtocolAbort, match="only 1 of 3 participants confirmed"):
        server.collect("confirm", {"a": clients["a"].handle("confirm", conf["a"]),
                                   "b": forged})
