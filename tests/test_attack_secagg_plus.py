"""SecAgg+ against a malicious aggregator (issue 14 items 4 and 9).

Item 4: the aggregator gives separate groups of hospitals their own survivor lists (n=10,
k=4, t=4, one colluder within n_C=1). Under the old rule (t valid signatures from ANYONE on
the list, a global survivor count) the victim's input came out bit-exactly. Now a hospital
acts on its own neighbourhood's part of U3 (at least t of it) and reveals a share only when
t valid signatures from the owner's neighbourhood agree with its list.

Item 9: a hospital receives, verifies and keeps only its neighbourhood's advertisements,
lists and signatures.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import numpy as np
import pytest
from secagg_mask_round import BY_NAME, Round

from fedrx.errors import ProtocolAbort
from fedrx.secagg import bitpack, kex, shamir
from fedrx.secagg.mask import client_unmask
from fedrx.secagg.mask.messages import (
    SECRET_KEY,
    SELF_MASK,
    ConsistencyRequest,
    ConsistencySignature,
    ShareKeysRequest,
    UnmaskRequest,
)
from fedrx.secagg.mask.transcript import consistency_message, mask_sign, round_session_id
from fedrx.secagg.prg import prg_accumulate_many


def ring(r: Round) -> list[str]:
    """The Harary ring order of the round (as :func:`fedrx.secagg.graph.harary_graph`)."""
    p = r.params
    return sorted(p.participants, key=lambda h: hashlib.sha256(kex.encode_fields(
        "fedrx/secagg/v1/graph", p.session_id, p.round, h)).digest())


def secagg_plus(n: int = 10, k: int = 4, t: int = 4, sid: bytes = b"S" * 32) -> Round:
    return Round(n, t, graph="harary", k=k, sid=sid)


class SplitViews:
    """The issue's attack: after an honest masked_input, the aggregator gives each group of
    honest hospitals its own survivor list; the colluder signs whatever each receiver needs
    and reveals both shares of everything it holds. Positions are ring positions."""

    def __init__(self, r: Round, groups: dict[str, tuple[set[int], set[int]]], colluder: int,
                 victim: int):
        self.r, self.pos = r, ring(r)
        self.c, self.u = self.pos[colluder], self.pos[victim]
        # hospital -> the (global) list its group is given
        self.lists: dict[str, frozenset[str]] = {}
        for members, alive in groups.values():
            for i in members:
                self.lists[self.pos[i]] = frozenset(self.pos[j] for j in alive)
        self.sigs: dict[str, bytes] = {}
        self.revealed: dict[str, list] = {}
        self.refused: dict[str, str] = {}

    def local(self, h: str, lst: frozenset[str]) -> tuple[str, ...]:
        return tuple(sorted(lst & self.r.params.graph.holders(h)))

    def colluder_sig(self, for_list: frozenset[str]) -> bytes:
        p = self.r.params
        sid_r = round_session_id(p)
        return BY_NAME[self.c].sign(consistency_message(
            sid_r, p.round, self.local(self.c, for_list), p.context))

    def run(self) -> None:
        r, p, g = self.r, self.r.params, self.r.params.graph
        for stage in ("advertise_keys", "share_keys"):
            r.step(stage)
        self.colluder_pairs = dict(r.clients[self.c].state._pair_keys)  # a colluder keeps them
        r.step("masked_input")
        self.colluder_held = dict(r.clients[self.c].state.held)
        for h, lst in self.lists.items():
            try:
                s = r.clients[h].handle("consistency_check",
                                        ConsistencyRequest(p.round, self.local(h, lst)))
                self.sigs[h] = s.signature
            except ProtocolAbort as exc:
                self.refused[h] = exc.reason
        for h, lst in self.lists.items():
            if h in self.refused:
                continue
            mine = g.holders(h)
            sigs = [ConsistencySignature(z, p.round, sig, tuple(
                u for u in self.local(z, self.lists[z]) if u not in mine))
                for z, sig in self.sigs.items() if z in g.two_hop(h)]
            sigs.append(ConsistencySignature(self.c, p.round, self.colluder_sig(lst), tuple(
                u for u in self.local(self.c, lst) if u not in mine)))
            surv = self.local(h, lst)
            held = r.clients[h].state.u2
            dropped = tuple(sorted(held - set(surv)))
            try:
                rep = r.clients[h].handle("unmask", UnmaskRequest(p.round, surv, dropped,
                                                                  tuple(sigs)))
                self.revealed[h] = list(rep.shares)
            except ProtocolAbort as exc:
                self.refused[h] = exc.reason

    def shares_of(self, owner: str, kind: str) -> dict[int, bytes]:
        p = self.r.params
        out = {p.index(h): s.share for h, lst in self.revealed.items() for s in lst
               if s.owner == owner and s.kind == kind}
        if owner in self.colluder_held:  # the colluder reveals both of what it holds
            b, k = self.colluder_held[owner]
            out[p.index(self.c)] = b if kind == SELF_MASK else k
        return out

    def recover_victim(self, u: str | None = None) -> np.ndarray | None:
        """``u``'s (default: the victim's) input from its masked vector, or None if some
        share set the aggregator needs is short."""
        r, p, g = self.r, self.r.params, self.r.params.graph
        t, u = p.threshold, (self.u if u is None else u)
        if u not in r.sent["masked_input"]:
            return None
        b = self.shares_of(u, SELF_MASK)
        if len(b) < t:
            return None
        sid_r = round_session_id(p)
        masks = [(kex.self_mask_key(shamir.reconstruct(b, t), sid_r, p.round, u), -1)]
        for v in sorted(g.of(u)):
            if v == self.c:
                masks.append((self.colluder_pairs[u], -mask_sign(u, v)))
                continue
            ks = self.shares_of(v, SECRET_KEY)
            if len(ks) < t:
                return None
            sk = kex.private_from_bytes(shamir.reconstruct(ks, t))
            ads = r.sent["advertise_keys"]
            if v not in ads:
                return None
            k_uv = kex.mask_key(kex.agree(sk, ads[u].mask_public), sid_r, p.round, u, v)
            masks.append((k_uv, -mask_sign(u, v)))
        msg = r.sent["masked_input"][u]
        y = bitpack.unpack(msg.packed, msg.modulus_bits, msg.length)
        prg_accumulate_many(masks, y, p.modulus_bits)
        return y & np.uint64((1 << p.modulus_bits) - 1)


# Ring positions 0..9; victim 0, colluder 1 (k=4: i is joined to i +- 1, i +- 2). Group G0
# is told 2, 8, 9 dropped; G9 is told 3, 4, 7, 8 dropped; G8 is told 2, 9 dropped. Then
# holders 0, 2, 8, 9 reveal 0's self-mask share, {0, 3, 4}, {0, 7, 8}, {0, 6, 7, 9} reveal
# the mask keys of 2, 9, 8, and the colluder gives the pairwise key of (0, 1).
ALL = set(range(10))
GROUPS = {"G0": ({0, 5, 7}, ALL - {2, 8, 9}),
          "G9": ({2, 6, 9}, {0, 1, 2, 5, 6, 9}),
          "G8": ({3, 4, 8}, ALL - {2, 9})}


def _old_rules(monkeypatch) -> None:
    """The defence removed: no per-neighbourhood survivor count, no certification."""
    real = client_unmask.check_survivors

    def any_count(ctx, ads, u2, survivors, stage):
        lax = dataclasses.replace(ctx, params=dataclasses.replace(ctx.params, threshold=1))
        return real(lax, ads, u2, survivors, stage)

    monkeypatch.setattr(client_unmask, "check_survivors", any_count)
    monkeypatch.setattr("fedrx.secagg.mask.client_consistency.check_survivors", any_count)
    monkeypatch.setattr(client_unmask.UnmaskState, "_uncertified", lambda self, req, s: None)


def _attack(setup: Callable[[], None] | None = None) -> SplitViews:
    if setup is not None:
        setup()
    a = SplitViews(secagg_plus(), GROUPS, colluder=1, victim=0)
    a.run()
    return a


def test_split_survivor_lists_recover_the_victim_without_the_defence(monkeypatch):
    """The attack is real: with the per-neighbourhood rules switched off, the victim's
    input comes out bit-exactly."""
    a = _attack(lambda: _old_rules(monkeypatch))
    assert not a.refused
    x = a.recover_victim()
    assert x is not None and np.array_equal(x, a.r.inputs[a.u])


def test_split_survivor_lists_are_refused():
    """Item 4: the same attack against the hospitals' real code: every hospital whose
    neighbourhood the split touches refuses; the victim's input cannot be recovered."""
    a = _attack()
    assert all(a.recover_victim(u) is None for u in a.pos if u != a.c)
    victim_holders = a.r.params.graph.holders(a.u) - {a.c}
    assert victim_holders <= set(a.refused)  # nobody reveals a share of the victim
    assert all(s.owner != a.u for lst in a.revealed.values() for s in lst)


