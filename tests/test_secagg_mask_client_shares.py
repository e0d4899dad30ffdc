"""Client state share_keys: relayed advertisements are verified, bad ones excluded."""

from __future__ import annotations

import dataclasses

import pytest
from secagg_mask_round import Round, forged_ad

from fedrx.errors import ProtocolAbort


def test_bad_signature_on_advertised_keys_excludes_peer_at_clients():
    """P7: a forged advertisement relayed by the server is excluded by every client."""
    r = Round(5, 3)
    r.step("advertise_keys")

    def hook(stage, reqs):
        return {h: dataclasses.replace(q, advertised=tuple(
            forged_ad(a) if a.hospital == "h03" else a for a in q.advertised))
            for h, q in reqs.items()}

    with pytest.raises(ProtocolAbort):  # honest server sees shares missing for h03
        r.step("share_keys", hook=hook)
    assert "altered" in r.aborts["h03"]
    for h in ("h00", "h01", "h02", "h04"):
        assert r.clients[h].excluded == ["h03"]
        assert "h03" not in {s.receiver for s in r.sent["share_keys"][h].shares}


def test_replayed_advertisement_excluded_at_client():
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
    assert r.clients["h00"].excluded == ["h01"]
