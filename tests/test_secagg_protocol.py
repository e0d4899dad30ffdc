"""Protocol tests of the masking state machines (secagg.masking), driven without transport:
exact sums, dropouts at every stage, aborts below t, and a scripted malicious aggregator."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedrx.secagg import graph as graphs
from fedrx.secagg import masking as mk
from fedrx.secagg.identity import Federation, Identity

IDS = [Identity.generate(f"h{i:02d}") for i in range(12)]
FED = Federation.of(IDS)
BY_NAME = {i.hospital: i for i in IDS}
STAGES = mk.STAGES_ACTIVE


class Round:
    """One round: n clients + honest server, with hooks for a malicious aggregator."""

    def __init__(self, n: int, t: int, *, active: bool = True, d: int = 16, m: int = 32,
                 graph: str = "complete", k: int = 0, sid: bytes | None = None, rnd: int = 1,
                 inputs: dict[str, np.ndarray] | None = None):
        parts = tuple(f"h{i:02d}" for i in range(n))
        sid = sid or os.urandom(32)
        g = graphs.complete_graph(parts) if graph == "complete" else \
            graphs.harary_graph(parts, k, sid, rnd)
        self.params = mk.MaskingParams(sid, rnd, parts, d, m, t, g, active, b"model-hash")
        self.server = mk.MaskingServer(self.params, FED)
        self.clients = {h: mk.MaskingClient(self.params, BY_NAME[h], FED) for h in parts}
        rng = np.random.default_rng(n * 1000 + t)  # test data only, not key material
        self.inputs = inputs or {h: rng.integers(0, 1 << m, d, dtype=np.uint64) for h in parts}
        for h, c in self.clients.items():
            c.set_input(self.inputs[h])
        self.aborts: dict[str, str] = {}
        self.sent: dict[str, dict[str, object]] = {}
        self.alive = set(parts)

    def step(self, stage: str, drop: set[str] = frozenset(),
             hook: Callable[[str, dict], dict] | None = None) -> None:
        self.alive -= set(drop)
        reqs = self.server.requests(stage, sorted(self.alive))
        if hook is not None:
            reqs = hook(stage, reqs)
        replies = {}
        for h, r in reqs.items():
            if h not in self.alive:
                continue
            try:
                replies[h] = self.clients[h].handle(stage, r)
            except mk.MaskingAbort as exc:
                self.aborts[h] = exc.reason
                self.alive.discard(h)
        self.sent[stage] = replies
        self.server.collect(stage, replies)

    def run(self, drops: dict[str, set[str]] | None = None, hook=None):
        drops = drops or {}
        for stage in self.params.stages:
            self.step(stage, drops.get(stage, set()), hook)
        return self.server.result()

    def expected(self, who) -> np.ndarray:
        tot = np.zeros(self.params.length, dtype=np.uint64)
        for h in who:
            tot += self.inputs[h]
        return tot & np.uint64((1 << self.params.modulus_bits) - 1)

    def revealed_kinds(self, owner: str) -> dict[str, set[str]]:
        """kind -> the holders that released a share of that kind for ``owner``."""
        out: dict[str, set[str]] = {}
        for h, c in self.clients.items():
            if owner in c.revealed:
                out.setdefault(c.revealed[owner], set()).add(h)
        return out

    def nothing_revealed(self) -> bool:
        return all(not c.revealed for c in self.clients.values())


# ------------------------------------------------------------------ correctness (P1)


@pytest.mark.parametrize("active", [True, False])
def test_exact_sum_no_dropouts(active):
    r = Round(5, 4, active=active)
    total, who = r.run()
    assert who == r.params.participants
    assert np.array_equal(total, r.expected(who))
    assert all(c.state is mk.ClientState.DONE for c in r.clients.values())


@pytest.mark.parametrize("stage", STAGES)
def test_dropout_at_each_stage_with_t_survivors_exact_sum(stage):
    r = Round(7, 5)
    total, who = r.run({stage: {"h02", "h05"}})
    dropped_before_input = stage in ("advertise_keys", "share_keys", "masked_input")
    expect = [h for h in r.params.participants
              if not (dropped_before_input and h in ("h02", "h05"))]
    assert list(who) == expect
    assert np.array_equal(total, r.expected(who))
    if stage == "masked_input":  # dropped peers' pairwise masks recovered via key shares
        assert set(r.revealed_kinds("h02")) == {mk.SECRET_KEY}
    if stage in ("consistency_check", "unmask"):  # their input counts; b recovered
        assert set(r.revealed_kinds("h02")) == {mk.SELF_MASK}


def test_dropouts_spread_over_every_stage():
    r = Round(10, 4, active=True)
    drops = {"advertise_keys": {"h00"}, "share_keys": {"h01"}, "masked_input": {"h02"},
             "consistency_check": {"h03"}, "unmask": {"h04", "h05"}}
    total, who = r.run(drops)
    assert set(who) == set(r.params.participants) - {"h00", "h01", "h02"}
    assert np.array_equal(total, r.expected(who))


@pytest.mark.parametrize("stage", STAGES)
def test_below_threshold_aborts_with_reason(stage):
    """P11: fewer than t hospitals left -> the round aborts; nothing revealed before unmask."""
    r = Round(5, 4)
    with pytest.raises(mk.MaskingAbort, match="need t=4"):
        r.run({stage: {"h01", "h03"}})
    assert r.server.state is mk.ServerState.ABORTED
    if stage != "unmask":
        assert r.nothing_revealed()
    else:  # only 3 < t holders answered: every secret has fewer than t released shares
        for owner in r.params.participants:
            assert all(len(v) < 4 for v in r.revealed_kinds(owner).values())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_dropout_patterns_property(data):
    """Random n, t, inputs and dropouts at every stage: exact sum iff >= t survive."""
    n = data.draw(st.integers(2, 7), label="n")
    t = data.draw(st.integers(2, n), label="t")
    active = data.draw(st.booleans(), label="active")
    m = data.draw(st.sampled_from([8, 21, 32, 64]), label="m")
    parts = [f"h{i:02d}" for i in range(n)]
    vals = data.draw(st.lists(st.integers(0, (1 << m) - 1), min_size=3 * n, max_size=3 * n))
    inputs = {h: np.array(vals[3 * i:3 * i + 3], dtype=np.uint64) for i, h in enumerate(parts)}
    r = Round(n, t, active=active, d=3, m=m, inputs=inputs)
    drops, left = {}, list(parts)
    for stage in r.params.stages:
        k = data.draw(st.integers(0, len(left)), label=f"drop@{stage}")
        drops[stage] = set(data.draw(st.permutations(left))[:k])
        left = [h for h in left if h not in drops[stage]]
    if len(left) >= t:
        total, who = r.run(drops)
        gone_early = set().union(*(drops[s] for s in ("advertise_keys", "share_keys",
                                                      "masked_input")))
        assert set(who) == set(parts) - gone_early
        assert np.array_equal(total, r.expected(who))
    else:
        with pytest.raises(mk.MaskingAbort):
            r.run(drops)


def test_secagg_plus_harary_with_dropouts():
    n, k = 12, 6
    t = graphs.default_threshold(k + 1)  # 5 of 7 holders: each neighbourhood tolerates 2
    r = Round(n, t, graph="harary", k=k)
    assert r.params.graph.is_regular(k)
    victim = "h03"
    total, who = r.run({"masked_input": {victim}, "unmask": {"h07"}})
    assert victim not in who and "h07" in who
    assert np.array_equal(total, r.expected(who))
    # only the victim's neighbours held (and released) its key shares
    holders = r.revealed_kinds(victim)[mk.SECRET_KEY]
    assert holders <= r.params.graph.of(victim)
    sent = r.sent["share_keys"]["h00"].shares
    assert {s.receiver for s in sent} == set(r.params.graph.of("h00"))


# -------------------------------------------------- masks: fresh and uniform (P2, P3)


def _masked(r: Round, h: str) -> np.ndarray:
    from fedrx.secagg import bitpack
    msg = r.sent["masked_input"][h]
    return bitpack.unpack(msg.packed, msg.modulus_bits, msg.length)


def test_masks_differ_per_round_and_per_session():
    sid = os.urandom(32)
    zeros = {f"h{i:02d}": np.zeros(64, dtype=np.uint64) for i in range(4)}
    runs = [Round(4, 3, d=64, sid=sid, rnd=1, inputs=zeros),
            Round(4, 3, d=64, sid=sid, rnd=2, inputs=zeros),
            Round(4, 3, d=64, sid=os.urandom(32), rnd=1, inputs=zeros)]
    ys = []
    for r in runs:
        total, _ = r.run()
        assert not total.any()
        ys.append(_masked(r, "h01"))
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.mean(ys[i] == ys[j]) < 0.05


def test_masked_input_looks_uniform_smoke():
    """SMOKE TEST ONLY (not a proof of P2): the bytes of a masked all-zero input pass a
    chi-square goodness-of-fit test against uniform at a very loose threshold."""
    d = 4096
    zeros = {f"h{i:02d}": np.zeros(d, dtype=np.uint64) for i in range(3)}
    r = Round(3, 2, d=d, m=32, inputs=zeros)
    r.run()
    raw = r.sent["masked_input"]["h00"].packed
    assert len(raw) == d * 4
    counts = np.bincount(np.frombuffer(raw, dtype=np.uint8), minlength=256)
    expected = len(raw) / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 255 + 8 * np.sqrt(2 * 255)  # df = 255; ~8 sigma
    y = _masked(r, "h00")
    assert abs(float(y.mean()) / 2**32 - 0.5) < 0.02


def test_wire_size_is_bit_packed():
    r = Round(3, 2, d=100, m=37)
    r.run()
    assert len(r.sent["masked_input"]["h00"].packed) == (100 * 37 + 7) // 8


# ------------------------------------------------------------ malicious aggregator


def _to_stage(r: Round, last: str) -> None:
    for stage in r.params.stages:
        r.step(stage)
        if stage == last:
            return


def test_alive_and_dropped_overlap_aborts_and_reveals_nothing():
    """P8: a request listing a peer as both alive and dropped is refused."""
    r = Round(5, 3, active=False)
    _to_stage(r, "masked_input")
    parts = r.params.participants
    bad = mk.UnmaskRequest(1, parts, ("h04",))
    with pytest.raises(mk.MaskingAbort, match="both alive and dropped"):
        r.clients["h00"].handle("unmask", bad)
    assert r.clients["h00"].revealed == {}
    assert r.clients["h00"].state is mk.ClientState.ABORTED


def test_malicious_server_cannot_get_both_shares_of_one_peer():
    """P8/P9: the server shows h04 alive to some and dropped to others (active mode)."""
    r = Round(5, 4)
    _to_stage(r, "consistency_check")
    parts = r.params.participants
    sigs = tuple(r.sent["consistency_check"].values())
    honest = mk.UnmaskRequest(1, parts, (), sigs)
    lie = mk.UnmaskRequest(1, tuple(h for h in parts if h != "h04"), ("h04",), sigs)
    released = {}
    for h in ("h00", "h01"):  # these see h04 alive -> they reveal b-shares of h04
        released[h] = r.clients[h].handle("unmask", honest)
    for h in ("h02", "h03"):  # these are told h04 dropped -> must refuse
        with pytest.raises(mk.MaskingAbort, match="changed between"):
            r.clients[h].handle("unmask", lie)
    # asking an already-answered hospital again is refused too (no second reveal)
    with pytest.raises(mk.MaskingAbort):
        r.clients["h00"].handle("unmask", lie)
    kinds = r.revealed_kinds("h04")
    assert kinds == {mk.SELF_MASK: {"h00", "h01"}}  # never a single secret-key share
    assert all(s.kind == mk.SELF_MASK for h in released for s in released[h].shares)


def test_inconsistent_survivor_lists_in_consistency_check_abort_everyone():
    """P9: different U3 to different groups: neither list reaches t signatures (2t > n)."""
    r = Round(5, 4)
    _to_stage(r, "masked_input")
    parts = r.params.participants
    l1, l2 = parts, tuple(h for h in parts if h != "h00")
    sigs = []
    for h in parts:
        req = mk.ConsistencyRequest(1, l1 if h in ("h00", "h01", "h02") else l2)
        sigs.append(r.clients[h].handle("consistency_check", req))
    for h in parts:
        lst = l1 if h in ("h00", "h01", "h02") else l2
        dropped = tuple(x for x in parts if x not in lst)
        with pytest.raises(mk.MaskingAbort, match="valid consistency signatures"):
            r.clients[h].handle("unmask", mk.UnmaskRequest(1, lst, dropped, tuple(sigs)))
    assert r.nothing_revealed()


def test_survivor_list_changed_between_stages_aborts():
    r = Round(6, 4)
    _to_stage(r, "consistency_check")
    parts = r.params.participants
    sigs = tuple(r.sent["consistency_check"].values())
    smaller = tuple(h for h in parts if h != "h05")
    with pytest.raises(mk.MaskingAbort, match="changed between"):
        r.clients["h01"].handle("unmask", mk.UnmaskRequest(1, smaller, ("h05",), sigs))
    assert r.clients["h01"].revealed == {}


def test_dropped_list_inconsistent_with_received_shares_aborts():
    r = Round(5, 3, active=False)
    r.step("advertise_keys")
    r.step("share_keys", drop={"h04"})  # h04 never shared
    r.step("masked_input")
    parts = tuple(h for h in r.params.participants if h != "h04")
    with pytest.raises(mk.MaskingAbort, match="dropped list disagrees"):
        r.clients["h00"].handle("unmask", mk.UnmaskRequest(1, parts[:-1], (parts[-1], "h04")))
    with pytest.raises(mk.MaskingAbort, match="sent me no shares"):
        r.clients["h01"].handle("unmask", mk.UnmaskRequest(1, parts + ("h04",), ()))
    assert r.nothing_revealed()


def test_server_naming_client_itself_dropped_aborts():
    r = Round(5, 3, active=False)
    _to_stage(r, "masked_input")
    parts = r.params.participants
    req = mk.UnmaskRequest(1, tuple(h for h in parts if h != "h02"), ("h02",))
    with pytest.raises(mk.MaskingAbort, match="lists me as dropped"):
        r.clients["h02"].handle("unmask", req)
    assert r.clients["h02"].revealed == {}


def test_client_refuses_unmask_below_threshold():
    r = Round(5, 4, active=False)
    _to_stage(r, "masked_input")
    parts = r.params.participants
    with pytest.raises(mk.MaskingAbort, match="need t=4"):
        r.clients["h00"].handle("unmask", mk.UnmaskRequest(1, parts[:3], parts[3:]))
    assert r.nothing_revealed()


def test_unmask_without_valid_signatures_aborts():
    r = Round(5, 4)
    _to_stage(r, "consistency_check")
    parts = r.params.participants
    forged = tuple(dataclasses.replace(s, signature=bytes(64))
                   for s in r.sent["consistency_check"].values())
    with pytest.raises(mk.MaskingAbort, match="valid consistency signatures"):
        r.clients["h00"].handle("unmask", mk.UnmaskRequest(1, parts, (), forged))


def test_repeated_valid_signature_counts_once():
    """P9: t copies of ONE hospital's valid consistency signature are one signer, not t."""
    r = Round(5, 4)
    _to_stage(r, "consistency_check")
    parts = r.params.participants
    one = r.sent["consistency_check"]["h01"]
    with pytest.raises(mk.MaskingAbort, match="only 1 valid consistency signatures"):
        r.clients["h00"].handle("unmask", mk.UnmaskRequest(1, parts, (), (one,) * 5))


