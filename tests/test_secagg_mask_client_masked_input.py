"""Client state masked_input: shares are opened by AEAD, exactly b_share || k_share."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from secagg_mask_round import Round

from fedrx.errors import ProtocolAbort
from fedrx.secagg.mask.client_state import ClientAborted
from fedrx.secagg.mask.messages import EncryptedShare


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
    sid_r, rnd = sender.state.sid_r, r.params.round
    key = kex.share_key(sender.state.enc_shared[receiver], sid_r, rnd, "h01", receiver)
    ad = kex.share_ad(sid_r, rnd, "h01", receiver)
    real = next(s for s in r.sent["share_keys"]["h01"].shares if s.receiver == receiver)
    pt = kex.open_sealed(key, real.nonce, real.ciphertext, ad)
    assert len(pt) == 2 * shamir.SHARE_BYTES == 66
    assert len(real.ciphertext) == 66 + 16  # + GCM tag
    # the per-peer enc secrets are held only between share_keys and masked_input
    assert set(sender.state.enc_shared) == set(r.params.participants) - {"h01"}
    bad_pts = {"h00": pt[:-1], "h02": pt + b"\x00",
               "h03": kex.encode_fields("h01", "h03", pt[:33], pt[33:])}

    def hook(stage, reqs):
        out = dict(reqs)
        for rcv, bad in bad_pts.items():
            k = kex.share_key(sender.state.enc_shared[rcv], sid_r, rnd, "h01", rcv)
            nonce, ct = kex.seal(k, bad, kex.share_ad(sid_r, rnd, "h01", rcv))
            q = reqs[rcv]
            out[rcv] = dataclasses.replace(q, shares=tuple(
                EncryptedShare("h01", rcv, nonce, ct) if s.sender == "h01" else s
                for s in q.shares))
        return out

    with pytest.raises(ProtocolAbort):  # only h01 and h04 remain: below t = 3
        r.step("masked_input", hook=hook)
    for rcv in bad_pts:
        assert r.aborts[rcv] == f"{rcv}: share from h01 is malformed"
        # aborted: the state that held the share secrets is gone, nothing is kept
        assert isinstance(r.clients[rcv].state, ClientAborted)
        assert not hasattr(r.clients[rcv].state, "enc_shared")
        assert not hasattr(r.clients[rcv].state, "held")
    assert not hasattr(r.clients["h04"].state, "enc_shared")  # dropped once opened
    assert all(len(b) == len(k) == 33 for b, k in r.clients["h04"].state.held.values())
