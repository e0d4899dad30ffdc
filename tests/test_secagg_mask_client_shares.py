"""Client state share_keys: relayed advertisements are verified; any bad one aborts the round
before a share is sent (issue 14 item 1: an advertisement not signed over the hospital's own
round context is indistinguishable from a forged one, and an honest aggregator relays neither)."""

from __future__ import annotations

import dataclasses

import pytest
from secagg_mask_round import Round, forged_ad

from fedrx.errors import ProtocolAbort


def test_bad_signature_on_advertised_keys_aborts_every_client():
    """P7: a forged advertisement relayed by the server aborts every client; no share is
    sent (it used to exclude the peer and go on)."""
    r = Round(5, 3)
    r.step("advertise_keys")

    def hook(stage, reqs):
        return {h: dataclasses.replace(q, advertised=tuple(
            forged_ad(a) if a.hospital == "h03" else a for a in q.advertised))
            for h, q in reqs.items()}

    with pytest.raises(ProtocolAbort):  # honest server sees shares missing for h03
        r.step("share_keys", hook=hook)
    assert set(r.aborts) == set(r.clients)
    assert all("advertisement of h03 is not signed" in a for a in r.aborts.values())
    assert r.sent["share_keys"] == {}


def test_replayed_advertisement_aborts_client():
    old = Round(4, 2, rnd=1)
    old.step("advertise_keys")
    r = Round(4, 2, sid=old.params.session_id, rnd=2)
    r.step("advertise_keys")

    def hook(stage, reqs):
        return {h: dataclasses.replace(q, advertised=tuple(
            old.sent["advertise_keys"]["h01"] if a.hospital == "h01" else a
            for a in q.advertised)) for h, q in reqs.items()}

    with pytest.raises(ProtocolAbort):
        r.step("share_keys", hook=hook)
    assert "advertisement of h01 is not signed" in r.aborts["h00"]
    assert r.sent["share_keys"] == {}