def _forged_ad(ad: mk.AdvertiseKeys) -> mk.AdvertiseKeys:
    evil = IDS[-1]  # signs with the wrong (but pinned) identity
    from fedrx.secagg import kex
    _, pk = kex.generate_keypair()
    msg = mk.advertise_message(b"", ad.round, ad.hospital, ad.enc_public, pk)
    return dataclasses.replace(ad, mask_public=pk, signature=evil.sign(msg))


def test_bad_signature_on_advertised_keys_excludes_peer_at_clients():
    """P7: a forged advertisement relayed by the server is excluded by every client."""
    r = Round(5, 3)
    r.step("advertise_keys")

    def hook(stage, reqs):
        return {h: dataclasses.replace(q, advertised=tuple(
            _forged_ad(a) if a.hospital == "h03" else a for a in q.advertised))
            for h, q in reqs.items()}

    with pytest.raises(mk.MaskingAbort):  # honest server sees shares missing for h03
        r.step("share_keys", hook=hook)
    assert "altered" in r.aborts["h03"]
    for h in ("h00", "h01", "h02", "h04"):
        assert r.clients[h].excluded == ["h03"]
        assert "h03" not in {s.receiver for s in r.sent["share_keys"][h].shares}


def test_forged_or_replayed_advertisement_rejected_by_server_round_continues():
    old = Round(6, 3, rnd=1)
    old.step("advertise_keys")
    old_ad = old.sent["advertise_keys"]["h01"]
    r = Round(6, 3, sid=old.params.session_id, rnd=2)
    reqs = r.server.requests("advertise_keys", r.params.participants)
    replies = {h: r.clients[h].handle("advertise_keys", q) for h, q in reqs.items()}
    replies["h01"] = old_ad  # replay of round 1
    replies["h02"] = _forged_ad(replies["h02"])  # forged signature
    replies["h03"] = dataclasses.replace(old_ad, round=2)  # replay with the round rewritten
    r.server.collect("advertise_keys", replies)
    assert r.server.view.u1 == ("h00", "h04", "h05")
    assert set(r.server.view.rejected) == {"h01", "h02", "h03"}
    for stage in r.params.stages[1:]:
        r.step(stage)
    total, who = r.server.result()
    assert who == ("h00", "h04", "h05")
    assert np.array_equal(total, r.expected(who))


