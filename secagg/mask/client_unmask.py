"""Client state ``unmask``: reveal, for each peer whose shares it holds, EITHER the b-share
(peer survived: in U3) OR the mask-key share (peer in U2 \\ U3), never both in one round.

It aborts, revealing nothing, when the alive and dropped lists overlap, name itself as
dropped, disagree with what it saw or signed, carry fewer than t valid consistency
signatures (active mode), or hold fewer than t survivors (or fewer than
``min_contributors``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedrx.errors import ProtocolAbort
from fedrx.secagg.mask.client_state import ClientCompleted, ClientContext, ClientState
from fedrx.secagg.mask.messages import (
    SECRET_KEY,
    SELF_MASK,
    AdvertiseKeys,
    ConsistencySignature,
    RevealedShare,
    UnmaskReply,
    UnmaskRequest,
)
from fedrx.secagg.mask.params import UNMASK
from fedrx.secagg.mask.transcript import consistency_message, distinct, signed_by


def check_survivors(ctx: ClientContext, ads: Mapping[str, AdvertiseKeys], u2: frozenset[str],
                    survivors: Any, stage: str) -> tuple[str, ...]:
    """``survivors`` as a tuple, or ProtocolAbort at ``stage`` unless it is a list of
    distinct advertised hospitals, includes me, names no neighbour whose shares did not
    reach me, and has at least t members."""
    p, me = ctx.params, ctx.hospital
    if not distinct(survivors):
        raise ProtocolAbort("malformed survivor list", stage)
    surv = tuple(survivors)
    if me not in surv:
        raise ProtocolAbort("survivor list omits me", stage)
    unknown = [u for u in surv if u not in ads]
    if unknown:
        raise ProtocolAbort(f"survivor list names {unknown[0]} who never advertised keys",
                            stage)
    stray = [u for u in surv if u in p.graph.holders(me) and u not in u2]
    if stray:
        raise ProtocolAbort(f"survivor list names {stray[0]} who sent me no shares", stage)
    if len(surv) < p.threshold:
        raise ProtocolAbort(f"only {len(surv)} survivors; need t={p.threshold}", stage)
    return surv


class UnmaskState(ClientState):
    """Holds ``ads``, ``sid_r``, the held shares, U2 and (active mode) the signed survivor
    list ``signed``. Moves to :class:`ClientCompleted`, which holds nothing."""

    stage = UNMASK

    def __init__(self, ctx: ClientContext, ads: dict[str, AdvertiseKeys], sid_r: bytes,
                 held: dict[str, tuple[bytes, bytes]], u2: frozenset[str],
                 signed: tuple[str, ...] | None):
        super().__init__(ctx)
        self.ads = ads
        self.sid_r = sid_r
        self.held = held
        self.u2 = u2
        self.signed = signed
        self.name = "masked" if signed is None else "signed"  # passive: straight from masking

    def _count_signers(self, req: UnmaskRequest, surv: tuple[str, ...]) -> int:
        """Distinct members of ``surv`` with a valid signature on ``surv`` (stops at t)."""
        p = self.ctx.params
        msg = consistency_message(self.sid_r, p.round, sorted(surv), p.context)
        ok: set[str] = set()
        for s in req.signatures:  # stop at t distinct valid signers: that is the rule
            if len(ok) >= p.threshold:
                break
            if isinstance(s, ConsistencySignature) and s.round == p.round \
                    and s.hospital in surv and s.hospital not in ok \
                    and signed_by(self.ctx.federation, s.hospital, s.signature, msg):
                ok.add(s.hospital)
        return len(ok)

    def handle(self, request: Any) -> tuple[UnmaskReply, ClientState]:
        p, me = self.ctx.params, self.ctx.hospital
        if not isinstance(request, UnmaskRequest) or not distinct(request.dropped):
            raise self.abort("malformed unmask request")
        if not distinct(request.survivors):
            raise self.abort("malformed survivor list")
        both = sorted(set(request.survivors) & set(request.dropped))
        if both:
            raise self.abort(f"{both[0]} is listed as both alive and dropped")
        if me in request.dropped:
            raise self.abort("the aggregator lists me as dropped")
        surv = check_survivors(self.ctx, self.ads, self.u2, request.survivors, UNMASK)
        if len(surv) < p.min_contributors:
            raise self.abort(f"only {len(surv)} contributors; this round needs at least "
                             f"{p.min_contributors}")
        if p.active:
            if self.signed is None or sorted(surv) != sorted(self.signed):
                raise self.abort("survivor list changed between consistency_check and unmask")
            n_ok = self._count_signers(request, surv)
            if n_ok < p.threshold:
                raise self.abort(f"only {n_ok} valid consistency signatures; need "
                                 f"t={p.threshold}")
        mine = p.graph.holders(me)
        expected_dropped = self.u2 - set(surv)
        if any(u not in self.ads for u in request.dropped) or \
                {u for u in request.dropped if u in mine} != expected_dropped:
            raise self.abort("dropped list disagrees with the shares I received")
        out = []
        for owner in sorted(self.u2):
            b_share, k_share = self.held[owner]
            kind, share = (SELF_MASK, b_share) if owner in surv else (SECRET_KEY, k_share)
            out.append(RevealedShare(owner, kind, share))
            self.ctx.revealed[owner] = kind
        return UnmaskReply(me, p.round, tuple(out)), ClientCompleted(self.ctx)
