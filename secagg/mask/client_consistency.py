"""Client state ``consistency_check`` (active mode): sign the survivor list U3.

Each hospital signs ``(sid_r, round, U3, context)``; before unmasking it requires at
least t valid signatures from members of U3 on exactly the list it signed
(:mod:`fedrx.secagg.mask.client_unmask`).
"""

from __future__ import annotations

from typing import Any

from fedrx.secagg.mask.client_state import ClientContext, ClientState
from fedrx.secagg.mask.client_unmask import UnmaskState, check_survivors
from fedrx.secagg.mask.messages import AdvertiseKeys, ConsistencyRequest, ConsistencySignature
from fedrx.secagg.mask.params import CONSISTENCY
from fedrx.secagg.mask.transcript import consistency_message


class ConsistencyState(ClientState):
    """Holds ``ads``, ``sid_r``, the held shares and U2; signs the survivor list and moves to
    :class:`UnmaskState` remembering exactly the list it signed."""

    name = "masked"
    stage = CONSISTENCY

    def __init__(self, ctx: ClientContext, ads: dict[str, AdvertiseKeys], sid_r: bytes,
                 held: dict[str, tuple[bytes, bytes]], u2: frozenset[str]):
        super().__init__(ctx)
        self.ads = ads
        self.sid_r = sid_r
        self.held = held
        self.u2 = u2

    def handle(self, request: Any) -> tuple[ConsistencySignature, ClientState]:
        if not isinstance(request, ConsistencyRequest):
            raise self.abort("malformed consistency request")
        surv = check_survivors(self.ctx, self.ads, self.u2, request.survivors, CONSISTENCY)
        p = self.ctx.params
        sig = self.ctx.signer.sign(consistency_message(self.sid_r, p.round, sorted(surv),
                                                         p.context))
        nxt = UnmaskState(self.ctx, self.ads, self.sid_r, self.held, self.u2, surv)
        return ConsistencySignature(self.ctx.hospital, p.round, sig), nxt