def test_replayed_advertisement_excluded_at_client():
    old = Round(4, 2, rnd=1)
    old.step("advertise_keys")
    r = Round(4, 2, sid=old.params.session_id, rnd=2)
    r.step("advertise_keys")

    def hook(stage, reqs):
        return {h: dataclasses.replace(q, advertised=tuple(
            old.sent["advertise_keys"]["h01"] if a.hospital == "h01" else a
            for a in q.advertised)) for h, q in reqs.items()}

    with pytest.raises(mk.MaskingAbort):
        r.step("share_keys", hook=hook)
    assert r.clients["h00"].excluded == ["h01"]


def test_tampered_share_ciphertext_rejected_by_aead():
    """P6: a share altered in transit or redirected to another receiver fails AEAD."""
    r = Round(6, 4)
    r.step("advertise_keys")
    r.step("share_keys")

    def hook(stage, reqs):
        q = reqs["h00"]
        s0 = q.shares[0]
        ct = bytearray(s0.ciphertext)
        ct[-1] ^= 0x01
        out = dict(reqs)
        out["h00"] = dataclasses.replace(q, shares=(dataclasses.replace(
            s0, ciphertext=bytes(ct)),) + q.shares[1:])
        # redirect: a share meant for h02 relabelled as addressed to h01
        q1 = reqs["h01"]
        for_h02 = next(s for s in reqs["h02"].shares if s.sender != "h01")
        redirected = dataclasses.replace(for_h02, receiver="h01")
        rest = tuple(s for s in q1.shares if s.sender != for_h02.sender)
        out["h01"] = dataclasses.replace(q1, shares=rest + (redirected,))
        return out

    r.step("masked_input", hook=hook)
    assert "failed authentication" in r.aborts["h00"]
    assert "failed authentication" in r.aborts["h01"]
    # the round still completes exactly: h00/h01 count as dropped at masked_input
    for stage in r.params.stages[3:]:
        r.step(stage)
    total, who = r.server.result()
    assert set(who) == {"h02", "h03", "h04", "h05"}
    assert np.array_equal(total, r.expected(who))


