"""Pairwise-mask secure aggregation (Bonawitz et al. CCS 2017; SecAgg+ graph, Bell et al.
CCS 2020) as explicit per-party state machines, free of transport code.

Stages (in order; ``consistency_check`` only in active mode):

``advertise_keys``
    Each hospital makes two fresh X25519 key pairs (``enc`` for share encryption, ``mask``
    for pairwise masks) and signs ``(session_id, round, hospital, enc_pk, mask_pk)`` with its
    long-term Ed25519 key. U1 = hospitals whose advertisement verifies.
``share_keys``
    Every hospital verifies every advertisement against the federation's pinned keys and
    EXCLUDES peers whose signature fails (or which advertise for another round). The round
    session id ``sid_r = SHA-256(session_id, round, all accepted (hospital, enc_pk, mask_pk))``
    binds every later key. A fresh 32-byte self-mask seed ``b`` (os.urandom) and the raw
    mask secret key are Shamir-shared t-of-|holders| (holders = graph neighbours in U1 plus
    self), over GF(2**256 + 297) (33-byte shares). Each holder's pair of shares is
    AEAD-encrypted to it (AES-GCM; plaintext ``b_share || mask_key_share``, 66 bytes; key
    from X25519 of the two ``enc`` keys, directional; AD = sid_r, round, sender, receiver).
    The pairwise mask keys ``k_hv`` (X25519 of the two ``mask`` keys, then HKDF) are agreed
    in this stage too, once the advertisements are verified. U2 = hospitals whose shares
    arrived.
``masked_input``
    ``y = x + PRG(b) + sum_{v in N∩U2, v > h} PRG(k_hv) - sum_{v in N∩U2, v < h} PRG(k_hv)``
    mod ``R = 2**m``, bit-packed to m bits per entry. U3 = hospitals whose input arrived.
``consistency_check`` (active mode)
    Each hospital signs ``(sid_r, round, U3, model_hash)``; before unmasking it requires at
    least t valid signatures from members of U3 on exactly the list it signed.
``unmask``
    For each peer whose shares it holds, a hospital reveals EITHER the b-share (peer in U3)
    OR the mask-key share (peer in U2 \\ U3), never both in one round. It aborts when the
    alive and dropped lists overlap, name itself as dropped, disagree with what it saw or
    signed, or hold fewer than t survivors.

Dropouts at any stage are tolerated while at least t hospitals remain (per neighbourhood
for SecAgg+); below t a party raises :class:`MaskingAbort` before revealing anything.
Deadlines are the transport's job: a stage's ``collect`` only sees replies that arrived.

All randomness comes from the OS (``os.urandom``, ``secrets``, ``cryptography`` keygen).
No exception message or repr contains key material, seeds, shares or inputs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import numpy as np

from fedrx.errors import CryptoError, ProtocolError
from fedrx.secagg import bitpack, kex, shamir
from fedrx.secagg.graph import Graph
from fedrx.secagg.identity import Federation
from fedrx.secagg.mask.messages import (
    SECRET_KEY,
    SELF_MASK,
    AdvertiseKeys,
    AdvertiseRequest,
    ConsistencyRequest,
    ConsistencySignature,
    EncryptedShare,
    MaskedInput,
    MaskedInputRequest,
    RevealedShare,
    ShareKeysReply,
    ShareKeysRequest,
    UnmaskReply,
    UnmaskRequest,
)
from fedrx.secagg.prg import prg_accumulate_many

ADVERTISE = "advertise_keys"
SHARE_KEYS = "share_keys"
MASKED_INPUT = "masked_input"
CONSISTENCY = "consistency_check"
UNMASK = "unmask"
STAGES_PASSIVE = (ADVERTISE, SHARE_KEYS, MASKED_INPUT, UNMASK)
STAGES_ACTIVE = (ADVERTISE, SHARE_KEYS, MASKED_INPUT, CONSISTENCY, UNMASK)


class MaskingAbort(ProtocolError):
    """A party refuses to continue the round; ``reason`` is safe to log."""

    def __init__(self, reason: str, stage: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.stage = stage


class Signer(Protocol):
    hospital: str

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class MaskingParams:
    """Round parameters every party derives identically.

    ``participants``: sorted hospital ids (Shamir index = position + 1). ``length``: entries
    of the encoded vector. ``modulus_bits``: m, with R = 2**m. ``threshold``: t (per
    neighbourhood for SecAgg+). ``model_hash``: bound into consistency signatures.
    """

    session_id: bytes
    round: int
    participants: tuple[str, ...]
    length: int
    modulus_bits: int
    threshold: int
    graph: Graph
    active: bool = True
    model_hash: bytes = b""

    @property
    def stages(self) -> tuple[str, ...]:
        return STAGES_ACTIVE if self.active else STAGES_PASSIVE

    def index(self, hospital: str) -> int:
        return self.participants.index(hospital) + 1


# ------------------------------------------------------------------ shared derivations


def advertise_message(session_id: bytes, round_: int, hospital: str, enc_pk: bytes,
                      mask_pk: bytes) -> bytes:
    return kex.encode_fields("fedrx/secagg/v1/advertise", session_id, round_, hospital,
                             enc_pk, mask_pk)


def consistency_message(sid_r: bytes, round_: int, survivors: Sequence[str],
                        model_hash: bytes) -> bytes:
    return kex.encode_fields("fedrx/secagg/v1/consistency", sid_r, round_, model_hash,
                             len(survivors), *survivors)


def round_session_id(session_id: bytes, round_: int,
                     ads: Mapping[str, AdvertiseKeys]) -> bytes:
    """sid_r: hash of the session id, round and every accepted advertisement (sorted)."""
    fields: list[bytes | str | int] = ["fedrx/secagg/v1/round-sid", session_id, round_]
    for h in sorted(ads):
        fields += [h, ads[h].enc_public, ads[h].mask_public]
    return hashlib.sha256(kex.encode_fields(*fields)).digest()


def mask_sign(owner: str, peer: str) -> int:
    """+1 if ``owner`` adds PRG(k_owner,peer), -1 if it subtracts it (owner < peer adds)."""
    return 1 if peer > owner else -1


def _valid_ad(ad: Any, params: MaskingParams, federation: Federation) -> bool:
    return (isinstance(ad, AdvertiseKeys) and ad.round == params.round
            and ad.hospital in params.participants
            and isinstance(ad.enc_public, bytes) and len(ad.enc_public) == 32
            and isinstance(ad.mask_public, bytes) and len(ad.mask_public) == 32
            and ad.enc_public != ad.mask_public
            and federation.verify(ad.hospital, ad.signature, advertise_message(
                params.session_id, params.round, ad.hospital, ad.enc_public, ad.mask_public)))


def _distinct(names: Any) -> bool:
    return (isinstance(names, tuple) and all(isinstance(x, str) for x in names)
            and len(set(names)) == len(names))


class ClientState(Enum):
    INIT = "init"
    ADVERTISED = "advertised"
    SHARED = "shared"
    MASKED = "masked"
    SIGNED = "signed"
    DONE = "done"
    ABORTED = "aborted"


class ServerState(Enum):
    ADVERTISE = ADVERTISE
    SHARE_KEYS = SHARE_KEYS
    MASKED_INPUT = MASKED_INPUT
    CONSISTENCY = CONSISTENCY
    UNMASK = UNMASK
    DONE = "done"
    ABORTED = "aborted"


# --------------------------------------------------------------------------- client


class MaskingClient:
    """One hospital's side of one masking round.

    Valid transitions: INIT -advertise_keys-> ADVERTISED -share_keys-> SHARED
    -masked_input-> MASKED [-consistency_check-> SIGNED] -unmask-> DONE; any failed check
    -> ABORTED (terminal; per-round secrets are dropped). ``revealed`` maps each peer to the
    kind of share released for it (for audit/tests; contains no secret).
    """

    _EXPECT = {ADVERTISE: ClientState.INIT, SHARE_KEYS: ClientState.ADVERTISED,
               MASKED_INPUT: ClientState.SHARED, CONSISTENCY: ClientState.MASKED}

    def __init__(self, params: MaskingParams, signer: Signer, federation: Federation):
        if signer.hospital not in params.participants:
            raise MaskingAbort(f"{signer.hospital} is not a participant of this round")
        self.params = params
        self.hospital = signer.hospital
        self._signer = signer
        self._fed = federation
        self.state = ClientState.INIT
        self.abort_reason: str | None = None
        self.revealed: dict[str, str] = {}
        self.excluded: list[str] = []
        self._x: np.ndarray | None = None
        self._enc_sk: Any = None
        self._mask_sk: Any = None
        self._ads: dict[str, AdvertiseKeys] = {}
        self._sid_r = b""
        self._held: dict[str, tuple[bytes, bytes]] = {}
        self._enc_shared: dict[str, bytes] = {}  # holder -> X25519(enc_sk, holder enc_pk)
        self._pair_keys: dict[str, bytes] = {}  # holder -> pairwise mask PRG key k_hv
        self._u2: frozenset[str] = frozenset()
        self._signed: tuple[str, ...] | None = None
        self._seed = b""
        self._own_ad: AdvertiseKeys | None = None

    def __repr__(self) -> str:
        return f"MaskingClient(hospital={self.hospital!r}, state={self.state.value})"

    # -- helpers
    def _abort(self, reason: str, stage: str | None = None) -> MaskingAbort:
        self.state = ClientState.ABORTED
        self.abort_reason = reason
        self._x = self._enc_sk = self._mask_sk = None
        self._held = {}
        self._enc_shared = {}
        self._pair_keys = {}
        self._seed = b""
        return MaskingAbort(f"{self.hospital}: {reason}", stage)

    def set_input(self, encoded: np.ndarray) -> None:
        """The encoded input: uint64 entries in [0, 2**m), length ``params.length``."""
        x = np.asarray(encoded)
        m = self.params.modulus_bits
        if x.dtype != np.uint64 or x.shape != (self.params.length,):
            raise self._abort(f"encoded input must be uint64 of length {self.params.length}")
        if m < 64 and x.size and int(x.max()) >> m:
            raise self._abort(f"encoded input has entries outside [0, 2**{m})")
        if self.state not in (ClientState.INIT, ClientState.ADVERTISED, ClientState.SHARED):
            raise self._abort(f"input set too late (state {self.state.value})")
        self._x = x.copy()

    def handle(self, stage: str, request: Any) -> Any:
        """Answer ``request`` for ``stage`` or raise MaskingAbort (state becomes ABORTED)."""
        if self.state is ClientState.ABORTED:
            raise MaskingAbort(f"{self.hospital}: round already aborted ({self.abort_reason})",
                               stage)
        if stage not in self.params.stages:
            raise self._abort(f"unknown stage {stage!r}", stage)
        want = self._EXPECT.get(stage)
        if stage == UNMASK:
            want = ClientState.SIGNED if self.params.active else ClientState.MASKED
        if self.state is not want:
            raise self._abort(f"stage {stage} not allowed in state {self.state.value}", stage)
        if getattr(request, "round", None) != self.params.round:
            raise self._abort(f"request for stage {stage} is not for round "
                              f"{self.params.round}", stage)
        handler = {ADVERTISE: self._advertise, SHARE_KEYS: self._share_keys,
                   MASKED_INPUT: self._masked_input, CONSISTENCY: self._consistency,
                   UNMASK: self._unmask}[stage]
        return handler(request)

    # -- stages
    def _advertise(self, req: Any) -> AdvertiseKeys:
        if not isinstance(req, AdvertiseRequest):
            raise self._abort("malformed advertise request", ADVERTISE)
        self._enc_sk, enc_pk = kex.generate_keypair()
        self._mask_sk, mask_pk = kex.generate_keypair()
        p = self.params
        sig = self._signer.sign(advertise_message(p.session_id, p.round, self.hospital,
                                                  enc_pk, mask_pk))
        self._own_ad = AdvertiseKeys(self.hospital, p.round, enc_pk, mask_pk, sig)
        self.state = ClientState.ADVERTISED
        return self._own_ad

    def _share_keys(self, req: Any) -> ShareKeysReply:
        p = self.params
        if not isinstance(req, ShareKeysRequest) or not isinstance(req.advertised, tuple):
            raise self._abort("malformed share_keys request", SHARE_KEYS)
        names = [getattr(a, "hospital", None) for a in req.advertised]
        if len(set(names)) != len(names):
            raise self._abort("advertisement list names a hospital twice", SHARE_KEYS)
        ads: dict[str, AdvertiseKeys] = {}
        for ad in req.advertised:
            if _valid_ad(ad, p, self._fed):
                ads[ad.hospital] = ad
            else:
                self.excluded.append(str(getattr(ad, "hospital", "?")))
        if ads.get(self.hospital) != self._own_ad:
            raise self._abort("own advertised keys missing or altered by the aggregator",
                              SHARE_KEYS)
        holders = sorted(p.graph.holders(self.hospital) & ads.keys())
        if len(ads) < p.threshold or len(holders) < p.threshold:
            raise self._abort(f"only {len(holders)} share holders advertised keys; need "
                              f"t={p.threshold}", SHARE_KEYS)
        self._ads = ads
        self._sid_r = round_session_id(p.session_id, p.round, ads)
        seed = os.urandom(shamir.SECRET_BYTES)
        xs = [p.index(h) for h in holders]
        b_sh = shamir.split(seed, p.threshold, xs)
        k_sh = shamir.split(kex.private_bytes(self._mask_sk), p.threshold, xs)
        self._seed = seed
        out = []
        for h in holders:
            x = p.index(h)
            if h == self.hospital:
                self._held[h] = (b_sh[x], k_sh[x])
                continue
            shared = kex.agree(self._enc_sk, ads[h].enc_public)
            self._enc_shared[h] = shared  # reused to open h's share in masked_input
            # Pairwise mask keys are agreed here, as soon as the verified advertisements are
            # known (as Google's fcp SecAgg client does in its ShareKeys state), so that
            # masked_input only decrypts shares and expands masks.
            self._pair_keys[h] = kex.mask_key(kex.agree(self._mask_sk, ads[h].mask_public),
                                              self._sid_r, p.round, self.hospital, h)
            key = kex.share_key(shared, self._sid_r, p.round, self.hospital, h)
            pt = b_sh[x] + k_sh[x]  # sender/receiver are bound by the key and the AD
            nonce, ct = kex.seal(key, pt, kex.share_ad(self._sid_r, p.round, self.hospital, h))
            out.append(EncryptedShare(self.hospital, h, nonce, ct))
        self.state = ClientState.SHARED
        return ShareKeysReply(self.hospital, p.round, tuple(out))

    def _open_share(self, s: Any) -> tuple[str, bytes, bytes]:
        p = self.params
        if (not isinstance(s, EncryptedShare) or s.receiver != self.hospital
                or s.sender not in self._ads or s.sender == self.hospital
                or s.sender not in p.graph.of(self.hospital)):
            raise self._abort("received a share not addressed to me by a neighbour",
                              MASKED_INPUT)
        try:
            # X25519(enc_sk, sender's enc_pk), computed once in share_keys (an advertised
            # neighbour is one of the holders we shared with there)
            key = kex.share_key(self._enc_shared[s.sender], self._sid_r, p.round, s.sender,
                                self.hospital)
            pt = kex.open_sealed(key, s.nonce, s.ciphertext,
                                 kex.share_ad(self._sid_r, p.round, s.sender, self.hospital))
        except CryptoError:
            raise self._abort(f"share from {s.sender} failed authentication",
                              MASKED_INPUT) from None
        n = shamir.SHARE_BYTES
        if len(pt) != 2 * n:  # exactly b_share || k_share
            raise self._abort(f"share from {s.sender} is malformed", MASKED_INPUT)
        return s.sender, pt[:n], pt[n:]

    def _masked_input(self, req: Any) -> MaskedInput:
        p = self.params
        if not isinstance(req, MaskedInputRequest) or not isinstance(req.shares, tuple):
            raise self._abort("malformed masked_input request", MASKED_INPUT)
        if self._x is None:
            raise self._abort("no input set before masked_input", MASKED_INPUT)
        for s in req.shares:
            sender, b_share, k_share = self._open_share(s)
            if sender in self._held:
                raise self._abort(f"two shares from {sender}", MASKED_INPUT)
            self._held[sender] = (b_share, k_share)
        self._enc_shared = {}  # no further shares to open this round
        self._u2 = frozenset(self._held)
        if len(self._u2) < p.threshold:
            raise self._abort(f"only {len(self._u2)} share holders remain; need "
                              f"t={p.threshold}", MASKED_INPUT)
        m = p.modulus_bits
        # Masks are added/subtracted in place with wrapping uint64 arithmetic and reduced
        # once at the end: R = 2**m divides 2**64, so this equals the sum of the reduced
        # PRG vectors mod R.
        masks = [(kex.self_mask_key(self._seed, self._sid_r, p.round, self.hospital), 1)]
        for v in sorted(self._u2 - {self.hospital}):
            masks.append((self._pair_keys[v], mask_sign(self.hospital, v)))
        self._pair_keys = {}
        y = self._x  # our own copy (set_input); masked in place, never used unmasked again
        self._x = None
        prg_accumulate_many(masks, y, m)
        if m < 64:
            y &= np.uint64((1 << m) - 1)
        self._seed = b""
        self.state = ClientState.MASKED
        return MaskedInput(self.hospital, p.round, m, p.length, bitpack.pack(y, m))

    def _check_survivors(self, survivors: Any, stage: str) -> tuple[str, ...]:
        p = self.params
        if not _distinct(survivors):
            raise self._abort("malformed survivor list", stage)
        surv = tuple(survivors)
        if self.hospital not in surv:
            raise self._abort("survivor list omits me", stage)
        unknown = [u for u in surv if u not in self._ads]
        if unknown:
            raise self._abort(f"survivor list names {unknown[0]} who never advertised keys",
                              stage)
        stray = [u for u in surv if u in p.graph.holders(self.hospital) and u not in self._u2]
        if stray:
            raise self._abort(f"survivor list names {stray[0]} who sent me no shares", stage)
        if len(surv) < p.threshold:
            raise self._abort(f"only {len(surv)} survivors; need t={p.threshold}", stage)
        return surv

    def _consistency(self, req: Any) -> ConsistencySignature:
        if not isinstance(req, ConsistencyRequest):
            raise self._abort("malformed consistency request", CONSISTENCY)
        surv = self._check_survivors(req.survivors, CONSISTENCY)
        self._signed = surv
        p = self.params
        sig = self._signer.sign(consistency_message(self._sid_r, p.round, sorted(surv),
                                                    p.model_hash))
        self.state = ClientState.SIGNED
        return ConsistencySignature(self.hospital, p.round, sig)

    def _unmask(self, req: Any) -> UnmaskReply:
        p = self.params
        if not isinstance(req, UnmaskRequest) or not _distinct(req.dropped):
            raise self._abort("malformed unmask request", UNMASK)
        if not _distinct(req.survivors):
            raise self._abort("malformed survivor list", UNMASK)
        both = sorted(set(req.survivors) & set(req.dropped))
        if both:
            raise self._abort(f"{both[0]} is listed as both alive and dropped", UNMASK)
        if self.hospital in req.dropped:
            raise self._abort("the aggregator lists me as dropped", UNMASK)
        surv = self._check_survivors(req.survivors, UNMASK)
        if p.active:
            if self._signed is None or sorted(surv) != sorted(self._signed):
                raise self._abort("survivor list changed between consistency_check and "
                                  "unmask", UNMASK)
            msg = consistency_message(self._sid_r, p.round, sorted(surv), p.model_hash)
            ok: set[str] = set()
            for s in req.signatures:  # stop at t distinct valid signers: that is the rule
                if len(ok) >= p.threshold:
                    break
                if isinstance(s, ConsistencySignature) and s.round == p.round \
                        and s.hospital in surv and s.hospital not in ok \
                        and self._fed.verify(s.hospital, s.signature, msg):
                    ok.add(s.hospital)
            if len(ok) < p.threshold:
                raise self._abort(f"only {len(ok)} valid consistency signatures; need "
                                  f"t={p.threshold}", UNMASK)
        mine = p.graph.holders(self.hospital)
        expected_dropped = self._u2 - set(surv)
        if any(u not in self._ads for u in req.dropped) or \
                {u for u in req.dropped if u in mine} != expected_dropped:
            raise self._abort("dropped list disagrees with the shares I received", UNMASK)
        out = []
        for owner in sorted(self._u2):
            b_share, k_share = self._held[owner]
            if owner in surv:
                out.append(RevealedShare(owner, SELF_MASK, b_share))
                self.revealed[owner] = SELF_MASK
            else:
                out.append(RevealedShare(owner, SECRET_KEY, k_share))
                self.revealed[owner] = SECRET_KEY
        self._held = {}
        self._enc_sk = self._mask_sk = None
        self.state = ClientState.DONE
        return UnmaskReply(self.hospital, p.round, tuple(out))


# --------------------------------------------------------------------------- server


@dataclass
class ServerView:
    """The sets the aggregator has fixed so far (U1 ⊇ U2 ⊇ U3; U4 = consistency signers)."""

    u1: tuple[str, ...] = ()
    u2: tuple[str, ...] = ()
    u3: tuple[str, ...] = ()
    u4: tuple[str, ...] = ()
    u5: tuple[str, ...] = ()
    rejected: dict[str, str] = field(default_factory=dict)


class MaskingServer:
    """The aggregator's side of one masking round (honest behaviour).

    Valid transitions follow ``params.stages``: for each stage ``requests`` then
    ``collect``; ``collect`` of the last stage reconstructs and moves to DONE. Any failure
    raises MaskingAbort and moves to ABORTED.
    """

    def __init__(self, params: MaskingParams, federation: Federation):
        self.params = params
        self._fed = federation
        self.state = ServerState(params.stages[0])
        self.view = ServerView()
        self.abort_reason: str | None = None
        self._ads: dict[str, AdvertiseKeys] = {}
        self._sid_r = b""
        self._inbox: dict[str, list[EncryptedShare]] = {}
        self._sum = bitpack.SumAccumulator(params.modulus_bits, params.length)
        self._total = np.zeros(0, dtype=np.uint64)  # the unmasked sum, set by unmask
        self._sigs: dict[str, ConsistencySignature] = {}

    def __repr__(self) -> str:
        return f"MaskingServer(round={self.params.round}, state={self.state.value})"

    def _abort(self, reason: str, stage: str) -> MaskingAbort:
        self.state = ServerState.ABORTED
        self.abort_reason = reason
        return MaskingAbort(reason, stage)

    def _enter(self, stage: str) -> None:
        if self.state is ServerState.ABORTED:
            raise MaskingAbort(f"round already aborted ({self.abort_reason})", stage)
        if self.state.value != stage:
            raise self._abort(f"stage {stage} not allowed in state {self.state.value}", stage)

    def _advance(self, stage: str) -> None:
        st = self.params.stages
        i = st.index(stage)
        self.state = ServerState(st[i + 1]) if i + 1 < len(st) else ServerState.DONE

    def _need(self, have: Sequence[str], what: str, stage: str) -> None:
        if len(have) < self.params.threshold:
            raise self._abort(f"only {len(have)} hospitals {what}; need "
                              f"t={self.params.threshold}", stage)

    def requests(self, stage: str, alive: Sequence[str]) -> dict[str, Any]:
        self._enter(stage)
        p, v = self.params, self.view
        live = set(alive)
        if stage == ADVERTISE:
            return {h: AdvertiseRequest(p.round) for h in p.participants if h in live}
        if stage == SHARE_KEYS:
            ads = tuple(self._ads[h] for h in v.u1)
            return {h: ShareKeysRequest(p.round, ads) for h in v.u1 if h in live}
        if stage == MASKED_INPUT:
            return {h: MaskedInputRequest(p.round, tuple(self._inbox.get(h, ())))
                    for h in v.u2 if h in live}
        dropped = tuple(sorted(set(v.u2) - set(v.u3)))
        if stage == CONSISTENCY:
            return {h: ConsistencyRequest(p.round, v.u3) for h in v.u3 if h in live}
        sigs = tuple(self._sigs[h] for h in v.u4)
        who = v.u4 if p.active else v.u3
        return {h: UnmaskRequest(p.round, v.u3, dropped, sigs) for h in who if h in live}

    def collect(self, stage: str, replies: Mapping[str, Any]) -> None:
        self._enter(stage)
        {ADVERTISE: self._c_advertise, SHARE_KEYS: self._c_share, MASKED_INPUT: self._c_masked,
         CONSISTENCY: self._c_consistency, UNMASK: self._c_unmask}[stage](replies)
        if self.state is not ServerState.ABORTED:
            self._advance(stage)

    def _c_advertise(self, replies: Mapping[str, Any]) -> None:
        p = self.params
        for h in sorted(replies):
            ad = replies[h]
            if h in p.participants and getattr(ad, "hospital", None) == h and \
                    _valid_ad(ad, p, self._fed):
                self._ads[h] = ad
            else:
                self.view.rejected[h] = "invalid advertisement"
        self.view.u1 = tuple(sorted(self._ads))
        self._need(self.view.u1, "advertised valid keys", ADVERTISE)
        self._sid_r = round_session_id(p.session_id, p.round, self._ads)

    def _c_share(self, replies: Mapping[str, Any]) -> None:
        p, u1 = self.params, set(self.view.u1)
        ok = []
        for h in sorted(replies):
            r = replies[h]
            if h not in u1 or not isinstance(r, ShareKeysReply) or r.hospital != h \
                    or r.round != p.round or not isinstance(r.shares, tuple):
                self.view.rejected[h] = "invalid share_keys reply"
                continue
            want = (p.graph.of(h) & u1)
            got = [s.receiver for s in r.shares if isinstance(s, EncryptedShare)
                   and s.sender == h]
            if len(got) != len(r.shares) or len(set(got)) != len(got) or set(got) != want:
                self.view.rejected[h] = "shares not addressed to exactly its neighbours"
                continue
            ok.append(h)
        self.view.u2 = tuple(ok)
        self._need(ok, "shared keys", SHARE_KEYS)
        for h in ok:
            for s in replies[h].shares:
                self._inbox.setdefault(s.receiver, []).append(s)
        u2 = set(ok)
        self._inbox = {r: [s for s in lst if s.sender in u2] for r, lst in self._inbox.items()}

    def _c_masked(self, replies: Mapping[str, Any]) -> None:
        p = self.params
        ok = []
        for h in sorted(replies):
            r = replies[h]
            if h not in self.view.u2 or not isinstance(r, MaskedInput) or r.hospital != h \
                    or r.round != p.round or r.modulus_bits != p.modulus_bits \
                    or r.length != p.length or not isinstance(r.packed, bytes):
                self.view.rejected[h] = "invalid masked input"
                continue
            try:  # validates size and padding before anything is added
                self._sum.add(r.packed)
            except ProtocolError:
                self.view.rejected[h] = "malformed packed vector"
                continue
            ok.append(h)
        self.view.u3 = tuple(ok)
        self._need(ok, "sent masked inputs", MASKED_INPUT)

    def _c_consistency(self, replies: Mapping[str, Any]) -> None:
        p = self.params
        msg = consistency_message(self._sid_r, p.round, list(self.view.u3), p.model_hash)
        for h in sorted(replies):
            s = replies[h]
            if h in self.view.u3 and isinstance(s, ConsistencySignature) and s.hospital == h \
                    and s.round == p.round and self._fed.verify(h, s.signature, msg):
                self._sigs[h] = s
            else:
                self.view.rejected[h] = "invalid consistency signature"
        self.view.u4 = tuple(sorted(self._sigs))
        self._need(self.view.u4, "signed the survivor list", CONSISTENCY)

    def _c_unmask(self, replies: Mapping[str, Any]) -> None:
        p, v = self.params, self.view
        u2, u3 = set(v.u2), set(v.u3)
        b_sh: dict[str, dict[int, bytes]] = {}
        k_sh: dict[str, dict[int, bytes]] = {}
        asked = set(v.u4 if p.active else v.u3)
        ok = []
        for h in sorted(replies):
            r = replies[h]
            if h not in asked or not isinstance(r, UnmaskReply) or r.hospital != h \
                    or r.round != p.round or not isinstance(r.shares, tuple):
                v.rejected[h] = "invalid unmask reply"
                continue
            mine = p.graph.holders(h) & u2
            good = all(isinstance(s, RevealedShare) and s.owner in mine
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
        v.u5 = tuple(ok)
        self._need(ok, "answered unmask", UNMASK)
        m, t = p.modulus_bits, p.threshold
        # Check the self-mask shares and reconstruct every secret first (any failure aborts
        # before work), then remove the masks in place; one reduction mod 2**m at the end
        # (see prg_accumulate).
        for u in v.u3:
            have = len(b_sh.get(u, {}))
            if have < t:
                raise self._abort(f"only {have} self-mask shares for {u}; need t={t}", UNMASK)
        self._check_self_mask_shares([b_sh[u] for u in v.u3])
        self_keys: list[bytes] = []
        for u in v.u3:
            shares = b_sh[u]
            try:
                seed = shamir.reconstruct(shares, t)
            except CryptoError:
                raise self._abort(f"self-mask shares for {u} are inconsistent", UNMASK) from None
            self_keys.append(kex.self_mask_key(seed, self._sid_r, p.round, u))
        pair_keys: list[tuple[bytes, int]] = []
        for u in sorted(u2 - u3):
            shares = k_sh.get(u, {})
            if len(shares) < t:
                raise self._abort(f"only {len(shares)} key shares for dropped {u}; need "
                                  f"t={t}", UNMASK)
            try:
                sk = kex.private_from_bytes(shamir.reconstruct(shares, t))
            except CryptoError:
                raise self._abort(f"key shares for {u} are inconsistent", UNMASK) from None
            if kex.public_bytes(sk) != self._ads[u].mask_public:
                raise self._abort(f"reconstructed key of {u} does not match its "
                                  "advertisement", UNMASK)
            for w in sorted(p.graph.of(u) & u3):
                k = kex.mask_key(kex.agree(sk, self._ads[w].mask_public), self._sid_r,
                                 p.round, u, w)
                pair_keys.append((k, -mask_sign(w, u)))
        total = self._sum.total()
        prg_accumulate_many([(k, -1) for k in self_keys] + pair_keys, total, m)
        if m < 64:
            total &= np.uint64((1 << m) - 1)
        self._total = total

    def _check_self_mask_shares(self, share_sets: Sequence[Mapping[int, bytes]]) -> None:
        """Abort unless every U3 member's revealed self-mask shares lie on one polynomial.

        A holder that reveals a wrong self-mask share would otherwise silently corrupt the
        sum (reconstruction only checks that the seed fits 32 bytes). Whenever more than t
        shares of a seed arrived, :func:`shamir.consistent_many` detects a wrong share (up to
        k - t wrong shares out of k) except with probability <= 2**-128 per index set; with
        exactly t shares nothing can be checked. Runs before any mask is removed; the abort
        names the owner(s), never a share or the holder.
        """
        u3, t = self.view.u3, self.params.threshold
        try:
            ok = shamir.consistent_many(share_sets, t)
        except CryptoError:  # a malformed share: name the first owner with one
            for u, shares in zip(u3, share_sets, strict=True):
                try:
                    shamir.consistent_many([shares], t)
                except CryptoError:
                    raise self._abort(f"self-mask shares for {u} are inconsistent",
                                      UNMASK) from None
            raise self._abort("malformed self-mask shares", UNMASK) from None  # unreachable
        bad = [u for u, good in zip(u3, ok, strict=True) if not good]
        if bad:
            raise self._abort(f"self-mask shares for {', '.join(bad)} are inconsistent "
                              "(a holder revealed a wrong share)", UNMASK)

    def result(self) -> tuple[np.ndarray, tuple[str, ...]]:
        """(sum of U3's encoded inputs mod 2**m as uint64, contributors U3)."""
        if self.state is not ServerState.DONE:
            raise MaskingAbort(f"no result in state {self.state.value}")
        return self._total.copy(), self.view.u3
