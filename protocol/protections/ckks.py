"""``--protection ckks``: CKKS homomorphic aggregation; the aggregator never holds a secret key.

Stages (both sides walk them in this order):

``keys``
    Only when the aggregator has no key epoch yet, or ``config.rotate_every`` rounds have
    passed: it asks ONE live hospital (the key holder, rotating with the epoch number) to run
    :meth:`fedrx.secagg.ckks.keyring.CkksKeyring.create` for the next epoch. The reply holds
    the signed manifest, the key-less public context and one sealed package per federation
    member; the aggregator verifies the signatures and keeps it. Otherwise nobody is asked.

``upload``
    The aggregator asks each live participant for its update under the current key epoch
    (``key_id``), attaching that hospital's sealed key package until the hospital has once
    uploaded under the epoch (relayed; the aggregator cannot open it, and cannot forge one:
    packages are signed by the key holder). A hospital accepts only NEWER epochs. The
    hospital checks the epoch, the vector length and the CKKS range
    (``|x_i| <= params.max_abs_input(n_participants)``), encrypts its float64 input
    ``[count * delta..., count]`` with the epoch's secret key into ``ceil(L / 4096)``
    ciphertexts (one chunk = one ciphertext), and signs ``(session, round, key id, hospital,
    SHA-256 of every chunk)`` with its Ed25519 identity key. The aggregator verifies the
    signature against the pinned key, then checks and adds the upload chunk by chunk into ONE
    running sum (memory O(model)). A bad upload (wrong epoch/context, corrupted, oversized,
    unsigned) is rejected with its reason in ``stats["rejected"]``; the round goes on.

``confirm``
    The aggregator sends the round's ONE contributor list (the signed upload headers, in sum
    order) to every live participant. Each checks every listed header against its own round
    (participants, distinct, signed over its own round context, ``>= min_contributors``) and
    signs the list; a hospital signs at most ONE list per round. A majority of the
    participants must confirm, so no two different lists can be decrypted in one round and
    their sums differenced (e.g. ``{v, w, x}`` and ``{w, x}`` to get ``v``).

``decrypt``
    The aggregator sends the aggregate ciphertexts, with every contributor's signed upload
    header and the majority's confirmations of that list, to ``config.decryptors`` live
    key-holding hospitals (contributors first, rotated by round). A hospital decrypts at most
    ONE aggregate per round, and only the SUM of the confirmed list of uploads: at least
    ``config.min_contributors`` distinct round participants, each header signed over this
    hospital's OWN round context, and an aggregate whose keyed linear tags equal the sum of the
    listed uploads' signed tags (:mod:`fedrx.secagg.ckks.sum_tag`,
    :mod:`fedrx.secagg.ckks.sum_check`). It returns the sum flooded with deterministic noise and
    rounded to a grid (:meth:`fedrx.secagg.ckks.secret.CkksSecretKey.release`), never the raw
    decryption, and only if the sum is within the configured bounds (count in ``[1, n *
    max_count]``, norm within ``count * clip_norm``, the CKKS range). If several hospitals
    decrypt, the aggregator checks that they agree within the bound, and bounds the sum itself.

Round context: every upload statement binds :func:`round_context` (session, round, the model
hash THIS hospital computed from the weights it received, participants, vector length,
configuration). A decryptor verifies every listed header against its own digest, so an
aggregator that gives hospitals different models (a "trap" model for all but the victim) or
different participant lists gets nothing decrypted. Each upload also carries ``n + 4`` keyed
linear tags of its ciphertexts under a round key derived from the epoch's flooding key (which
the aggregator never holds): the tag of the aggregate must be the sum of the tags, which no
other ciphertext (the victim's upload scaled, plus a known offset, alone, duplicated, from an
older round) satisfies except with negligible probability (< 2^-275). The decryptor never receives
another hospital's ciphertext (it holds the secret key and could decrypt it).

What remains: an aggregator colluding with ANY hospital learns every update (that hospital
holds the key); the aggregator still chooses which signed uploads to list (at least
``min_contributors`` of them): see threat_model.md 4.4.

Dropouts: a hospital that dropped after ``upload`` stays in the sum; the round needs
``min_contributors`` valid uploads, a majority of the participants alive to confirm the list,
and one live decryptor.

This module only binds the protection to the :class:`~fedrx.protocol.protection.Protection`
interface. The per-party state machines are in :mod:`fedrx.secagg.ckks.server` and
:mod:`fedrx.secagg.ckks.client`; the long-lived key state, split by role, in
:mod:`fedrx.secagg.ckks.key_state`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedrx.errors import ConfigError, ProtocolAbort
from fedrx.protocol.context import context_digest
from fedrx.protocol.protection import (
    AggregateResult,
    ClientProtection,
    Protection,
    RoundContext,
    ServerProtection,
)
from fedrx.secagg.ckks.client import ClientReady, ClientRound, ClientState
from fedrx.secagg.ckks.key_state import AggregatorKeyState, HospitalKeyState
from fedrx.secagg.ckks.keyring import CkksKeyring
from fedrx.secagg.ckks.messages import STAGES
from fedrx.secagg.ckks.params import CkksConfig, CkksParams
from fedrx.secagg.ckks.server import ServerDone, ServerKeys, ServerRound, ServerState
from fedrx.secagg.ckks.sum_check import bounds_for, confirm_quorum
from fedrx.secagg.identity import Federation, Identity

#: Name of the aggregator's checkpointed key epoch (canonical JSON, see
#: :mod:`fedrx.secagg.ckks.keyring_json`).
CHECKPOINT_BLOB = "ckks_keyring.json"


class CkksClient(ClientProtection):
    """One hospital's side of one round: walks the states of :mod:`fedrx.secagg.ckks.client`."""

    stages = STAGES

    def __init__(self, ctx: RoundContext, keys: HospitalKeyState):
        self.ctx = ctx
        self.config = keys.config
        self._round = ClientRound(ctx.session_id, ctx.round, ctx.participants,
                                  ctx.vector_length, keys, round_context(ctx, keys.config))
        self.state: ClientState = ClientReady(self._round, None)

    def __repr__(self) -> str:
        return f"CkksClient(hospital={self._round.keys.hospital!r}, round={self.ctx.round})"

    def set_input(self, vector: np.ndarray) -> None:
        x = np.array(vector, dtype=np.float64)  # a copy: clipping must not touch the caller's
        if x.shape != (self.ctx.vector_length,):
            raise ProtocolAbort(f"input length {x.shape} != {self.ctx.vector_length}")
        if not np.all(np.isfinite(x)):
            raise ProtocolAbort("input has non-finite values")
        bounds = bounds_for(self.config, len(self.ctx.participants))
        clip = self.config.clip_norm
        if clip is not None and x.size > 1:
            norm, cap = float(np.linalg.norm(x[:-1])), abs(float(x[-1])) * clip
            if norm > cap:  # clip the unweighted delta to clip_norm (as mask does)
                x[:-1] *= cap / norm
        try:
            bounds.check_input(x)
        except ProtocolAbort as exc:
            raise ProtocolAbort(f"{exc} for {len(self.ctx.participants)} participants"
                                ) from None
        if not isinstance(self.state, ClientReady):
            raise ProtocolAbort("input given after the upload of this round")
        self.state = ClientReady(self._round, x.copy())

    def handle(self, stage: str, request: Any) -> Any:
        reply, self.state = self.state.handle(stage, request)
        if isinstance(reply, ProtocolAbort):
            raise reply
        return reply