def test_share_plaintext_is_exactly_the_two_shares_and_other_lengths_abort():
    """The AEAD plaintext is b_share || k_share (2 x 33 bytes, no names or length prefixes);
    a correctly authenticated plaintext of any other length aborts as malformed."""
    from fedrx.secagg import kex, shamir
    r = Round(5, 3, active=False)
    r.step("advertise_keys")
    r.step("share_keys")
    sender, receiver = r.clients["h01"], "h00"
    sid_r, rnd = sender._sid_r, r.params.round
    key = kex.share_key(sender._enc_shared[receiver], sid_r, rnd, "h01", receiver)
    ad = kex.share_ad(sid_r, rnd, "h01", receiver)
    real = next(s for s in r.sent["share_keys"]["h01"].shares if s.receiver == receiver)
    pt = kex.open_sealed(key, real.nonce, real.ciphertext, ad)
    assert len(pt) == 2 * shamir.SHARE_BYTES == 66
    assert len(real.ciphertext) == 66 + 16  # + GCM tag
    # the per-peer enc secrets are held only between share_keys and masked_input
    assert set(sender._enc_shared) == set(r.params.participants) - {"h01"}
    bad_pts = {"h00": pt[:-1], "h02": pt + b"\x00",
               "h03": kex.encode_fields("h01", "h03", pt[:33], pt[33:])}

    def hook(stage, reqs):
        out = dict(reqs)
        for rcv, bad in bad_pts.items():
            k = kex.share_key(sender._enc_shared[rcv], sid_r, rnd, "h01", rcv)
            nonce, ct = kex.seal(k, bad, kex.share_ad(sid_r, rnd, "h01", rcv))
            q = reqs[rcv]
            out[rcv] = dataclasses.replace(q, shares=tuple(
                mk.EncryptedShare("h01", rcv, nonce, ct) if s.sender == "h01" else s
                for s in q.shares))
        return out

    with pytest.raises(mk.MaskingAbort):  # only h01 and h04 remain: below t = 3
        r.step("masked_input", hook=hook)
    for rcv in bad_pts:
        assert r.aborts[rcv] == f"{rcv}: share from h01 is malformed"
        assert r.clients[rcv]._enc_shared == {} and r.clients[rcv]._held == {}
    assert r.clients["h04"]._enc_shared == {}  # dropped once the shares were opened
    assert all(len(b) == len(k) == 33 for b, k in r.clients["h04"]._held.values())


