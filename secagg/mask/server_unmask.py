"""Aggregator state ``unmask``: collect the revealed shares, check them, reconstruct every
survivor's self-mask seed and every dropped peer's mask key, and remove the masks from the
running sum.

Every check runs and every secret is reconstructed before any mask is removed (any failure
aborts first); the masks are then removed in place with one reduction mod 2**m at the end
(see :func:`fedrx.secagg.prg.prg_accumulate_many`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedrx.errors import CryptoError
from fedrx.secagg import bitpack, kex, shamir
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
from fedrx.secagg.mask.server_state import Advertised, ServerCompleted, ServerContext, ServerState
from fedrx.secagg.mask.server_status import PeerStatus
from fedrx.secagg.mask.transcript import local_survivors, mask_sign
from fedrx.secagg.prg import prg_accumulate_many

Shares = dict[str, dict[int, bytes]]
"""owner -> Shamir index of the holder -> share."""


class ServerUnmask(Advertised):
    """Holds the advertisements, ``sid_r``, the running sum and (active mode) the
    consistency signatures U4. Asks U4 (active) or U3 (passive); moves to
    :class:`ServerCompleted` with the unmasked sum."""

    name = UNMASK

    def __init__(self, ctx: ServerContext, acc: bitpack.SumAccumulator,
                 ads: dict[str, AdvertiseKeys], sid_r: bytes,
                 sigs: dict[str, ConsistencySignature]):
        super().__init__(ctx, acc, ads, sid_r)
        self._sigs = sigs

    def _asked(self) -> tuple[str, ...]:
        """U4 in active mode, U3 in passive mode (sorted)."""
        p = self.ctx.params
        return self.ctx.view.at(PeerStatus.SIGNED if p.active else PeerStatus.MASKED)

    def requests(self, live: set[str]) -> dict[str, Any]:
        """Each asked hospital gets its neighbourhood's part of U3 and of U2 \\ U3, and
        the consistency signatures of the hospitals within two hops (whose neighbourhoods
        overlap its own), each with the signed names outside its neighbourhood. On the
        complete graph: all of U3, U2 \\ U3 and the signatures, one shared tuple each."""
        p, v, g = self.ctx.params, self.ctx.view, self.ctx.params.graph
        asked = [h for h in self._asked() if h in live]
        u3, dropped_all = v.masked, sorted(set(v.shared) - set(v.masked))
        if g.complete:
            sigs = tuple(self._sigs[h] for h in sorted(self._sigs))
            return {h: UnmaskRequest(p.round, u3, tuple(dropped_all), sigs) for h in asked}
        u3_set, dropped_set = frozenset(u3), frozenset(dropped_all)
        lists = {z: local_survivors(g, u3, z, u3_set) for z in self._sigs}  # what z signed
        out = {}
        for h in asked:
            mine = g.holders(h)
            near = sorted(g.two_hop(h) & self._sigs.keys())
            sigs = tuple(dataclasses.replace(self._sigs[z], outside=tuple(
                u for u in lists[z] if u not in mine)) for z in near)
            out[h] = UnmaskRequest(p.round, local_survivors(g, u3, h, u3_set),
                                   tuple(sorted(mine & dropped_set)), sigs)
        return out

    def _split(self, replies: Mapping[str, Any]) -> tuple[list[str], Shares, Shares]:
        """(hospitals whose reply is acceptable, self-mask shares, mask-key shares)."""
        p, v = self.ctx.params, self.ctx.view
        u2, u3 = set(v.shared), set(v.masked)
        b_sh: Shares = {}
        k_sh: Shares = {}
        asked = set(self._asked())
        ok = []
        for h in sorted(replies):
            r = replies[h]
            if not self.answered(h, r, UnmaskReply, asked) or not isinstance(r.shares, tuple):
                v.rejected[h] = "invalid unmask reply"
                continue
            mine = p.graph.holders(h) & u2
            good = all(isinstance(s, RevealedShare) and isinstance(s.owner, str)
                       and s.owner in mine
                       and s.kind == (SELF_MASK if s.owner in u3 else SECRET_KEY)
                       and isinstance(s.share, bytes) for s in r.shares) \
                and len({s.owner for s in r.shares}) == len(r.shares)
            if not good:
                v.rejected[h] = "unmask reply reveals unexpected shares"
                continue
            ok.append(h)
            x = p.index(h)
            for s in r.shares:
                (b_sh if s.kind == SELF_MASK else k_sh).setdefault(s.owner, {})[x] = s.share
        return ok, b_sh, k_sh

    def collect(self, replies: Mapping[str, Any]) -> ServerState:
        p, v = self.ctx.params, self.ctx.view
        current = PeerStatus.SIGNED if p.active else PeerStatus.MASKED
        ok, b_sh, k_sh = self._split(replies)
        u3 = v.masked
        v.advance(current, ok, PeerStatus.UNMASKED)
        self.need(ok, "answered unmask")
        m, t = p.modulus_bits, p.threshold
        for u in u3:
            have = len(b_sh.get(u, {}))
            if have < t:
                raise self.abort(f"only {have} self-mask shares for {u}; need t={t}")
        self._check_self_mask_shares(u3, [b_sh[u] for u in u3])
        self_keys: list[bytes] = []
        for u in u3:
            try:
                seed = shamir.reconstruct(b_sh[u], t)
            except CryptoError:
                raise self.abort(f"self-mask shares for {u} are inconsistent") from None
            self_keys.append(kex.self_mask_key(seed, self.sid_r, p.round, u))
        pair_keys = self._dropped_pair_keys(sorted(set(v.shared) - set(u3)), k_sh)
        total = self._acc.total()
        prg_accumulate_many([(k, -1) for k in self_keys] + pair_keys, total, m)
        if m < 64:
            total &= np.uint64((1 << m) - 1)
        return ServerCompleted(self.ctx, total, u3)

    def _dropped_pair_keys(self, dropped: Sequence[str],
                           k_sh: Shares) -> list[tuple[bytes, int]]:
        """(k_uw, sign) of every pairwise mask a survivor w added for a dropped u, from u's
        reconstructed mask key, checked against u's signed advertisement."""
        p, u3 = self.ctx.params, set(self.ctx.view.masked)
        t = p.threshold
        pair_keys: list[tuple[bytes, int]] = []
        for u in dropped:
            shares = k_sh.get(u, {})
            if len(shares) < t:
                raise self.abort(f"only {len(shares)} key shares for dropped {u}; need t={t}")
            try:
                sk = kex.private_from_bytes(shamir.reconstruct(shares, t))
            except CryptoError:
                raise self.abort(f"key shares for {u} are inconsistent") from None
            if kex.public_bytes(sk) != self.ads[u].mask_public:
                raise self.abort(f"reconstructed key of {u} does not match its advertisement")
            for w in sorted(p.graph.of(u) & u3):
                k = kex.mask_key(kex.agree(sk, self.ads[w].mask_public), self.sid_r,
                                 p.round, u, w)
                pair_keys.append((k, -mask_sign(w, u)))
        return pair_keys

    def _check_self_mask_shares(self, u3: Sequence[str],
                                share_sets: Sequence[Mapping[int, bytes]]) -> None:
        """Abort unless every U3 member's revealed self-mask shares lie on one polynomial.

        A holder that reveals a wrong self-mask share would otherwise silently corrupt the
        sum (reconstruction only checks that the seed fits 32 bytes). Whenever more than t
        shares of a seed arrived, :func:`shamir.consistent_many` detects a wrong share (up to
        k - t wrong shares out of k) except with probability <= 2**-128 per index set; with
        exactly t shares nothing can be checked. Runs before any mask is removed; the abort
        names the owner(s), never a share or the holder.
        """
        t = self.ctx.params.threshold
        try:
            ok = shamir.consistent_many(share_sets, t)
        except CryptoError:  # a malformed share: name the first owner with one
            for u, shares in zip(u3, share_sets, strict=True):
                try:
                    shamir.consistent_many([shares], t)
                except CryptoError:
                    raise self.abort(f"self-mask shares for {u} are inconsistent") from None
            raise self.abort("malformed self-mask shares") from None  # unreachable
        bad = [u for u, good in zip(u3, ok, strict=True) if not good]
        if bad:
            raise self.abort(f"self-mask shares for {', '.join(bad)} are inconsistent "
                             "(a holder revealed a wrong share)")
