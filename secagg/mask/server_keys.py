"""Aggregator states ``advertise_keys`` and ``share_keys``: accept the signed
advertisements (U1), then route each hospital's encrypted shares to their receivers (U2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedrx.secagg import bitpack
from fedrx.secagg.mask.messages import (
    AdvertiseKeys,
    AdvertiseRequest,
    EncryptedShare,
    ShareKeysReply,
    ShareKeysRequest,
)
from fedrx.secagg.mask.params import ADVERTISE, SHARE_KEYS
from fedrx.secagg.mask.server_masked_input import ServerMaskedInput
from fedrx.secagg.mask.server_state import Advertised, ServerContext, ServerState
from fedrx.secagg.mask.server_status import PeerStatus
from fedrx.secagg.mask.transcript import repeated_key, round_session_id, valid_ad


class ServerAdvertise(ServerState):
    """Initial state; holds only the (empty) running sum, allocated up front."""

    name = ADVERTISE

    def __init__(self, ctx: ServerContext, acc: bitpack.SumAccumulator):
        super().__init__(ctx)
        self._acc = acc

    def requests(self, live: set[str]) -> dict[str, Any]:
        p = self.ctx.params
        return {h: AdvertiseRequest(p.round) for h in p.participants if h in live}

    def collect(self, replies: Mapping[str, Any]) -> ServerState:
        p, v = self.ctx.params, self.ctx.view
        ads: dict[str, AdvertiseKeys] = {}
        for h in sorted(replies):
            ad = replies[h]
            if h in p.participants and getattr(ad, "hospital", None) == h and \
                    valid_ad(ad, p, self.ctx.federation):
                ads[h] = ad
            else:
                v.rejected[h] = "invalid advertisement"
        dup = repeated_key([ads[h] for h in sorted(ads)])
        if dup is not None:
            raise self.abort(f"{dup} advertised a public key another hospital advertised")
        v.advance(PeerStatus.INVITED, ads, PeerStatus.ADVERTISED)
        self.need(v.advertised, "advertised valid keys")
        sid_r = round_session_id(p)
        return ServerShareKeys(self.ctx, self._acc, ads, sid_r)


class ServerShareKeys(Advertised):
    """Holds the accepted advertisements and ``sid_r``; relays to each hospital its
    neighbourhood's advertisements and
    keeps, per receiver, the shares of the hospitals that made it into U2."""

    name = SHARE_KEYS

    def requests(self, live: set[str]) -> dict[str, Any]:
        """Each hospital gets the advertisements of its own neighbourhood in U1 (one shared
        tuple on the complete graph): O(k) keys per hospital, not O(n)."""
        p, u1 = self.ctx.params, self.ctx.view.advertised
        if p.graph.complete:
            ads = tuple(self.ads[h] for h in u1)
            return {h: ShareKeysRequest(p.round, ads) for h in u1 if h in live}
        return {h: ShareKeysRequest(p.round, tuple(
            self.ads[v] for v in sorted(p.graph.holders(h) & self.ads.keys())))
            for h in u1 if h in live}

    def collect(self, replies: Mapping[str, Any]) -> ServerState:
        p, v = self.ctx.params, self.ctx.view
        u1 = set(v.advertised)
        ok = []
        for h in sorted(replies):
            r = replies[h]
            if not self.answered(h, r, ShareKeysReply, u1) or not isinstance(r.shares, tuple):
                v.rejected[h] = "invalid share_keys reply"
                continue
            want = (p.graph.of(h) & u1)
            got = [s.receiver for s in r.shares if isinstance(s, EncryptedShare)
                   and s.sender == h and isinstance(s.receiver, str)]
            if len(got) != len(r.shares) or len(set(got)) != len(got) or set(got) != want:
                v.rejected[h] = "shares not addressed to exactly its neighbours"
                continue
            ok.append(h)
        v.advance(PeerStatus.ADVERTISED, ok, PeerStatus.SHARED)
        self.need(ok, "shared keys")
        inbox: dict[str, list[EncryptedShare]] = {}
        for h in ok:
            for s in replies[h].shares:
                inbox.setdefault(s.receiver, []).append(s)
        u2 = set(ok)
        inbox = {r: [s for s in lst if s.sender in u2] for r, lst in inbox.items()}
        return ServerMaskedInput(self.ctx, self._acc, self.ads, self.sid_r, inbox)
