"""``ckks-threshold`` through the Protection interface, with the real OpenFHE (in a worker
process under the CPython 3.10 ``.venv-he``, or in-process where ``openfhe`` imports).

Attacks mounted: the aggregator with t-1 colluding hospitals (holding their key shares and
their own additive keys) decrypting one hospital's upload; decrypt requests for one upload,
an upload listed twice, an upload plus a known offset ciphertext, an unsigned or re-signed
upload, a lowered threshold; dropouts above and below t."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
import pytest
from protection_inputs import weighted_inputs

from fedrx.errors import ConfigError, ProtocolAbort
from fedrx.protocol.protection import RoundContext
from fedrx.protocol.protections.ckks_threshold import ThresholdProtection
from fedrx.secagg.thckks import messages as m
from fedrx.secagg.thckks.engine import open_engine

HOSPITALS = ("a", "b", "c", "d", "e")  # n = 5, t = 3 (majority)
LENGTH = 8192 + 51  # two ciphertexts; the last entry is the example count


@pytest.fixture(scope="module")
def prot() -> ThresholdProtection:
    return ThresholdProtection.simulated(HOSPITALS)


def _ctx(round_: int = 1, participants=HOSPITALS, length: int = LENGTH) -> RoundContext:
    return RoundContext(b"s" * 32, round_, tuple(sorted(participants)), length)


_inputs = weighted_inputs


Hook = Callable[[str, dict], dict]


def drive(protection, ctx: RoundContext, inputs: Mapping[str, np.ndarray], *,
          drop_after: Mapping[str, set] | None = None, on_requests: Hook | None = None,
          on_replies: Hook | None = None, refusals: dict | None = None):
    """requests -> handle -> collect for every stage; a hospital that raises ProtocolAbort,
    or is listed in ``drop_after[stage]``, is dropped for the rest (its refusal recorded)."""
    server = protection.new_server(ctx)
    clients = {h: protection.new_client(ctx, h) for h in ctx.participants}
    for h in ctx.participants:
        clients[h].set_input(inputs[h])
    alive = list(ctx.participants)
    for stage in server.stages:
        reqs = server.requests(stage, alive)
        if on_requests:
            reqs = on_requests(stage, reqs)
        replies = {}
        for h, req in reqs.items():
            try:
                replies[h] = clients[h].handle(stage, req)
            except ProtocolAbort as exc:
                if refusals is not None:
                    refusals[h] = str(exc)
                alive.remove(h)
        if on_replies:
            replies = on_replies(stage, replies)
        server.collect(stage, replies)
        alive = [h for h in alive if h not in (drop_after or {}).get(stage, set())]
    return server.result(), server


def test_sum_within_stated_bound_and_keys_reused(prot):
    ctx = _ctx(1)
    xs = _inputs(ctx)
    res, _ = drive(prot, ctx, xs)
    want = sum(xs.values())
    err = float(np.max(np.abs(res.total - want)))
    assert res.contributors == HOSPITALS
    assert res.stats["threshold"] == 3 and len(res.stats["decryptors"]) == 3
    assert err <= res.stats["error_bound"], (err, res.stats["error_bound"])
    assert res.stats["error_bound"] < 1e-3
    # round 2 reuses the epoch: no key stage asked anyone
    asked = {}
    res2, _ = drive(prot, _ctx(2), _inputs(_ctx(2), 1),
                    on_requests=lambda s, r: asked.setdefault(s, r) or r)
    assert asked["crs"] == {} and asked["keygen"] == {} and res2.stats["epoch"] == 1


def _uploads(prot, ctx) -> tuple[dict, dict]:
    """Run a round up to its uploads; return (uploads by hospital, inputs)."""
    xs = _inputs(ctx, 7)
    got = {}

    def grab(stage, replies):
        if stage == "upload":
            got.update(replies)
        return replies

    drive(prot, ctx, xs, on_replies=grab)
    return got, xs


def test_aggregator_with_t_minus_1_colluders_cannot_decrypt_one_upload(prot):
    ctx = _ctx(3)
    ups, xs = _uploads(prot, ctx)
    eng = prot.engine
    colluders = ("a", "b")  # t - 1 = 2 hospitals hand over their key shares
    keys = {h: prot.hospitals[h].current for h in colluders}
    target = ups["e"]
    signal = float(np.max(np.abs(xs["e"])))
    idx = [keys[h].index for h in colluders]
    attempts = {
        # 1) Lagrange-interpolate the t-1 shares as if they were enough
        "lagrange": [(keys[h].share, keys[h].index, idx) for h in colluders],
        # 2) each colluder's share used raw, as a full key
        "raw": [(keys[h].share, 1, [1]) for h in colluders],
    }
    for name, how in attempts.items():
        parts = [[eng.partial(share, [c], i, dec, k == 0, 0.0)
                  for k, (share, i, dec) in enumerate(how)] for c in target.chunks]
        guess = np.concatenate([eng.fuse(p, eng.slots) for p in parts])[:LENGTH]
        assert np.max(np.abs(guess - xs["e"])) > 1e3 * signal, name  # measured: ~1e18 x
    # the same machinery with t honest shares does decrypt it (the test can tell)
    full = [prot.hospitals[h].current for h in ("a", "b", "c")]
    parts = [[eng.partial(k.share, [c], k.index, [1, 2, 3], k.index == 1, 0.0) for k in full]
             for c in target.chunks]
    ok = np.concatenate([eng.fuse(p, eng.slots) for p in parts])[:LENGTH]
    assert np.max(np.abs(ok - xs["e"])) < 1e-3


ATTACKS = ["one", "doubled", "offset", "resigned", "lowered-t", "below-t-uploads"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_decrypt_of_anything_but_the_listed_sum_is_refused_by_every_hospital(prot, attack):
    ctx = _ctx(10 + ATTACKS.index(attack))
    xs = _inputs(ctx, 3)
    refusals: dict = {}
    asked: list = []

    def tamper(stage, reqs):
        if stage != "decrypt":
            return reqs
        any_req = next(iter(reqs.values()))
        ups = list(any_req.uploads)
        if attack == "one":
            ups = ups[:1]
        elif attack == "doubled":  # the same upload k = 3 times
            ups = [ups[0]] * 3
        elif attack == "offset":  # a ciphertext of a known offset under another hospital's name
            off = prot.engine.encrypt(prot.hospitals["a"].current.joint_public,
                                      np.full(LENGTH, 1000.0))
            ups = [ups[0], replace(ups[1], chunks=tuple(off))]
        elif attack == "below-t-uploads":  # t - 1 = 2 uploads: a colluder's + the victim's
            ups = ups[:2]
        elif attack == "resigned":  # the aggregator signs an offset itself (no pinned key)
            ups = [ups[0], replace(ups[1], signature=b"\x00" * 64)]
        all_members = tuple(sorted(prot.hospitals))
        out = {}
        for h in all_members:  # every hospital, decryptor or not
            dec = any_req.decryptors if h in any_req.decryptors else (
                tuple(sorted(set(any_req.decryptors[:-1]) | {h})))
            if attack == "lowered-t":
                dec = tuple(sorted({h, "a"} if h != "a" else {"a", "b"}))
            out[h] = replace(any_req, uploads=tuple(ups), decryptors=dec)
            asked.append(h)
        return out

    with pytest.raises(ProtocolAbort):
        drive(prot, ctx, xs, on_requests=tamper, refusals=refusals)
    assert sorted(asked) == sorted(HOSPITALS)
    assert sorted(refusals) == sorted(HOSPITALS), refusals


def test_dropouts_after_upload_with_t_survivors_complete(prot):
    ctx = _ctx(20)
    xs = _inputs(ctx, 5)
    res, _ = drive(prot, ctx, xs, drop_after={"upload": {"a", "c"}})
    assert res.contributors == HOSPITALS  # their uploads stay in the sum
    assert not {"a", "c"} & set(res.stats["decryptors"])
    assert np.max(np.abs(res.total - sum(xs.values()))) <= res.stats["error_bound"]


def test_below_t_the_round_aborts_and_nothing_is_released(prot):
    ctx = _ctx(21)
    with pytest.raises(ProtocolAbort, match="below the threshold"):
        drive(prot, ctx, _inputs(ctx), drop_after={"upload": {"a", "b", "c"}})
    # a decryptor that vanishes during decrypt: t-1 partials, the round aborts
    with pytest.raises(ProtocolAbort, match="below the"):
        drive(prot, _ctx(22), _inputs(_ctx(22)),
              on_replies=lambda s, r: {k: v for k, v in list(r.items())[1:]}
              if s == "decrypt" else r)


def test_membership_change_rekeys_and_old_epoch_is_refused(prot):
    ctx = _ctx(30, participants=("a", "b", "c", "d"))
    before = prot.epoch.key_id
    res, _ = drive(prot, ctx, _inputs(ctx, 2))
    assert prot.epoch.key_id != before and prot.epoch.members == ("a", "b", "c", "d")
    assert res.stats["threshold"] == 3
    # a stale upload request under the old key id is refused
    client = prot.new_client(_ctx(31, participants=("a", "b", "c", "d")), "a")
    client.set_input(np.zeros(LENGTH))
    with pytest.raises(ProtocolAbort, match="key epoch"):
        client.handle("upload", m.ThUploadRequest(b"s" * 32, 31, before, LENGTH))


def test_configuration_refusals():
    with pytest.raises(ConfigError):
        ThresholdProtection.simulated(("a", "b", "c")).validate(2, 10)
    from fedrx.protocol.protections.ckks_threshold import make_threshold_protection

    with pytest.raises(ConfigError, match="unknown"):
        make_threshold_protection(federation=None, params={"bogus": 1})


def test_engine_is_real_openfhe():
    eng = open_engine()
    assert eng.ring_dim == 8192 and len(eng.moduli) == 2
    assert sum(q.bit_length() for q in eng.moduli) <= 218  # HE standard, 128-bit, N=8192


def test_checkpoint_and_restart_keep_the_epoch(tmp_path):
    """The aggregator restores its public epoch record from its checkpoint; hospitals reload
    their key shares (mode 0600) from their key folder: the next round needs no key stage."""
    from fedrx.secagg.identity import Federation, Identity

    ids = [Identity.generate(h) for h in ("a", "b", "c")]
    fed = Federation.of(ids)
    agg = ThresholdProtection(fed)
    hosp = ThresholdProtection(fed, ids, key_dir=tmp_path)
    ctx = _ctx(1, participants=("a", "b", "c"))

    def run(agg, hosp, ctx):
        server = agg.new_server(ctx)
        clients = {h: hosp.new_client(ctx, h) for h in ctx.participants}
        xs = _inputs(ctx, ctx.round)
        asked = []
        for h in clients:
            clients[h].set_input(xs[h])
        for stage in server.stages:
            reqs = server.requests(stage, list(ctx.participants))
            asked += [stage] if reqs else []
            server.collect(stage, {h: clients[h].handle(stage, r) for h, r in reqs.items()})
        res = server.result()
        assert np.max(np.abs(res.total - sum(xs.values()))) <= res.stats["error_bound"]
        return asked

    assert run(agg, hosp, ctx)[:3] == ["crs", "keygen", "keyshares"]
    blobs = agg.checkpoint()
    for h in ("a", "b", "c"):
        assert (tmp_path / f"{h}.thckks.json").stat().st_mode & 0o777 == 0o600
    agg2 = ThresholdProtection(fed)
    agg2.restore(blobs)
    hosp2 = ThresholdProtection(fed, ids, key_dir=tmp_path)  # restarted hospitals
    ctx2 = _ctx(2, participants=("a", "b", "c"))
    assert run(agg2, hosp2, ctx2) == ["upload", "decrypt"]
    agg2.reconnected(["b"])  # a member came back with a new session: re-key
    assert run(agg2, hosp2, _ctx(3, participants=("a", "b", "c")))[0] == "crs"


KEY_ATTACKS = ["threshold-changed", "members-subset", "nonce-replaced", "public-swapped",
               "share-swapped"]


@pytest.mark.parametrize("attack", KEY_ATTACKS)
def test_key_generation_tampering_is_refused(attack):
    """The aggregator cannot change t, drop a member, choose the seed, or slip in a public key
    or key share of its own: every targeted hospital refuses and no epoch is installed."""
    prot = ThresholdProtection.simulated(("a", "b", "c"))
    ctx = _ctx(1, participants=("a", "b", "c"))
    evil_pub = prot.engine.keygen(b"\x09" * 32)[1]
    refusals: dict = {}

    def tamper(stage, reqs):
        out = {}
        for h, r in reqs.items():
            if stage == "crs" and attack == "threshold-changed":
                r = replace(r, threshold=2 if r.threshold != 2 else 3)
            elif stage == "crs" and attack == "members-subset":
                r = replace(r, members=("a", "b"))
            elif stage == "keygen" and attack == "nonce-replaced":
                r = replace(r, nonces=(replace(r.nonces[0], nonce=b"\x00" * 32),)
                            + r.nonces[1:])
            elif stage == "keyshares" and attack == "public-swapped":
                c = r.contributions
                r = replace(r, contributions=(replace(c[0], public=evil_pub),) + c[1:])
            elif stage == "keyshares" and attack == "share-swapped":
                r = replace(r, sealed_shares=(r.sealed_shares[1],) + r.sealed_shares[1:])
            out[h] = r
        return out

    with pytest.raises(ProtocolAbort):
        drive(prot, ctx, _inputs(ctx), on_requests=tamper, refusals=refusals)
    assert refusals, "nobody refused"
    assert prot.epoch is None
    assert sorted(refusals) == ["a", "b", "c"], refusals


@pytest.mark.slow
def test_ten_hospitals_production_parameters_with_four_dropouts():
    """n = 10, t = 6 at the production parameters (N = 8192, 128-bit): 4 hospitals drop after
    upload, 6 decrypt, the sum of all 10 uploads is within the stated bound; a 5th dropout
    (t - 1 = 5 left) aborts."""
    hs = tuple(f"h{i:02d}" for i in range(10))
    prot = ThresholdProtection.simulated(hs)
    ctx = _ctx(1, participants=hs, length=20_000)
    xs = _inputs(ctx, 11)
    res, _ = drive(prot, ctx, xs, drop_after={"upload": set(hs[:4])})
    assert res.stats["threshold"] == 6 and res.contributors == hs
    assert not set(hs[:4]) & set(res.stats["decryptors"])
    assert np.max(np.abs(res.total - sum(xs.values()))) <= res.stats["error_bound"] < 1e-3
    ctx2 = _ctx(2, participants=hs, length=20_000)
    with pytest.raises(ProtocolAbort, match="below the threshold"):
        drive(prot, ctx2, _inputs(ctx2), drop_after={"upload": set(hs[:5])})
