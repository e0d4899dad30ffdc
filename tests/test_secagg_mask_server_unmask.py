"""Aggregator state unmask: wrong revealed shares abort before any mask is removed."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from secagg_mask_round import Round, unmask_replies, with_wrong_self_mask_shares

from fedrx.errors import ProtocolAbort
from fedrx.secagg import graph as graphs
from fedrx.secagg.mask import server_unmask
from fedrx.secagg.mask.messages import SECRET_KEY
from fedrx.secagg.mask.server_state import ServerAborted


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
                assert s.kind == SECRET_KEY
                b = bytearray(s.share)
                b[-1] ^= 0x01
                s = dataclasses.replace(s, share=bytes(b))
            shares.append(s)
        replies["h00"] = dataclasses.replace(rep, shares=tuple(shares))
        with pytest.raises(ProtocolAbort, match="does not match its advertisement"):
            r.server.collect("unmask", replies)


@pytest.mark.parametrize("active", [True, False])
def test_wrong_self_mask_share_of_surviving_peer_aborts_before_unmasking(active, monkeypatch):
    """P5: h00 reveals a wrong self-mask share for the surviving h02. With all 5 > t = 3
    holders answering, the aggregator's consistency check names h02 and aborts before any
    mask is removed; no result is produced and the reason carries no share material."""
    r = Round(5, 3, active=active)
    replies = unmask_replies(r)
    honest = replies["h00"]
    replies["h00"] = with_wrong_self_mask_shares(honest, {"h02"})

    def no_unmasking(*a, **k):
        raise AssertionError("a mask was removed")

    monkeypatch.setattr(server_unmask, "prg_accumulate_many", no_unmasking)
    reason = "self-mask shares for h02 are inconsistent (a holder revealed a wrong share)"
    with pytest.raises(ProtocolAbort, match=re.escape(reason)) as exc:
        r.server.collect("unmask", replies)
    assert exc.value.reason == r.server.abort_reason == reason
    assert isinstance(r.server.state, ServerAborted)
    with pytest.raises(ProtocolAbort, match="no result"):
        r.server.result()
    for s in honest.shares + replies["h00"].shares:
        assert s.share.hex() not in reason


def test_wrong_self_mask_share_would_otherwise_corrupt_the_sum(monkeypatch):
    """Why the check exists: the same tampering with the check switched off completes the
    round with a wrong sum (the fits-32-bytes check in reconstruct does not catch it)."""
    from fedrx.secagg import shamir
    r = Round(5, 3, active=False)
    replies = unmask_replies(r)
    replies["h00"] = with_wrong_self_mask_shares(replies["h00"], {"h00"})  # index 1: used
    monkeypatch.setattr(shamir, "consistent_many", lambda sets, t: [True] * len(sets))
    r.server.collect("unmask", replies)
    total, who = r.server.result()
    assert not np.array_equal(total, r.expected(who))


def test_wrong_self_mask_shares_for_several_owners_are_all_named():
    r = Round(6, 4, active=False)
    replies = unmask_replies(r)
    replies["h05"] = with_wrong_self_mask_shares(replies["h05"], {"h01", "h03"})
    with pytest.raises(ProtocolAbort, match=re.escape(
            "self-mask shares for h01, h03 are inconsistent (a holder revealed a wrong share)")):
        r.server.collect("unmask", replies)


def test_wrong_self_mask_share_detected_in_secagg_plus_neighbourhoods():
    """SecAgg+: each owner's shares come from its own neighbourhood (a different index set
    per owner); a wrong share for one neighbour is attributed to that neighbour."""
    n, k = 12, 6
    t = graphs.default_threshold(k + 1)  # 5 of 7 holders
    r = Round(n, t, graph="harary", k=k)
    replies = unmask_replies(r)
    victim = sorted(r.params.graph.of("h04"))[0]
    replies["h04"] = with_wrong_self_mask_shares(replies["h04"], {victim})
    with pytest.raises(ProtocolAbort, match=re.escape(
            f"self-mask shares for {victim} are inconsistent (a holder revealed")):
        r.server.collect("unmask", replies)


def test_malformed_self_mask_share_keeps_its_abort_reason():
    r = Round(5, 3, active=False)
    replies = unmask_replies(r)
    replies["h01"] = with_wrong_self_mask_shares(replies["h01"], {"h03"}, raw=b"\x00" * 32)
    with pytest.raises(ProtocolAbort) as exc:
        r.server.collect("unmask", replies)
    assert exc.value.reason == "self-mask shares for h03 are inconsistent"


def test_exactly_t_unmask_answers_round_completes_nothing_to_check():
    """With exactly t holders answering, every seed has exactly t shares: nothing can be
    checked and the round completes exactly. The limit, stated in threat_model.md §4.5: a
    wrong self-mask share in that case is not detected and the sum is wrong."""
    r = Round(5, 3, active=False)
    replies = unmask_replies(r, drop={"h03", "h04"})
    assert len(replies) == 3
    r.server.collect("unmask", replies)
    total, who = r.server.result()
    assert who == r.params.participants
    assert np.array_equal(total, r.expected(who))

    r = Round(5, 3, active=False)
    replies = unmask_replies(r, drop={"h03", "h04"})
    replies["h00"] = with_wrong_self_mask_shares(replies["h00"], {"h02"})
    r.server.collect("unmask", replies)  # not detectable: no abort
    total, who = r.server.result()
    assert not np.array_equal(total, r.expected(who))
