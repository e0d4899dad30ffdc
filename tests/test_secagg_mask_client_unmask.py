"""Client states consistency_check and unmask against a scripted malicious aggregator."""

from __future__ import annotations

import dataclasses

import pytest
from secagg_mask_round import Round, to_stage

from fedrx.errors import ProtocolAbort
from fedrx.secagg.mask.client_state import ClientAborted
from fedrx.secagg.mask.messages import SELF_MASK, ConsistencyRequest, UnmaskRequest


def test_alive_and_dropped_overlap_aborts_and_reveals_nothing():
    """P8: a request listing a peer as both alive and dropped is refused."""
    r = Round(5, 3, active=False)
    to_stage(r, "masked_input")
    parts = r.params.participants
    bad = UnmaskRequest(1, parts, ("h04",))
    with pytest.raises(ProtocolAbort, match="both alive and dropped"):
        r.clients["h00"].handle("unmask", bad)
    assert r.clients["h00"].revealed == {}
    assert isinstance(r.clients["h00"].state, ClientAborted)


def test_malicious_server_cannot_get_both_shares_of_one_peer():
    """P8/P9: the server shows h04 alive to some and dropped to others (active mode)."""
    r = Round(5, 4)
    to_stage(r, "consistency_check")
    parts = r.params.participants
    sigs = tuple(r.sent["consistency_check"].values())
    honest = UnmaskRequest(1, parts, (), sigs)
    lie = UnmaskRequest(1, tuple(h for h in parts if h != "h04"), ("h04",), sigs)
    released = {}
    for h in ("h00", "h01"):  # these see h04 alive -> they reveal b-shares of h04
        released[h] = r.clients[h].handle("unmask", honest)
    for h in ("h02", "h03"):  # these are told h04 dropped -> must refuse
        with pytest.raises(ProtocolAbort, match="changed between"):
            r.clients[h].handle("unmask", lie)
    # asking an already-answered hospital again is refused too (no second reveal)
    with pytest.raises(ProtocolAbort):
        r.clients["h00"].handle("unmask", lie)
    kinds = r.revealed_kinds("h04")
    assert kinds == {SELF_MASK: {"h00", "h01"}}  # never a single secret-key share
    assert all(s.kind == SELF_MASK for h in released for s in released[h].shares)


def test_inconsistent_survivor_lists_in_consistency_check_abort_everyone():
    """P9: different U3 to different groups: neither list reaches t signatures (2t > n)."""
    r = Round(5, 4)
    to_stage(r, "masked_input")
    parts = r.params.participants
    l1, l2 = parts, tuple(h for h in parts if h != "h00")
    sigs = []
    for h in parts:
        req = ConsistencyRequest(1, l1 if h in ("h00", "h01", "h02") else l2)
        sigs.append(r.clients[h].handle("consistency_check", req))
    for h in parts:
        lst = l1 if h in ("h00", "h01", "h02") else l2
        dropped = tuple(x for x in parts if x not in lst)
        with pytest.raises(ProtocolAbort, match="valid consistency signatures"):
            r.clients[h].handle("unmask", UnmaskRequest(1, lst, dropped, tuple(sigs)))
    assert r.nothing_revealed()


def test_survivor_list_changed_between_stages_aborts():
    r = Round(6, 4)
    to_stage(r, "consistency_check")
    parts = r.params.participants
    sigs = tuple(r.sent["consistency_check"].values())
    smaller = tuple(h for h in parts if h != "h05")
    with pytest.raises(ProtocolAbort, match="changed between"):
        r.clients["h01"].handle("unmask", UnmaskRequest(1, smaller, ("h05",), sigs))
    assert r.clients["h01"].revealed == {}


def test_dropped_list_inconsistent_with_received_shares_aborts():
    r = Round(5, 3, active=False)
    r.step("advertise_keys")
    r.step("share_keys", drop={"h04"})  # h04 never shared
    r.step("masked_input")
    parts = tuple(h for h in r.params.participants if h != "h04")
    with pytest.raises(ProtocolAbort, match="dropped list disagrees"):
        r.clients["h00"].handle("unmask", UnmaskRequest(1, parts[:-1], (parts[-1], "h04")))
    with pytest.raises(ProtocolAbort, match="sent me no shares"):
        r.clients["h01"].handle("unmask", UnmaskRequest(1, parts + ("h04",), ()))
    assert r.nothing_revealed()


def test_server_naming_client_itself_dropped_aborts():
    r = Round(5, 3, active=False)
    to_stage(r, "masked_input")
    parts = r.params.participants
    req = UnmaskRequest(1, tuple(h for h in parts if h != "h02"), ("h02",))
    with pytest.raises(ProtocolAbort, match="lists me as dropped"):
        r.clients["h02"].handle("unmask", req)
    assert r.clients["h02"].revealed == {}


def test_client_refuses_unmask_below_threshold():
    r = Round(5, 4, active=False)
    to_stage(r, "masked_input")
    parts = r.params.participants
    with pytest.raises(ProtocolAbort, match="need t=4"):
        r.clients["h00"].handle("unmask", UnmaskRequest(1, parts[:3], parts[3:]))
    assert r.nothing_revealed()


def test_unmask_without_valid_signatures_aborts():
    r = Round(5, 4)
    to_stage(r, "consistency_check")
    parts = r.params.participants
    forged = tuple(dataclasses.replace(s, signature=bytes(64))
                   for s in r.sent["consistency_check"].values())
    with pytest.raises(ProtocolAbort, match="valid consistency signatures"):
        r.clients["h00"].handle("unmask", UnmaskRequest(1, parts, (), forged))


def test_repeated_valid_signature_counts_once():
    """P9: t copies of ONE hospital's valid consistency signature are one signer, not t."""
    r = Round(5, 4)
    to_stage(r, "consistency_check")
    parts = r.params.participants
    one = r.sent["consistency_check"]["h01"]
    with pytest.raises(ProtocolAbort, match="only 1 valid consistency signatures"):
        r.clients["h00"].handle("unmask", UnmaskRequest(1, parts, (), (one,) * 5))