def test_tampered_key_share_of_dropped_peer_caught_by_public_key_check():
    """The Shamir fits-32-bytes check almost never catches a wrong share (p = 2**256 + 297);
    for a dropped peer's mask key the aggregator compares the reconstructed key with the
    signed advertisement, so a tampered key share aborts the round instead of a wrong sum."""
    for active in (True, False):
        r = Round(5, 4, active=active)
        r.step("advertise_keys")
        r.step("share_keys")
        r.step("masked_input", drop={"h04"})
        if active:
            r.step("consistency_check")
        reqs = r.server.requests("unmask", sorted(r.alive))
        replies = {h: r.clients[h].handle("unmask", q) for h, q in reqs.items()}
        rep = replies["h00"]
        shares = []
        for s in rep.shares:
            if s.owner == "h04":
                assert s.kind == mk.SECRET_KEY
                b = bytearray(s.share)
                b[-1] ^= 0x01
                s = dataclasses.replace(s, share=bytes(b))
            shares.append(s)
        replies["h00"] = dataclasses.replace(rep, shares=tuple(shares))
        with pytest.raises(mk.MaskingAbort, match="does not match its advertisement"):
            r.server.collect("unmask", replies)


def _unmask_replies(r: Round, drop: set[str] = frozenset()) -> dict[str, mk.UnmaskReply]:
    """Run a round up to unmask and collect the honest replies (not yet given to the server)."""
    for stage in r.params.stages[:-1]:
        r.step(stage)
    r.alive -= set(drop)
    reqs = r.server.requests("unmask", sorted(r.alive))
    return {h: r.clients[h].handle("unmask", q) for h, q in reqs.items()}