def test_signatures_from_outside_the_neighbourhood_do_not_count():
    """t valid, correctly relayed signatures that agree with my list, but from hospitals
    outside my neighbourhood (two hops away): the old rule counted them; my own status is
    not certified by MY neighbourhood, so I refuse."""
    r = secagg_plus(12, 4, 4)
    for stage in ("advertise_keys", "share_keys", "masked_input", "consistency_check"):
        r.step(stage)
    me = ring(r)[0]
    g, p = r.params.graph, r.params
    req = r.server.requests("unmask", sorted(r.alive))[me]
    far = tuple(s for s in req.signatures if s.hospital not in g.holders(me))
    assert len(far) >= p.threshold
    with pytest.raises(ProtocolAbort, match="valid consistency signatures from the "
                                            "neighbourhood of"):
        r.clients[me].handle("unmask", UnmaskRequest(p.round, req.survivors, req.dropped, far))
    assert r.clients[me].revealed == {}


def _lying_unmask_request(r: Round) -> tuple[str, UnmaskRequest]:
    """pos[1]'s genuine signature over a list in which pos[2] dropped, relayed to pos[0];
    pos[-1]'s signature is missing."""
    for stage in ("advertise_keys", "share_keys", "masked_input", "consistency_check"):
        r.step(stage)
    pos = ring(r)
    me, p, g = pos[0], r.params, r.params.graph
    req = r.server.requests("unmask", sorted(r.alive))[me]
    other = sorted(g.holders(pos[1]) - {pos[2]})
    sig = BY_NAME[pos[1]].sign(consistency_message(round_session_id(p), p.round, other,
                                                   p.context))
    lie = tuple(s for s in req.signatures if s.hospital not in (pos[1], pos[-1])) + (
        ConsistencySignature(pos[1], p.round, sig, tuple(u for u in other
                                                          if u not in g.holders(me))),)
    return me, UnmaskRequest(p.round, req.survivors, req.dropped, lie)


