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
    distinct advertised hospitals of my own neighbourhood (neighbours and me), includes me,
    names no neighbour whose shares did not reach me, and has at least t members: the
    per-neighbourhood survivor threshold of SecAgg+ (Bell et al. 2020), which on the complete
    graph is the global one."""
    p, me = ctx.params, ctx.hospital
    if not distinct(survivors):
        raise ProtocolAbort("malformed survivor list", stage)
    surv = tuple(survivors)
    if me not in surv:
        raise ProtocolAbort("survivor list omits me", stage)
    mine = p.graph.holders(me)
    foreign = [u for u in surv if u not in mine]
    if foreign:  # the list is this neighbourhood's part of U3 (all of it when complete)
        raise ProtocolAbort(f"survivor list names {foreign[0][:64]}, not a neighbour", stage)
    unknown = [u for u in surv if u not in ads]
    if unknown:
        raise ProtocolAbort(f"survivor list names {unknown[0]} who never advertised keys",
                            stage)
    stray = [u for u in surv if u not in u2]
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

    def _uncertified(self, req: UnmaskRequest,
                     surv: tuple[str, ...]) -> tuple[str, int] | None:
        """(the first owner, sorted, of a share I hold whose status in my list ``surv`` is
        NOT certified by t valid consistency signatures from the owner's own neighbourhood,
        itself included; how many there are), or None when every owner is certified.

        A signer ``z``'s signed list is rebuilt as my list restricted to z's neighbourhood
        plus ``outside`` (names outside my neighbourhood, which must lie in z's), so its
        signature verifies only if z agrees with me on every hospital we both neighbour.
        Each honest hospital signs one list, and 2t > k + 1 + n_C, so for any owner at most
        one status (alive or dropped) can be certified by its neighbourhood: every honest
        hospital that reveals a share of that owner reveals the same kind. On the complete
        graph this is Bonawitz et al.'s check (t signatures on the identical list) and
        stops after t valid signatures."""
        p, me, g = self.ctx.params, self.ctx.hospital, self.ctx.params.graph
        in_surv = frozenset(surv)
        if g.complete:  # every owner's neighbourhood is everyone: count t signers once
            ok = self._valid_signers(req, in_surv, in_surv, p.threshold)
            return None if len(ok) >= p.threshold else (min(self.u2), len(ok))
        ok = self._valid_signers(req, in_surv, g.two_hop(me), None)
        for o in sorted(self.u2):
            n_ok = len(ok & g.holders(o))
            if n_ok < p.threshold:
                return o, n_ok
        return None

    def _valid_signers(self, req: UnmaskRequest, in_surv: frozenset[str],
                       near: frozenset[str], enough: int | None) -> frozenset[str]:
        """Signers in ``near`` whose signature verifies over the list rebuilt from mine
        (stops after ``enough`` of them when given). At most one per hospital."""
        p, g = self.ctx.params, self.ctx.params.graph
        mine = g.holders(self.ctx.hospital)
        # complete graph: everyone signed the same list, mine (one message for all)
        same = consistency_message(self.sid_r, p.round, sorted(in_surv), p.context) \
            if g.complete else None
        ok: set[str] = set()
        for s in req.signatures:
            if enough is not None and len(ok) >= enough:
                break
            if not isinstance(s, ConsistencySignature) or s.round != p.round \
                    or not isinstance(s.hospital, str) or not isinstance(s.signature, bytes) \
                    or s.hospital not in near or s.hospital in ok or not distinct(s.outside):
                continue
            if same is not None:
                if s.outside:
                    continue
                msg = same
            else:
                hz = g.holders(s.hospital)
                if any(u in mine or u not in hz for u in s.outside):
                    continue
                signed = sorted((in_surv & hz).union(s.outside))
                msg = consistency_message(self.sid_r, p.round, signed, p.context)
            if signed_by(self.ctx.federation, s.hospital, s.signature, msg):
                ok.add(s.hospital)
        return frozenset(ok)

    def handle(self, request: Any) -> tuple[UnmaskReply, ClientState]:
        p, me = self.ctx.params, self.ctx.hospital
        if not isinstance(request, UnmaskRequest) or not distinct(request.dropped) \
                or not isinstance(request.signatures, tuple):
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
        if set(request.dropped) != self.u2 - set(surv):
            raise self.abort("dropped list disagrees with the shares I received")
        if p.active:
            if self.signed is None or sorted(surv) != sorted(self.signed):
                raise self.abort("survivor list changed between consistency_check and unmask")
            short = self._uncertified(request, surv)
            if short is not None:
                raise self.abort(f"only {short[1]} valid consistency signatures from the "
                                 f"neighbourhood of {short[0]} agree with my list; need "
                                 f"t={p.threshold}")
        out = []
        for owner in sorted(self.u2):
            b_share, k_share = self.held[owner]
            kind, share = (SELF_MASK, b_share) if owner in surv else (SECRET_KEY, k_share)
            out.append(RevealedShare(owner, kind, share))
            self.ctx.revealed[owner] = kind
        return UnmaskReply(me, p.round, tuple(out)), ClientCompleted(self.ctx)