class CkksServer(ServerProtection):
    """The aggregator's side of one round: walks the states of :mod:`fedrx.secagg.ckks.server`."""

    stages = STAGES

    def __init__(self, first: ServerKeys):
        self.state: ServerState = first

    def _at(self, stage: str) -> ServerState:
        if stage not in STAGES:
            raise ProtocolAbort(f"unknown stage {stage!r}")
        if stage != self.state.stage:
            raise ProtocolAbort(f"stage {stage!r} out of order: the round is at "
                                f"{self.state.stage!r}")
        return self.state

    def requests(self, stage: str, alive: Sequence[str]) -> dict[str, Any]:
        state = self._at(stage)
        assert not isinstance(state, ServerDone)
        return state.requests(alive)

    def absorb(self, stage: str, hospital: str, reply: Any) -> Any:
        """An upload on arrival is folded into the running homomorphic sum
        (:meth:`~fedrx.secagg.ckks.server.ServerUpload.absorb`); other replies unchanged."""
        if stage != self.state.stage or not hasattr(self.state, "absorb"):
            return reply
        return self.state.absorb(hospital, reply)

    def collect(self, stage: str, replies: Mapping[str, Any]) -> None:
        state = self._at(stage)
        assert not isinstance(state, ServerDone)
        self.state = state.collect(replies)

    def result(self) -> AggregateResult:
        done = self.state
        if not isinstance(done, ServerDone):
            raise ProtocolAbort("the CKKS round has not completed")
        return AggregateResult(done.total.copy(), done.contributors, done.stats())


