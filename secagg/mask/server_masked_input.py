"""Aggregator states ``masked_input`` (add each valid packed vector to the running sum:
U3) and ``consistency_check`` (active mode: collect signatures on the survivor list U3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedrx.errors import ProtocolError
from fedrx.secagg import bitpack
from fedrx.secagg.absorb import AbsorbLedger
from fedrx.secagg.mask.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    EncryptedShare,
    MaskedInput,
    MaskedInputRequest,
)
from fedrx.secagg.mask.params import CONSISTENCY, MASKED_INPUT
from fedrx.secagg.mask.server_state import Advertised, ServerContext, ServerState
from fedrx.secagg.mask.server_status import PeerStatus
from fedrx.secagg.mask.server_unmask import ServerUnmask
from fedrx.secagg.mask.transcript import consistency_message, local_survivors, signed_by


class ServerMaskedInput(Advertised):
    """Holds the advertisements, ``sid_r``, each receiver's inbox of encrypted shares and
    the running sum. Forwards the inboxes; a reply is added only once its size and padding
    validate (:meth:`bitpack.SumAccumulator.add`), on arrival (:meth:`absorb`) or at
    ``collect``, at most once per hospital."""

    name = MASKED_INPUT

    def __init__(self, ctx: ServerContext, acc: bitpack.SumAccumulator,
                 ads: dict[str, AdvertiseKeys], sid_r: bytes,
                 inbox: dict[str, list[EncryptedShare]]):
        super().__init__(ctx, acc, ads, sid_r)
        self._inbox = inbox
        self._absorbed = AbsorbLedger()

    def requests(self, live: set[str]) -> dict[str, Any]:
        p = self.ctx.params
        return {h: MaskedInputRequest(p.round, tuple(self._inbox.get(h, ())))
                for h in self.ctx.view.shared if h in live}

    def _add(self, h: str, r: Any) -> str:
        """Add ``h``'s masked input to the sum: "" if added, else why it was refused."""
        p = self.ctx.params
        if not self.answered(h, r, MaskedInput, self.ctx.view.shared) \
                or r.modulus_bits != p.modulus_bits or r.length != p.length \
                or not isinstance(r.packed, bytes):
            return "invalid masked input"
        try:  # validates size and padding before anything is added
            self._acc.add(r.packed)
        except ProtocolError:
            return "malformed packed vector"
        return ""

    def absorb(self, hospital: str, reply: Any) -> Any:
        return self._absorbed.take(hospital, MASKED_INPUT, reply, self._add)

    def collect(self, replies: Mapping[str, Any]) -> ServerState:
        p, v = self.ctx.params, self.ctx.view
        ok = []
        for h in sorted(replies):
            if h in self._absorbed.added:  # its masked input is in the sum (once)
                ok.append(h)
                continue
            # refused on arrival, or checked now (a stand-in it did not issue is invalid)
            why = self._absorbed.refused.get(h) or self._add(h, replies[h])
            if why:
                v.rejected[h] = why
                continue
            ok.append(h)
        v.advance(PeerStatus.SHARED, ok, PeerStatus.MASKED)
        self.need(ok, "sent masked inputs")
        if p.active:
            return ServerConsistency(self.ctx, self._acc, self.ads, self.sid_r)
        return ServerUnmask(self.ctx, self._acc, self.ads, self.sid_r, {})


class ServerConsistency(Advertised):
    """Holds the advertisements, ``sid_r`` and the running sum; asks each hospital of U3 to
    sign its neighbourhood's part of U3."""

    name = CONSISTENCY

    def requests(self, live: set[str]) -> dict[str, Any]:
        """Each hospital of U3 is asked to sign its neighbourhood's part of U3."""
        p, u3 = self.ctx.params, self.ctx.view.masked
        u3_set = frozenset(u3)
        return {h: ConsistencyRequest(p.round, local_survivors(p.graph, u3, h, u3_set))
                for h in u3 if h in live}

    def collect(self, replies: Mapping[str, Any]) -> ServerState:
        p, v = self.ctx.params, self.ctx.view
        u3 = v.masked
        same = consistency_message(self.sid_r, p.round, list(u3), p.context) \
            if p.graph.complete else None
        u3_set = frozenset(u3)
        sigs: dict[str, ConsistencySignature] = {}
        for h in sorted(replies):
            s = replies[h]
            msg = same if same is not None else consistency_message(
                self.sid_r, p.round, local_survivors(p.graph, u3, h, u3_set), p.context)
            if self.answered(h, s, ConsistencySignature, u3) and s.outside == () \
                    and signed_by(self.ctx.federation, h, s.signature, msg):
                sigs[h] = s
            else:
                v.rejected[h] = "invalid consistency signature"
        v.advance(PeerStatus.MASKED, sigs, PeerStatus.SIGNED)
        self.need(tuple(sigs), "signed the survivor list")
        return ServerUnmask(self.ctx, self._acc, self.ads, self.sid_r, sigs)
