"""Aggregator states advertise_keys / share_keys: forged and replayed advertisements."""

from __future__ import annotations

import dataclasses

import numpy as np
from secagg_mask_round import Round, forged_ad


def test_forged_or_replayed_advertisement_rejected_by_server_round_continues():
    old = Round(6, 3, rnd=1)
    old.step("advertise_keys")
    old_ad = old.sent["advertise_keys"]["h01"]
    r = Round(6, 3, sid=old.params.session_id, rnd=2)
    reqs = r.server.requests("advertise_keys", r.params.participants)
    replies = {h: r.clients[h].handle("advertise_keys", q) for h, q in reqs.items()}
    replies["h01"] = old_ad  # replay of round 1
    replies["h02"] = forged_ad(replies["h02"])  # forged signature
    replies["h03"] = dataclasses.replace(old_ad, round=2)  # replay with the round rewritten
    r.server.collect("advertise_keys", replies)
    assert r.server.view.advertised == ("h00", "h04", "h05")
    assert set(r.server.view.rejected) == {"h01", "h02", "h03"}
    for stage in r.params.stages[1:]:
        r.step(stage)
    total, who = r.server.result()
    assert who == ("h00", "h04", "h05")
    assert np.array_equal(total, r.expected(who))