def test_neighbour_signing_a_different_list_does_not_count(monkeypatch):
    """My neighbour pos[1] was shown a list in which pos[2] (a common neighbour) dropped
    and signed it; pos[-1] died before signing. Relayed to me, pos[1]'s signature does not
    verify over my list rebuilt for pos[1], so my own status has 3 < t certifiers and I
    refuse. Counting every valid signature whatever list it covers (the old rule) passes."""
    r = secagg_plus(10, 4, 4)
    me, bad = _lying_unmask_request(r)
    with pytest.raises(ProtocolAbort, match="only 3 valid consistency signatures"):
        r.clients[me].handle("unmask", bad)
    r2 = secagg_plus(10, 4, 4)
    me, bad = _lying_unmask_request(r2)
    monkeypatch.setattr(client_unmask, "signed_by", lambda *a: True)  # defence removed
    r2.clients[me].handle("unmask", bad)
    assert r2.clients[me].revealed


@pytest.mark.parametrize("n,k", [(10, 4), (12, 6), (9, 2)])
@pytest.mark.parametrize("drop_stage", ["share_keys", "masked_input", "consistency_check",
                                        "unmask"])
def test_honest_secagg_plus_round_with_a_dropout(n, k, drop_stage):
    from fedrx.secagg import graph as graphs
    t = graphs.default_threshold(k + 1)
    r = secagg_plus(n, k, t, sid=bytes([n, k]) * 16)
    victim = ring(r)[3]
    if k == 2:  # t = 3 = k + 1: no dropout tolerance in a neighbourhood of 3
        total, who = r.run()
    else:
        total, who = r.run({drop_stage: {victim}})
    assert np.array_equal(total, r.expected(who))