class CkksProtection(Protection):
    """CKKS secure aggregation (``--protection ckks``).

    One instance per party. ``identities``: the hospitals this instance acts for (one on a
    hospital node; none on the aggregator; all of them in :meth:`simulated`).
    ``keyring``: optional pre-distributed epoch (manifest, public context, sealed packages;
    safe for anyone). Without it, the first round's ``keys`` stage creates epoch 1 at a key
    holder hospital and the packages travel, sealed, with the upload requests.
    Across rounds: :attr:`aggregator` (public key state, checkpointed) and one
    :attr:`hospitals` entry per identity (its opened secret key; never leaves the node).
    """

    name = "ckks"
    stages = STAGES

    def __init__(self, federation: Federation, keyring: CkksKeyring | None = None,
                 identities: Sequence[Identity] = (), config: CkksConfig | None = None):
        self.federation = federation
        self.config = config or CkksConfig()
        self.config.check()
        self.aggregator = AggregatorKeyState(federation, self.config)
        self.hospitals = {i.hospital: HospitalKeyState(i, federation, self.config, keyring)
                          for i in identities}
        if keyring is not None:
            self.aggregator.install(keyring)

    def __repr__(self) -> str:
        ring = self.aggregator.keyring
        epoch = None if ring is None else ring.epoch
        return f"CkksProtection(epoch={epoch}, acting_for={sorted(self.hospitals)})"

    @classmethod
    def simulated(cls, hospitals: Sequence[str], *, config: CkksConfig | None = None,
                  epoch: int = 1, key_holder: str | None = None) -> CkksProtection:
        """An in-process federation acting for every hospital: fresh identities, keyring made
        by ``key_holder`` (default: the first hospital in sorted order)."""
        ids = [Identity.generate(h) for h in sorted(set(hospitals))]
        fed = Federation.of(ids)
        holder = next(i for i in ids if i.hospital == (key_holder or ids[0].hospital))
        cfg = config or CkksConfig()
        ring = CkksKeyring.create(holder, fed, epoch=epoch, federation_id=os.urandom(32),
                                  params=cfg.params)
        return cls(fed, ring, ids, cfg)

    def validate(self, n_hospitals: int, vector_length: int) -> None:
        if n_hospitals < self.config.min_contributors:
            raise ConfigError(f"ckks needs at least min_contributors="
                              f"{self.config.min_contributors} hospitals, got {n_hospitals}")
        if vector_length < 1:
            raise ConfigError("vector_length must be >= 1")

    def min_survivors(self, n_participants: int) -> int:
        """``min_contributors`` uploads, and a majority of the participants to confirm the
        contributor list."""
        return max(self.config.min_contributors, confirm_quorum(n_participants))

    def new_server(self, ctx: RoundContext) -> ServerProtection:
        self.validate(len(ctx.participants), ctx.vector_length)
        rnd = ServerRound(ctx.session_id, ctx.round, ctx.participants, ctx.vector_length,
                          self.aggregator, context=round_context(ctx, self.config))
        return CkksServer(ServerKeys(rnd, self.aggregator.next_epoch(ctx.round)))

    def new_client(self, ctx: RoundContext, hospital: str) -> ClientProtection:
        self.validate(len(ctx.participants), ctx.vector_length)
        keys = self.hospitals.get(hospital)
        if keys is None:
            raise ConfigError(f"ckks protection has no identity for {hospital!r}")
        return CkksClient(ctx, keys)

    def checkpoint(self) -> dict[str, bytes]:
        """The aggregator's key epoch (public data and sealed packages), if it has one."""
        blob = self.aggregator.checkpoint()
        return {} if blob is None else {CHECKPOINT_BLOB: blob}

    def restore(self, blobs: dict[str, bytes]) -> None:
        """Re-install a checkpointed epoch (verified again; CryptoError if tampered); every
        hospital gets its sealed package relayed again at its next upload."""
        blob = blobs.get(CHECKPOINT_BLOB)
        if blob is not None:
            self.aggregator.restore(blob)

    def reconnected(self, hospitals: Sequence[str]) -> None:
        self.aggregator.reconnected(hospitals)


