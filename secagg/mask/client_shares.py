"""Client state ``share_keys``: verify the advertisements, Shamir-share the self-mask seed
and the mask secret key to the neighbourhood, agree the pairwise mask keys."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from fedrx.secagg import kex, shamir
from fedrx.secagg.mask.client_masked_input import MaskedInputState
from fedrx.secagg.mask.client_state import ClientContext, ClientState, InputState
from fedrx.secagg.mask.messages import (
    AdvertiseKeys,
    EncryptedShare,
    ShareKeysReply,
    ShareKeysRequest,
)
from fedrx.secagg.mask.params import SHARE_KEYS
from fedrx.secagg.mask.transcript import repeated_key, round_session_id, valid_ad


class ShareKeysState(InputState):
    """Holds the input ``x``, both per-round private keys and the own advertisement.

    The aggregator relays only the advertisements of this hospital's neighbourhood (all of
    U1 on the complete graph); one from outside it aborts. Every relayed advertisement is
    checked against the federation's pinned keys and this
    hospital's own round context; ANY advertisement that fails (forged, for another round,
    or signed over another context: the aggregator sent its author another model,
    participant list, threshold or graph seed) aborts the round, as does a public key
    advertised twice. The round session id ``sid_r`` binds every accepted key. A
    fresh 32-byte seed ``b`` (os.urandom) and the raw mask secret key are shared
    t-of-|holders| (holders: graph neighbours that advertised, plus self), each holder's
    pair AES-GCM-encrypted to it (plaintext ``b_share || mask_key_share``, 66 bytes; key from
    X25519 of the two ``enc`` keys, directional; AD = sid_r, round, sender, receiver). The
    pairwise mask keys ``k_hv`` are agreed here too (as fcp's ShareKeys state does), so that
    masked_input only opens shares and expands masks. Moves to :class:`MaskedInputState`;
    the private keys are not passed on.
    """

    name = "advertised"
    stage = SHARE_KEYS

    def __init__(self, ctx: ClientContext, x: np.ndarray | None, enc_sk: Any, mask_sk: Any,
                 own_ad: AdvertiseKeys):
        super().__init__(ctx, x)
        self._enc_sk = enc_sk
        self._mask_sk = mask_sk
        self._own_ad = own_ad

    def handle(self, request: Any) -> tuple[ShareKeysReply, ClientState]:
        p, me = self.ctx.params, self.ctx.hospital
        if not isinstance(request, ShareKeysRequest) or not isinstance(request.advertised,
                                                                      tuple):
            raise self.abort("malformed share_keys request")
        names = [getattr(a, "hospital", None) for a in request.advertised]
        if not all(isinstance(x, str) for x in names):
            raise self.abort("malformed share_keys request")
        if len(set(names)) != len(names):
            raise self.abort("advertisement list names a hospital twice")
        mine = p.graph.holders(me)
        ads: dict[str, AdvertiseKeys] = {}
        for ad in request.advertised:
            # Only the neighbourhood's advertisements are relayed, verified and kept: the
            # cost of this stage grows with k, never with n (issue 14 item 9).
            who = getattr(ad, "hospital", None)
            if not isinstance(who, str) or who not in mine:
                raise self.abort(f"relayed advertisement of {str(who)[:64]}, not a neighbour")
            # Not signed over MY round context (another model, participant list, threshold
            # or graph seed; or forged, or for another round): an honest aggregator relays
            # only advertisements it verified under the same context, so refuse the round
            # before any share leaves this hospital.
            if not valid_ad(ad, p, self.ctx.federation):
                raise self.abort(f"advertisement of {str(getattr(ad, 'hospital', '?'))[:64]} "
                                 "is not signed over this hospital's round context")
            ads[ad.hospital] = ad
        if ads.get(me) != self._own_ad:
            raise self.abort("own advertised keys missing or altered by the aggregator")
        dup = repeated_key(list(request.advertised))
        if dup is not None:
            raise self.abort(f"{dup} advertised a public key another hospital advertised")
        holders = sorted(ads)
        if len(holders) < p.threshold:
            raise self.abort(f"only {len(holders)} share holders advertised keys; need "
                             f"t={p.threshold}")
        sid_r = round_session_id(p)
        seed = os.urandom(shamir.SECRET_BYTES)
        xs = [p.index(h) for h in holders]
        b_sh = shamir.split(seed, p.threshold, xs)
        k_sh = shamir.split(kex.private_bytes(self._mask_sk), p.threshold, xs)
        held: dict[str, tuple[bytes, bytes]] = {}
        enc_shared: dict[str, bytes] = {}  # holder -> X25519(enc_sk, holder enc_pk)
        pair_keys: dict[str, bytes] = {}  # holder -> pairwise mask PRG key k_hv
        out = []
        for h in holders:
            x = p.index(h)
            if h == me:
                held[h] = (b_sh[x], k_sh[x])
                continue
            shared = kex.agree(self._enc_sk, ads[h].enc_public)
            enc_shared[h] = shared  # reused to open h's share in masked_input
            pair_keys[h] = kex.mask_key(kex.agree(self._mask_sk, ads[h].mask_public),
                                        sid_r, p.round, me, h)
            key = kex.share_key(shared, sid_r, p.round, me, h)
            pt = b_sh[x] + k_sh[x]  # sender/receiver are bound by the key and the AD
            nonce, ct = kex.seal(key, pt, kex.share_ad(sid_r, p.round, me, h))
            out.append(EncryptedShare(me, h, nonce, ct))
        nxt = MaskedInputState(self.ctx, self.x, ads, sid_r, seed, held, enc_shared,
                               pair_keys)
        return ShareKeysReply(me, p.round, tuple(out)), nxt
