"""Client state ``masked_input``: open the neighbours' shares and send
``y = x + PRG(b) + sum_{v in N∩U2, v > h} PRG(k_hv) - sum_{v in N∩U2, v < h} PRG(k_hv)``
mod ``R = 2**m``, bit-packed to m bits per entry."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedrx.errors import CryptoError
from fedrx.secagg import bitpack, kex, shamir
from fedrx.secagg.mask.client_consistency import ConsistencyState
from fedrx.secagg.mask.client_state import ClientContext, ClientState, InputState
from fedrx.secagg.mask.client_unmask import UnmaskState
from fedrx.secagg.mask.messages import (
    AdvertiseKeys,
    EncryptedShare,
    MaskedInput,
    MaskedInputRequest,
)
from fedrx.secagg.mask.params import MASKED_INPUT
from fedrx.secagg.mask.transcript import mask_sign
from fedrx.secagg.prg import prg_accumulate_many


class MaskedInputState(InputState):
    """Holds the input ``x``, the accepted advertisements ``ads``, ``sid_r``, the self-mask
    seed, the own pair of shares (``held``), the X25519 secrets for opening each holder's
    share (``enc_shared``) and the pairwise mask keys. Moves to :class:`ConsistencyState`
    (active mode) or :class:`UnmaskState` holding only ``ads``, ``sid_r``, the held shares
    and U2 (the peers whose shares arrived, self included): seed, mask keys, share-opening
    secrets and the input are dropped once the masked input is made.
    """

    name = "shared"
    stage = MASKED_INPUT

    def __init__(self, ctx: ClientContext, x: np.ndarray | None, ads: dict[str, AdvertiseKeys],
                 sid_r: bytes, seed: bytes, held: dict[str, tuple[bytes, bytes]],
                 enc_shared: dict[str, bytes], pair_keys: dict[str, bytes]):
        super().__init__(ctx, x)
        self.ads = ads
        self.sid_r = sid_r
        self._seed = seed
        self.held = held
        self.enc_shared = enc_shared
        self._pair_keys = pair_keys

    def _open_share(self, s: Any) -> tuple[str, bytes, bytes]:
        p, me = self.ctx.params, self.ctx.hospital
        if (not isinstance(s, EncryptedShare) or s.receiver != me
                or not isinstance(s.sender, str) or not isinstance(s.nonce, bytes)
                or not isinstance(s.ciphertext, bytes)
                or s.sender not in self.ads or s.sender == me
                or s.sender not in p.graph.of(me)):
            raise self.abort("received a share not addressed to me by a neighbour")
        try:
            # X25519(enc_sk, sender's enc_pk), computed once in share_keys (an advertised
            # neighbour is one of the holders we shared with there)
            key = kex.share_key(self.enc_shared[s.sender], self.sid_r, p.round, s.sender, me)
            pt = kex.open_sealed(key, s.nonce, s.ciphertext,
                                 kex.share_ad(self.sid_r, p.round, s.sender, me))
        except CryptoError:
            raise self.abort(f"share from {s.sender} failed authentication") from None
        n = shamir.SHARE_BYTES
        if len(pt) != 2 * n:  # exactly b_share || k_share
            raise self.abort(f"share from {s.sender} is malformed")
        return s.sender, pt[:n], pt[n:]

    def handle(self, request: Any) -> tuple[MaskedInput, ClientState]:
        p, me = self.ctx.params, self.ctx.hospital
        if not isinstance(request, MaskedInputRequest) or not isinstance(request.shares, tuple):
            raise self.abort("malformed masked_input request")
        if self.x is None:
            raise self.abort("no input set before masked_input")
        held = self.held
        for s in request.shares:
            sender, b_share, k_share = self._open_share(s)
            if sender in held:
                raise self.abort(f"two shares from {sender}")
            held[sender] = (b_share, k_share)
        u2 = frozenset(held)
        if len(u2) < p.threshold:
            raise self.abort(f"only {len(u2)} share holders remain; need t={p.threshold}")
        m = p.modulus_bits
        # Masks are added/subtracted in place with wrapping uint64 arithmetic and reduced
        # once at the end: R = 2**m divides 2**64, so this equals the sum of the reduced
        # PRG vectors mod R.
        masks = [(kex.self_mask_key(self._seed, self.sid_r, p.round, me), 1)]
        for v in sorted(u2 - {me}):
            masks.append((self._pair_keys[v], mask_sign(me, v)))
        y = self.x  # our own copy (set_input); masked in place, never used unmasked again
        prg_accumulate_many(masks, y, m)
        if m < 64:
            y &= np.uint64((1 << m) - 1)
        reply = MaskedInput(me, p.round, m, p.length, bitpack.pack(y, m))
        nxt: ClientState
        if p.active:
            nxt = ConsistencyState(self.ctx, self.ads, self.sid_r, held, u2)
        else:
            nxt = UnmaskState(self.ctx, self.ads, self.sid_r, held, u2, None)
        return reply, nxt
