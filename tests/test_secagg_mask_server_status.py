"""The aggregator's one status per peer (:mod:`fedrx.secagg.mask.server_status`)."""

from __future__ import annotations

import numpy as np
from secagg_mask_round import Round

from fedrx.secagg.mask.server_status import PeerStatus as S
from fedrx.secagg.mask.server_status import ServerView


def test_every_peer_ends_in_the_status_of_the_last_stage_it_completed():
    r = Round(10, 4, active=True)
    assert set(r.server.view.status.values()) == {S.INVITED}
    drops = {"advertise_keys": {"h00"}, "share_keys": {"h01"}, "masked_input": {"h02"},
             "consistency_check": {"h03"}, "unmask": {"h04", "h05"}}
    total, who = r.run(drops)
    v = r.server.view
    assert v.status == {"h00": S.DEAD_BEFORE_ADVERTISE, "h01": S.DEAD_AFTER_ADVERTISE,
                        "h02": S.DEAD_AFTER_SHARE_KEYS, "h03": S.DEAD_AFTER_MASKED_INPUT,
                        "h04": S.DEAD_AFTER_CONSISTENCY, "h05": S.DEAD_AFTER_CONSISTENCY,
                        "h06": S.UNMASKED, "h07": S.UNMASKED, "h08": S.UNMASKED,
                        "h09": S.UNMASKED}
    parts = r.params.participants
    assert v.advertised == parts[1:] and v.shared == parts[2:] and v.masked == parts[3:]
    assert who == v.masked and np.array_equal(total, r.expected(who))


def test_passive_mode_skips_signed_and_the_sets_stay_nested():
    r = Round(5, 3, active=False)
    r.run({"unmask": {"h04"}})
    v = r.server.view
    assert v.at(S.UNMASKED) == ("h00", "h01", "h02", "h03")
    assert v.status["h04"] is S.DEAD_AFTER_MASKED_INPUT
    assert v.advertised == v.shared == v.masked == r.params.participants


def test_advance_moves_only_the_peers_at_the_given_status():
    v = ServerView.invite(["a", "b", "c"])
    v.advance(S.INVITED, {"a", "b"}, S.ADVERTISED)
    v.advance(S.ADVERTISED, {"a"}, S.SHARED)
    v.advance(S.INVITED, {"c"}, S.ADVERTISED)  # nobody is INVITED any more: no effect
    assert v.status == {"a": S.SHARED, "b": S.DEAD_AFTER_ADVERTISE,
                        "c": S.DEAD_BEFORE_ADVERTISE}
    assert v.advertised == ("a", "b") and v.shared == ("a",) and v.masked == ()