def _with_wrong_self_mask_shares(reply: mk.UnmaskReply, owners: set[str],
                                 raw: bytes | None = None) -> mk.UnmaskReply:
    """``reply`` with the self-mask share of each of ``owners`` replaced by a wrong one (the
    value + 1 mod p: still a well-formed 33-byte field element), or by ``raw``."""
    from fedrx.secagg import shamir
    out, hit = [], set()
    for s in reply.shares:
        if s.owner in owners:
            assert s.kind == mk.SELF_MASK
            y = (int.from_bytes(s.share, "big") + 1) % shamir.PRIME
            s = dataclasses.replace(s, share=raw if raw is not None else y.to_bytes(33, "big"))
            hit.add(s.owner)
        out.append(s)
    assert hit == owners
    return dataclasses.replace(reply, shares=tuple(out))


@pytest.mark.parametrize("active", [True, False])
def test_wrong_self_mask_share_of_surviving_peer_aborts_before_unmasking(active, monkeypatch):
    """P5: h00 reveals a wrong self-mask share for the surviving h02. With all 5 > t = 3
    holders answering, the aggregator's consistency check names h02 and aborts before any
    mask is removed; no result is produced and the reason carries no share material."""
    r = Round(5, 3, active=active)
    replies = _unmask_replies(r)
    honest = replies["h00"]
    replies["h00"] = _with_wrong_self_mask_shares(honest, {"h02"})

    def no_unmasking(*a, **k):
        raise AssertionError("a mask was removed")

    monkeypatch.setattr(mk, "prg_accumulate_many", no_unmasking)
    reason = "self-mask shares for h02 are inconsistent (a holder revealed a wrong share)"
    with pytest.raises(mk.MaskingAbort, match=re.escape(reason)) as exc:
        r.server.collect("unmask", replies)
    assert exc.value.reason == r.server.abort_reason == reason
    assert r.server.state is mk.ServerState.ABORTED
    with pytest.raises(mk.MaskingAbort, match="no result"):
        r.server.result()
    for s in honest.shares + replies["h00"].shares:
        assert s.share.hex() not in reason