def test_hospital_gets_only_its_neighbourhood():
    """Item 9: what the aggregator sends a hospital is sized by k, never by n."""
    for n in (10, 40):
        r = secagg_plus(n, 4, 4, sid=bytes([n]) * 32)
        g = r.params.graph
        for stage in r.params.stages:
            reqs = r.server.requests(stage, sorted(r.alive))
            for h, q in reqs.items():
                if stage == "share_keys":
                    assert {a.hospital for a in q.advertised} == g.holders(h)
                if stage == "masked_input":
                    assert {s.sender for s in q.shares} == g.of(h)
                if stage == "consistency_check":
                    assert set(q.survivors) == g.holders(h)
                if stage == "unmask":
                    assert set(q.survivors) == g.holders(h) and q.dropped == ()
                    assert {s.hospital for s in q.signatures} == g.two_hop(h)
                    assert all(len(s.outside) <= 4 for s in q.signatures)
            r.step(stage)
        assert np.array_equal(r.server.result()[0], r.expected(r.params.participants))


def test_non_neighbour_advertisement_aborts():
    r = secagg_plus(10, 4, 4)
    r.step("advertise_keys")
    pos = ring(r)
    me = pos[0]
    ads = r.sent["advertise_keys"]
    relay = tuple(ads[h] for h in sorted(r.params.graph.holders(me) | {pos[5]}))
    with pytest.raises(ProtocolAbort, match="not a neighbour"):
        r.clients[me].handle("share_keys", ShareKeysRequest(1, relay))


def test_survivor_list_beyond_the_neighbourhood_aborts():
    r = secagg_plus(10, 4, 4)
    for stage in ("advertise_keys", "share_keys", "masked_input"):
        r.step(stage)
    me = ring(r)[0]
    with pytest.raises(ProtocolAbort, match="not a neighbour"):
        r.clients[me].handle("consistency_check",
                             ConsistencyRequest(1, tuple(r.params.participants)))


def test_neighbourhood_survivor_count_below_t_aborts():
    """Per-neighbourhood threshold: a list with fewer than t of my neighbourhood (the rest
    'dropped') is refused at consistency_check, though t hospitals survive globally."""
    r = secagg_plus(10, 4, 4)
    for stage in ("advertise_keys", "share_keys", "masked_input"):
        r.step(stage)
    pos = ring(r)
    me = pos[0]
    with pytest.raises(ProtocolAbort, match="need t=4"):
        r.clients[me].handle("consistency_check", ConsistencyRequest(1, (me, pos[1], pos[2])))


def test_secagg_plus_round_over_the_wire_codec():
    """Every request and reply of a SecAgg+ round survives the protobuf codec unchanged
    (ConsistencySignature.outside included), and the round completes on the decoded copies."""
    from fedrx.nodes.codec import from_bytes, to_bytes
    r = secagg_plus(10, 4, 4)
    for stage in r.params.stages:
        reqs = r.server.requests(stage, sorted(r.alive))
        replies = {}
        for h, q in reqs.items():
            q2 = from_bytes(to_bytes(q))
            assert q2 == q
            replies[h] = from_bytes(to_bytes(r.clients[h].handle(stage, q2)))
        if stage == "unmask":
            assert any(s.outside for q in reqs.values() for s in q.signatures)
        r.server.collect(stage, replies)
    total, who = r.server.result()
    assert np.array_equal(total, r.expected(who))

