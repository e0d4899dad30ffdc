"""Client state ``advertise_keys``: make the two per-round X25519 key pairs and sign them."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedrx.secagg import kex
from fedrx.secagg.mask.client_shares import ShareKeysState
from fedrx.secagg.mask.client_state import ClientContext, ClientState, InputState
from fedrx.secagg.mask.messages import AdvertiseKeys, AdvertiseRequest
from fedrx.secagg.mask.params import ADVERTISE
from fedrx.secagg.mask.transcript import advertise_message


class AdvertiseKeysState(InputState):
    """Initial state. Holds only the encoded input ``x`` (if already set).

    Answers :class:`AdvertiseRequest` with fresh ``enc`` (share encryption) and ``mask``
    (pairwise masks) public keys, signed with the long-term Ed25519 key over
    ``(session_id, round, context, hospital, enc_pk, mask_pk)``; moves to :class:`ShareKeysState`.
    """

    name = "init"
    stage = ADVERTISE

    def __init__(self, ctx: ClientContext, x: np.ndarray | None = None):
        super().__init__(ctx, x)

    def handle(self, request: Any) -> tuple[AdvertiseKeys, ClientState]:
        if not isinstance(request, AdvertiseRequest):
            raise self.abort("malformed advertise request")
        enc_sk, enc_pk = kex.generate_keypair()
        mask_sk, mask_pk = kex.generate_keypair()
        p, h = self.ctx.params, self.ctx.hospital
        sig = self.ctx.signer.sign(advertise_message(p.session_id, p.round, p.context, h,
                                                       enc_pk, mask_pk))
        own = AdvertiseKeys(h, p.round, enc_pk, mask_pk, sig)
        return own, ShareKeysState(self.ctx, self.x, enc_sk, mask_sk, own)