def test_wrong_self_mask_share_would_otherwise_corrupt_the_sum(monkeypatch):
    """Why the check exists: the same tampering with the check switched off completes the
    round with a wrong sum (the fits-32-bytes check in reconstruct does not catch it)."""
    from fedrx.secagg import shamir
    r = Round(5, 3, active=False)
    replies = _unmask_replies(r)
    replies["h00"] = _with_wrong_self_mask_shares(replies["h00"], {"h00"})  # index 1: used
    monkeypatch.setattr(shamir, "consistent_many", lambda sets, t: [True] * len(sets))
    r.server.collect("unmask", replies)
    total, who = r.server.result()
    assert not np.array_equal(total, r.expected(who))


def test_wrong_self_mask_shares_for_several_owners_are_all_named():
    r = Round(6, 4, active=False)
    replies = _unmask_replies(r)
    replies["h05"] = _with_wrong_self_mask_shares(replies["h05"], {"h01", "h03"})
    with pytest.raises(mk.MaskingAbort, match=re.escape(
            "self-mask shares for h01, h03 are inconsistent (a holder revealed a wrong share)")):
        r.server.collect("unmask", replies)


def test_wrong_self_mask_share_detected_in_secagg_plus_neighbourhoods():
    """SecAgg+: each owner's shares come from its own neighbourhood (a different index set
    per owner); a wrong share for one neighbour is attributed to that neighbour."""
    n, k = 12, 6
    t = graphs.default_threshold(k + 1)  # 5 of 7 holders
    r = Round(n, t, graph="harary", k=k)
    replies = _unmask_replies(r)
    victim = sorted(r.params.graph.of("h04"))[0]
    replies["h04"] = _with_wrong_self_mask_shares(replies["h04"], {victim})
    with pytest.raises(mk.MaskingAbort, match=re.escape(
            f"self-mask shares for {victim} are inconsistent (a holder revealed")):
        r.server.collect("unmask", replies)


