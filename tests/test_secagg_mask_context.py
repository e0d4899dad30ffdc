"""The agreed round context, duplicate keys and the contributor floor (issue 14 items 1, 8).

Each test plays the malicious aggregator (or a malicious hospital) against the hospital-side
state machines and would fail if the defence were removed.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from secagg_mask_round import BY_NAME, CONTEXT, FED, Round

from fedrx.errors import ConfigError, ProtocolAbort
from fedrx.secagg import kex
from fedrx.secagg.mask.client import MaskingClient
from fedrx.secagg.mask.messages import AdvertiseKeys, AdvertiseRequest, ShareKeysRequest
from fedrx.secagg.mask.transcript import advertise_message

TRAP = hashlib.sha256(b"the trap model's round context").digest()


def test_model_inconsistency_aborts_every_hospital_before_any_share():
    """Pasquini et al. (CCS 2022): the aggregator gives the victim h00 the real model and
    everyone else a trap model, so their round contexts differ. Relaying every advertisement
    (a malicious aggregator checks nothing) makes EVERY hospital abort in share_keys; relaying
    to the victim only what was signed over its context leaves it below t. No share, hence
    no masked input, ever leaves any hospital."""
    others = [f"h{i:02d}" for i in range(1, 6)]
    r = Round(6, 4, contexts=dict.fromkeys(others, TRAP))
    ads = {h: c.handle("advertise_keys", AdvertiseRequest(1)) for h, c in r.clients.items()}
    relayed = tuple(ads[h] for h in sorted(ads))
    for c in r.clients.values():
        with pytest.raises(ProtocolAbort, match="not signed over this hospital's round context"):
            c.handle("share_keys", ShareKeysRequest(1, relayed))
    r2 = Round(6, 4, contexts=dict.fromkeys(others, TRAP))
    own = r2.clients["h00"].handle("advertise_keys", AdvertiseRequest(1))
    with pytest.raises(ProtocolAbort, match="need t=4"):
        r2.clients["h00"].handle("share_keys", ShareKeysRequest(1, (own,)))


def test_victim_given_other_context_aborts_in_share_keys():
    """Whatever the aggregator relays, a hospital whose context differs from a peer's aborts
    before sending a share (the signature check is over ITS OWN context)."""
    r = Round(5, 3, contexts={"h00": TRAP})
    r.step("advertise_keys")  # the server (context CONTEXT) rejects h00's ad
    ads = dict(r.sent["advertise_keys"])
    relayed = tuple(ads[h] for h in sorted(ads))
    victim = r.clients["h00"]
    with pytest.raises(ProtocolAbort, match="not signed over this hospital's round context"):
        victim.handle("share_keys", ShareKeysRequest(1, relayed))
    assert victim.abort_reason is not None and victim.revealed == {}
    for h in ("h01", "h02"):  # and the others refuse the victim's trap-context ad
        with pytest.raises(ProtocolAbort, match="advertisement of h00 is not signed"):
            r.clients[h].handle("share_keys", ShareKeysRequest(1, relayed))


def test_same_context_still_completes():
    r = Round(5, 3, contexts=dict.fromkeys(("h00", "h01", "h02", "h03", "h04"), CONTEXT))
    total, who = r.run()
    assert who == tuple(sorted(r.clients))
    assert (total == r.expected(who)).all()


def test_context_must_be_a_32_byte_digest():
    r = Round(3, 2)
    for bad in (b"", b"x" * 31, "x" * 32):
        with pytest.raises(ConfigError):
            dataclasses.replace(r.params, context=bad)
    with pytest.raises(ConfigError):
        dataclasses.replace(r.params, min_contributors=-1)


def _copy_keys(sid: bytes, victim_ad: AdvertiseKeys, thief: str,
               which: str) -> AdvertiseKeys:
    """``thief``'s own validly signed advertisement that repeats one of the victim's keys."""
    _, fresh = kex.generate_keypair()
    enc, mask = (victim_ad.enc_public, fresh) if which == "enc" else \
        (fresh, victim_ad.mask_public)
    sig = BY_NAME[thief].sign(advertise_message(sid, 1, CONTEXT, thief, enc, mask))
    return AdvertiseKeys(thief, 1, enc, mask, sig)


@pytest.mark.parametrize("which", ["enc", "mask"])
def test_hospital_advertising_anothers_key_is_refused(which):
    """Item 8: a (malicious) hospital advertises the victim's public key as its own, signed
    with its own identity: every client and the server refuse the round."""
    r = Round(4, 2)
    reqs = r.server.requests("advertise_keys", sorted(r.alive))
    replies = {h: r.clients[h].handle("advertise_keys", q) for h, q in reqs.items()}
    replies["h03"] = _copy_keys(r.params.session_id, replies["h00"], "h03", which)
    relayed = tuple(replies[h] for h in sorted(replies))
    for h in ("h00", "h01", "h02"):
        with pytest.raises(ProtocolAbort, match="h03 advertised a public key another"):
            r.clients[h].handle("share_keys", ShareKeysRequest(1, relayed))
    with pytest.raises(ProtocolAbort, match="h03 advertised a public key another"):
        r.server.collect("advertise_keys", replies)


def test_advertisement_with_equal_enc_and_mask_key_is_invalid():
    r = Round(3, 2)
    own = r.clients["h00"].handle("advertise_keys", AdvertiseRequest(1))
    sig = BY_NAME["h01"].sign(advertise_message(r.params.session_id, 1, CONTEXT, "h01",
                                                own.enc_public,
                                                own.enc_public))
    bad = AdvertiseKeys("h01", 1, own.enc_public, own.enc_public, sig)
    with pytest.raises(ProtocolAbort, match="advertisement of h01"):
        r.clients["h00"].handle("share_keys", ShareKeysRequest(1, (own, bad)))


def test_min_contributors_refuses_unmask_shares():
    """A round with fewer contributors than ``min_contributors`` (distributed DP relies on
    that many noise shares) gets no unmasking share from any hospital, though t is met."""
    r = Round(5, 3, min_contributors=5)
    r.step("advertise_keys")
    r.step("share_keys")
    r.step("masked_input", drop={"h04"})  # |U3| = 4 < 5, t = 3 met
    r.step("consistency_check")
    with pytest.raises(ProtocolAbort):
        r.step("unmask")
    assert r.nothing_revealed()
    assert set(r.aborts) == {"h00", "h01", "h02", "h03"}
    assert all("only 4 contributors" in a for a in r.aborts.values())


def test_min_contributors_met_completes():
    r = Round(5, 3, min_contributors=4)
    total, who = r.run({"masked_input": {"h04"}})
    assert len(who) == 4 and (total == r.expected(who)).all()


def test_client_checks_its_own_params():
    r = Round(3, 2)
    with pytest.raises(ProtocolAbort):
        MaskingClient(r.params, BY_NAME["h09"], FED)