def round_context(ctx: RoundContext, config: CkksConfig) -> bytes:
    """Digest of everything a CKKS round means (:func:`fedrx.protocol.context.context_digest`):
    session, round, the model hash THIS party computed, participants, vector length and the
    configuration. Signed into every upload; a decryptor verifies each listed upload against
    its OWN digest, so hospitals given different models or participant lists never have their
    uploads decrypted together."""
    return context_digest({
        "protection": "ckks", "session": ctx.session_id, "round": ctx.round,
        "model_hash": ctx.model_hash, "participants": list(ctx.participants),
        "vector_length": ctx.vector_length,
        "config": {"min_contributors": config.min_contributors,
                   "flood_bits": config.flood_bits, "max_count": config.max_count,
                   "clip_norm": config.clip_norm, "params": config.params.to_json()}})


_CONFIG_KEYS = ("min_contributors", "decryptors", "flood_bits", "rotate_every",
                "poly_modulus_degree", "coeff_mod_bit_sizes", "scale_bits", "max_count",
                "clip_norm")


def make_ckks_protection(*, federation: Federation | None, identity: Identity | None = None,
                         params: Mapping[str, Any] | None = None) -> CkksProtection:
    """The ``ckks`` protection for one party (``identity`` None: the aggregator).

    ``params`` may set ``min_contributors``, ``decryptors``, ``flood_bits``, ``rotate_every``
    ``max_count``, ``clip_norm`` (the bounds a decrypted sum is checked against), the CKKS
    ``poly_modulus_degree``, ``coeff_mod_bit_sizes``, ``scale_bits``; and ``keyring`` (a
    :class:`CkksKeyring`) to use a pre-distributed epoch.
    """
    params = dict(params or {})
    keyring = params.pop("keyring", None)
    unknown = sorted(set(params) - set(_CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"unknown ckks parameter(s): {', '.join(unknown)}")
    if keyring is not None and not isinstance(keyring, CkksKeyring):
        raise ConfigError("ckks 'keyring' must be a CkksKeyring")
    base = CkksParams()
    try:
        ckks = CkksParams(int(params.pop("poly_modulus_degree", base.poly_modulus_degree)),
                          tuple(params.pop("coeff_mod_bit_sizes", base.coeff_mod_bit_sizes)),
                          int(params.pop("scale_bits", base.scale_bits)))
        cfg = CkksConfig(params=ckks, **params)
    except (TypeError, ValueError):
        raise ConfigError("malformed ckks parameters") from None
    return CkksProtection(federation or Federation({}), keyring,
                          [identity] if identity is not None else [], cfg)
