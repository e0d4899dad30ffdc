"""``CkksProtection`` driven through the Protection interface as a transport would."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
import pytest
from protection_inputs import weighted_inputs

from fedrx.errors import ConfigError, ProtocolAbort
from fedrx.protocol.protection import NoProtection, RoundContext
from fedrx.protocol.protections.ckks import CkksProtection
from fedrx.secagg.ckks.keyring import CkksKeyring
from fedrx.secagg.ckks.messages import (
    CkksDecryption,
    CkksDecryptRequest,
    CkksUpload,
    CkksUploadRequest,
)
from fedrx.secagg.ckks.params import CkksConfig
from fedrx.secagg.ckks.release import ReleasePolicy

HOSPITALS = ("a", "b", "c", "d", "e")
LENGTH = 4096 + 51  # two ciphertexts; last entry is the example count


@pytest.fixture(scope="module")
def prot() -> CkksProtection:
    return CkksProtection.simulated(HOSPITALS)


def _ctx(round_: int = 1, participants=HOSPITALS, length: int = LENGTH) -> RoundContext:
    return RoundContext(b"s" * 32, round_, tuple(sorted(participants)), length)


_inputs = weighted_inputs


Hook = Callable[[str, dict], dict]


def drive(protection, ctx: RoundContext, inputs: Mapping[str, np.ndarray], *,
          drop_after: Mapping[str, set] | None = None, clients=None,
          on_replies: Hook | None = None, on_requests: Hook | None = None):
    """requests -> handle -> collect for every stage; a hospital that raises
    ProtocolAbort, or is listed in ``drop_after[stage]``, is dropped for the rest."""
    server = protection.new_server(ctx)
    clients = clients or {h: protection.new_client(ctx, h) for h in ctx.participants}
    alive = []
    for h in ctx.participants:
        try:
            clients[h].set_input(inputs[h])
            alive.append(h)
        except ProtocolAbort:
            pass
    for stage in server.stages:
        reqs = server.requests(stage, alive)
        if on_requests:
            reqs = on_requests(stage, reqs)
        replies = {}
        for h, req in reqs.items():
            try:
                replies[h] = clients[h].handle(stage, req)
            except ProtocolAbort:
                alive.remove(h)
        if on_replies:
            replies = on_replies(stage, replies)
        server.collect(stage, replies)
        alive = [h for h in alive if h not in (drop_after or {}).get(stage, set())]
    return server.result(), server, clients


def test_interface_shape(prot):
    assert prot.name == "ckks" and prot.stages == ("keys", "upload", "confirm", "decrypt")
    assert prot.min_survivors(5) == 3  # a majority confirms the contributor list
    assert prot.min_survivors(2) == 2
    with pytest.raises(ConfigError):
        CkksConfig(min_contributors=1).check()
    with pytest.raises(ConfigError):
        prot.validate(1, 10)


def test_round_with_dropout_after_upload_matches_plain_sum(prot):
    ctx = _ctx()
    xs = _inputs(ctx)
    # 'a' and 'b' drop right after encrypting: they stay in the sum; decryption goes elsewhere
    res, server, _ = drive(prot, ctx, xs, drop_after={"upload": {"a", "b"}})
    plain, _, _ = drive(NoProtection(), ctx, xs)
    assert res.contributors == HOSPITALS
    assert set(res.stats["decryptors"]) <= {"c", "d", "e"} and res.stats["decryptors"]
    bound = ReleasePolicy.for_sum(prot.aggregator.keyring.manifest.params, 5, 16).error_bound
    assert res.stats["error_bound"] == pytest.approx(bound)
    assert np.max(np.abs(res.total - plain.total)) <= bound
    # the weighted average is what training uses: error relative to the total count
    avg_err = np.max(np.abs(res.total[:-1] / res.total[-1] - plain.total[:-1] / plain.total[-1]))
    assert avg_err <= 2 * bound / plain.total[-1]
    assert res.stats["ciphertexts_per_upload"] == 2
    assert res.stats["upload_bytes"] <= 5 * 2 * 8.0 * 4096 * 4  # <= 8x float32 per slot


def test_dropout_before_upload_is_excluded(prot):
    ctx = _ctx(round_=2)
    xs = _inputs(ctx, seed=2)

    def lose_c(stage, replies):
        return {h: r for h, r in replies.items() if not (stage == "upload" and h == "c")}

    res, _, _ = drive(prot, ctx, xs, on_replies=lose_c)
    assert res.contributors == ("a", "b", "d", "e")
    want = sum(xs[h] for h in res.contributors)
    assert np.max(np.abs(res.total - want)) <= res.stats["error_bound"]


def test_per_node_instances_like_a_deployment(prot):
    """Aggregator instance without identities, one instance per hospital."""
    server_side = CkksProtection(prot.federation, prot.aggregator.keyring)
    ring = prot.aggregator.keyring
    per_node = {h: CkksProtection(prot.federation, ring, [prot.hospitals[h].identity])
                for h in HOSPITALS}
    ctx = _ctx(round_=3)
    clients = {h: per_node[h].new_client(ctx, h) for h in HOSPITALS}
    with pytest.raises(ConfigError):
        server_side.new_client(ctx, "a")
    res, _, _ = drive(server_side, ctx, _inputs(ctx, 3), clients=clients)
    assert res.contributors == HOSPITALS


def _mutate_upload(target: str, fn) -> Hook:
    def hook(stage, replies):
        if stage == "upload" and target in replies:
            replies = dict(replies)
            replies[target] = fn(replies[target])
        return replies
    return hook


def _flip(chunks: tuple[bytes, ...]) -> tuple[bytes, ...]:
    b = bytearray(chunks[1])
    b[len(b) // 2] ^= 1
    return (chunks[0], bytes(b))


@pytest.mark.parametrize("name,fn,reason", [
    ("corrupted", lambda u: replace(u, chunks=_flip(u.chunks)), "signed digest"),
    ("oversized", lambda u: replace(u, chunks=(u.chunks[0], u.chunks[1] + bytes(300_000))),
     "signed digest"),
    ("missing chunk", lambda u: replace(u, chunks=u.chunks[:1]), "expected 2"),
    ("forged signature", lambda u: replace(u, header=replace(u.header, signature=bytes(64))),
     "signature"),
    ("not an upload", lambda u: "garbage", "not a CKKS upload"),
])
def test_bad_upload_is_rejected_and_round_goes_on(prot, name, fn, reason):
    ctx = _ctx(round_=4)
    xs = _inputs(ctx, 4)
    res, _, _ = drive(prot, ctx, xs, on_replies=_mutate_upload("b", fn))
    assert "b" not in res.contributors and len(res.contributors) == 4
    assert reason in res.stats["rejected"]["b"], res.stats["rejected"]
    want = sum(xs[h] for h in res.contributors)
    assert np.max(np.abs(res.total - want)) <= res.stats["error_bound"]


def test_upload_from_another_key_epoch_is_rejected(prot):
    """A hospital still on an old epoch: its upload names the old key id and is refused."""
    ctx = _ctx(round_=5)
    xs = _inputs(ctx, 5)
    stale = CkksProtection.simulated(HOSPITALS)  # other keys, same parameters
    stale_client = stale.new_client(ctx, "e")
    clients = {h: prot.new_client(ctx, h) for h in HOSPITALS}
    clients["e"] = stale_client

    def fake_req(stage, reqs):  # make the stale hospital answer despite the key id check
        if stage == "upload":
            reqs = dict(reqs)
            reqs["e"] = replace(reqs["e"], key_id=stale.aggregator.keyring.key_id, delivery=None)
        return reqs

    res, _, _ = drive(prot, ctx, xs, clients=clients, on_requests=fake_req)
    assert "e" not in res.contributors
    assert "key id" in res.stats["rejected"]["e"]


def test_key_rotation_between_rounds():
    p = CkksProtection.simulated(("a", "b", "c"))
    old_ring = p.aggregator.keyring
    ctx1 = _ctx(1, ("a", "b", "c"), 10)
    r1, _, _ = drive(p, ctx1, _inputs(ctx1, 1))
    assert r1.stats["epoch"] == old_ring.epoch
    new_ring = CkksKeyring.create(p.hospitals["b"].identity, p.federation,
                                  epoch=old_ring.epoch + 1,
                                  federation_id=old_ring.manifest.federation_id)
    p.aggregator.install(new_ring)
    assert new_ring.epoch == old_ring.epoch + 1 and new_ring.key_id != old_ring.key_id
    assert new_ring.manifest.key_holder == "b"
    ctx2 = _ctx(2, ("a", "b", "c"), 10)
    r2, _, _ = drive(p, ctx2, _inputs(ctx2, 2))
    assert r2.stats["epoch"] == new_ring.epoch and len(r2.contributors) == 3
    with pytest.raises(ConfigError):
        p.aggregator.install(old_ring)
    # a hospital on the new epoch refuses a relayed package of an older epoch (rollback)
    from fedrx.secagg.ckks.messages import KeyDelivery
    old = KeyDelivery(old_ring.manifest, old_ring.public_context, old_ring.packages["a"])
    ctx3 = _ctx(3, ("a", "b", "c"), 10)
    c = p.new_client(ctx3, "a")
    c.set_input(np.ones(10))
    req = CkksUploadRequest(ctx3.session_id, 3, old_ring.epoch, old_ring.key_id, 10, old)
    with pytest.raises(ProtocolAbort, match="rollback"):
        c.handle("upload", req)
    # and an unknown key id without a package
    with pytest.raises(ProtocolAbort, match="key id"):
        c.handle("upload", replace(req, delivery=None))


def test_keys_distributed_in_protocol_with_rotation():
    """Per-party instances from the registry factory, no pre-shared keyring: round 1 creates
    epoch 1 at a key holder, packages travel sealed with the upload requests; rotate_every=2."""
    from fedrx.protocol.protections.ckks import make_ckks_protection
    from fedrx.secagg.identity import Federation, Identity

    ids = [Identity.generate(h) for h in ("a", "b", "c", "d")]
    fed = Federation.of(ids)
    params = {"rotate_every": 2, "decryptors": 1}
    server = make_ckks_protection(federation=fed, params=params)
    nodes = {i.hospital: make_ckks_protection(federation=fed, identity=i, params=params)
             for i in ids}
    epochs, holders = [], []
    for r in range(1, 6):
        ctx = _ctx(r, ("a", "b", "c", "d"), 50)
        clients = {h: nodes[h].new_client(ctx, h) for h in ctx.participants}
        xs = _inputs(ctx, r)
        drop = {"upload": {"d"}} if r == 2 else None  # dropped after encrypting
        res, srv, _ = drive(server, ctx, xs, clients=clients, drop_after=drop)
        want = sum(xs[h] for h in res.contributors)
        assert res.contributors == ("a", "b", "c", "d")
        assert np.max(np.abs(res.total - want)) <= res.stats["error_bound"]
        epochs.append(res.stats["epoch"])
        holders.append(server.aggregator.keyring.manifest.key_holder)
    assert epochs == [1, 1, 2, 2, 3]
    assert len(set(holders)) == 3  # the key holder rotates with the epoch
    assert server.hospitals == {}  # the aggregator holds no key
    for h, node in nodes.items():
        assert node.hospitals[h].held().epoch == 3


def test_bad_keyring_reply_aborts_first_round():
    from fedrx.protocol.protections.ckks import make_ckks_protection
    from fedrx.secagg.identity import Federation, Identity

    ids = [Identity.generate(h) for h in ("a", "b", "c")]
    fed = Federation.of(ids)
    server = make_ckks_protection(federation=fed)
    nodes = {i.hospital: make_ckks_protection(federation=fed, identity=i) for i in ids}
    ctx = _ctx(1, ("a", "b", "c"), 10)
    clients = {h: nodes[h].new_client(ctx, h) for h in "abc"}

    def forge(stage, replies):
        if stage == "keys":
            replies = {h: replace(r, keyring=replace(r.keyring, manifest=replace(
                r.keyring.manifest, epoch=7))) for h, r in replies.items()}
        return replies

    with pytest.raises(ProtocolAbort, match="no CKKS key epoch"):
        drive(server, ctx, _inputs(ctx), clients=clients, on_replies=forge)


def test_too_few_uploads_aborts():
    p = CkksProtection.simulated(("a", "b", "c"), config=CkksConfig(min_contributors=3))
    ctx = _ctx(1, ("a", "b", "c"), 10)
    drop_c = _mutate_upload("c", lambda u: "garbage")
    with pytest.raises(ProtocolAbort, match="only 2 valid"):
        drive(p, ctx, _inputs(ctx), on_replies=drop_c)


def test_no_decryptor_left_aborts(prot):
    ctx = _ctx(round_=6)
    with pytest.raises(ProtocolAbort, match="no key-holding hospital"):
        drive(prot, ctx, _inputs(ctx, 6), drop_after={"confirm": set(HOSPITALS)})


def test_input_outside_ckks_range_is_refused(prot):
    ctx = _ctx(round_=7)
    c = prot.new_client(ctx, "a")
    x = np.zeros(LENGTH)
    x[-1] = prot.aggregator.keyring.manifest.params.max_abs_input(5) * 1.01
    with pytest.raises(ProtocolAbort, match="CKKS range"):
        c.set_input(x)


def _uploads(prot, ctx, hospitals):
    server = prot.new_server(ctx)
    clients = {h: prot.new_client(ctx, h) for h in hospitals}
    xs = _inputs(ctx, 9)
    for h in hospitals:
        clients[h].set_input(xs[h])
    assert server.requests("keys", list(hospitals)) == {}  # epoch already installed
    server.collect("keys", {})
    reqs = server.requests("upload", list(hospitals))
    server.collect("upload", {h: clients[h].handle("upload", reqs[h]) for h in hospitals})
    conf = server.requests("confirm", list(hospitals))
    server.collect("confirm", {h: prot.new_client(ctx, h).handle("confirm", conf[h])
                               for h in hospitals})
    return server, clients


def test_decryptor_refusals(prot):
    ctx = _ctx(round_=8)
    server, clients = _uploads(prot, ctx, HOSPITALS)
    req: CkksDecryptRequest = next(iter(server.requests("decrypt", list(HOSPITALS)).values()))
    assert len(req.contributors) == 5
    fresh = prot.new_client(ctx, "a")
    # fewer than min_contributors signed headers
    with pytest.raises(ProtocolAbort, match="refusing to decrypt"):
        fresh.handle("decrypt", replace(req, contributors=req.contributors[:1]))
    fresh = prot.new_client(ctx, "a")
    # a header that was not signed by the named hospital
    forged = replace(req.contributors[0], signature=bytes(64))
    with pytest.raises(ProtocolAbort, match="does not verify"):
        fresh.handle("decrypt", replace(req, contributors=(forged,) + req.contributors[1:]))
    # the naive attack: one hospital's ciphertexts returned as "the aggregate"
    own: CkksUpload = clients["b"].state.upload
    assert own is not None
    fresh = prot.new_client(ctx, "a")
    with pytest.raises(ProtocolAbort, match="byte-identical"):
        fresh.handle("decrypt", replace(req, aggregate=own.chunks))
    # other session / round
    with pytest.raises(ProtocolAbort, match="another session"):
        prot.new_client(ctx, "a").handle("decrypt", replace(req, round=9))
    # one decryption per round
    fresh = prot.new_client(ctx, "a")
    out = fresh.handle("decrypt", req)
    assert isinstance(out, CkksDecryption)
    with pytest.raises(ProtocolAbort, match="already decrypted"):
        fresh.handle("decrypt", req)
    with pytest.raises(ProtocolAbort, match="unexpected request"):
        fresh.handle("decrypt", CkksUploadRequest(b"s" * 32, 8, 1, b"", LENGTH))


def test_disagreeing_decryptors_abort(prot):
    ctx = _ctx(round_=10)
    xs = _inputs(ctx, 10)

    def lie(stage, replies):
        if stage == "decrypt":
            replies = dict(replies)
            h = sorted(replies)[-1]
            replies[h] = replace(replies[h], total=replies[h].total + 1.0)
        return replies

    with pytest.raises(ProtocolAbort, match="disagree"):
        drive(prot, ctx, xs, on_replies=lie)


def test_ckks_matches_none_over_several_rounds(prot):
    """FedAvg on a toy quadratic: ckks and none reach the same model (same seed)."""
    target = np.random.default_rng(0).normal(size=LENGTH - 1)
    models = {}
    for name, protection in (("none", NoProtection()), ("ckks", prot)):
        w = np.zeros(LENGTH - 1)
        for r in range(1, 4):
            ctx = _ctx(round_=100 + r)
            xs = {}
            for i, h in enumerate(ctx.participants):
                count = 100.0 + 10 * i
                xs[h] = np.concatenate([count * 0.5 * (target - w), [count]])
            res, _, _ = drive(protection, ctx, xs)
            w = w + res.total[:-1] / res.total[-1]
        models[name] = w
    assert np.max(np.abs(models["ckks"] - models["none"])) < 1e-4