def test_malformed_self_mask_share_keeps_its_abort_reason():
    r = Round(5, 3, active=False)
    replies = _unmask_replies(r)
    replies["h01"] = _with_wrong_self_mask_shares(replies["h01"], {"h03"}, raw=b"\x00" * 32)
    with pytest.raises(mk.MaskingAbort) as exc:
        r.server.collect("unmask", replies)
    assert exc.value.reason == "self-mask shares for h03 are inconsistent"


def test_exactly_t_unmask_answers_round_completes_nothing_to_check():
    """With exactly t holders answering, every seed has exactly t shares: nothing can be
    checked and the round completes exactly. The limit, stated in threat_model.md §4.5: a
    wrong self-mask share in that case is not detected and the sum is wrong."""
    r = Round(5, 3, active=False)
    replies = _unmask_replies(r, drop={"h03", "h04"})
    assert len(replies) == 3
    r.server.collect("unmask", replies)
    total, who = r.server.result()
    assert who == r.params.participants
    assert np.array_equal(total, r.expected(who))

    r = Round(5, 3, active=False)
    replies = _unmask_replies(r, drop={"h03", "h04"})
    replies["h00"] = _with_wrong_self_mask_shares(replies["h00"], {"h02"})
    r.server.collect("unmask", replies)  # not detectable: no abort
    total, who = r.server.result()
    assert not np.array_equal(total, r.expected(who))


# ------------------------------------------------------------ state machine hygiene


def test_invalid_transitions_abort():
    r = Round(3, 2)
    c = r.clients["h00"]
    with pytest.raises(mk.MaskingAbort, match="not allowed in state init"):
        c.handle("unmask", mk.UnmaskRequest(1, (), ()))
    with pytest.raises(mk.MaskingAbort, match="already aborted"):
        c.handle("advertise_keys", mk.AdvertiseRequest(1))
    c2 = r.clients["h01"]
    with pytest.raises(mk.MaskingAbort, match="not for round"):
        c2.handle("advertise_keys", mk.AdvertiseRequest(7))
    with pytest.raises(mk.MaskingAbort, match="not allowed"):
        r.server.collect("unmask", {})
    with pytest.raises(mk.MaskingAbort, match="already aborted"):
        r.server.requests("advertise_keys", ["h00"])


def test_no_secrets_in_reprs_or_errors():
    r = Round(3, 2, active=False)
    _to_stage(r, "masked_input")
    c = r.clients["h00"]
    b_share, k_share = c._held["h00"]
    rep = repr(c) + repr(r.server)
    reply = c.handle("unmask", mk.UnmaskRequest(1, r.params.participants, ()))
    rep += repr(reply)
    for secret in (b_share, k_share):
        assert secret.hex() not in rep and repr(secret) not in rep
    try:
        r.clients["h01"].handle("unmask", mk.UnmaskRequest(1, ("h00",), ("h00",)))
    except mk.MaskingAbort as exc:
        assert b_share.hex() not in str(exc)
