"""The hospital driver (:mod:`fedrx.secagg.mask.client`): transitions and secret hygiene."""

from __future__ import annotations

import pytest
from secagg_mask_round import Round, to_stage

from fedrx.errors import ProtocolAbort
from fedrx.secagg.mask.client_state import ClientAborted
from fedrx.secagg.mask.messages import AdvertiseRequest, MaskedInputRequest, UnmaskRequest


def test_invalid_transitions_abort():
    r = Round(3, 2)
    c = r.clients["h00"]
    with pytest.raises(ProtocolAbort, match="not allowed in state init"):
        c.handle("unmask", UnmaskRequest(1, (), ()))
    with pytest.raises(ProtocolAbort, match="already aborted"):
        c.handle("advertise_keys", AdvertiseRequest(1))
    c2 = r.clients["h01"]
    with pytest.raises(ProtocolAbort, match="not for round"):
        c2.handle("advertise_keys", AdvertiseRequest(7))
    with pytest.raises(ProtocolAbort, match="not allowed"):
        r.server.collect("unmask", {})
    with pytest.raises(ProtocolAbort, match="already aborted"):
        r.server.requests("advertise_keys", ["h00"])


def test_no_secrets_in_reprs_or_errors():
    r = Round(3, 2, active=False)
    to_stage(r, "masked_input")
    c = r.clients["h00"]
    b_share, k_share = c.state.held["h00"]
    rep = repr(c) + repr(r.server)
    reply = c.handle("unmask", UnmaskRequest(1, r.params.participants, ()))
    rep += repr(reply)
    for secret in (b_share, k_share):
        assert secret.hex() not in rep and repr(secret) not in rep
    try:
        r.clients["h01"].handle("unmask", UnmaskRequest(1, ("h00",), ("h00",)))
    except ProtocolAbort as exc:
        assert b_share.hex() not in str(exc)


def test_each_state_holds_only_the_secrets_it_still_needs():
    """fcp style: every stage hands on a NEW state object; per-round secrets (private keys,
    seed, mask keys, share-opening secrets, the unmasked input) end with the stage that
    last needs them, and the terminal states keep nothing."""
    r = Round(4, 3)
    c = r.clients["h01"]
    seen = [type(c.state).__name__]
    held = [set(vars(c.state))]
    for stage in r.params.stages:
        r.step(stage)
        seen.append(type(c.state).__name__)
        held.append(set(vars(c.state)))
    assert seen == ["AdvertiseKeysState", "ShareKeysState", "MaskedInputState",
                    "ConsistencyState", "UnmaskState", "ClientCompleted"]
    assert held[0] == {"ctx", "x"}
    assert held[1] == {"ctx", "x", "_enc_sk", "_mask_sk", "_own_ad"}
    assert held[2] == {"ctx", "x", "ads", "sid_r", "_seed", "held", "enc_shared",
                       "_pair_keys"}
    assert held[3] == {"ctx", "ads", "sid_r", "held", "u2"}
    assert held[4] == {"ctx", "ads", "sid_r", "held", "u2", "signed", "name"}
    assert held[5] == {"ctx"}
    assert set(vars(c._ctx)) == {"params", "signer", "federation", "revealed"}


def test_abort_carries_the_stage_and_drops_every_secret():
    r = Round(4, 3, active=False)
    to_stage(r, "share_keys")
    c = r.clients["h02"]
    with pytest.raises(ProtocolAbort) as exc:
        c.handle("masked_input", MaskedInputRequest(1, ("not a share",)))
    assert exc.value.stage == "masked_input"
    assert exc.value.reason == "h02: received a share not addressed to me by a neighbour"
    assert c.abort_reason == "received a share not addressed to me by a neighbour"
    assert isinstance(c.state, ClientAborted) and set(vars(c.state)) == {"ctx", "reason"}
    assert "aborted" in repr(c)
