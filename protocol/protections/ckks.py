"""``--protection ckks``: CKKS homomorphic aggregation; the aggregator never holds a secret key.

Stages (both sides walk them in this order):

``keys``
    Only when the aggregator has no key epoch yet, or ``config.rotate_every`` rounds have
    passed: it asks ONE live hospital (the key holder, rotating with the epoch number) to run
    :meth:`fedrx.secagg.ckks.CkksKeyring.create` for the next epoch. The reply holds the signed
    manifest, the key-less public context and one sealed package per federation member; the
    aggregator verifies the signatures and keeps it. Otherwise nobody is asked.

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

``decrypt``
    The aggregator sends the aggregate ciphertexts, with every contributor's signed upload
    header, to ``config.decryptors`` live key-holding hospitals (contributors first, rotated by
    round). A hospital decrypts at most ONE aggregate per round, and only if it carries at
    least ``config.min_contributors`` distinct valid signed headers from round participants.
    It returns the sum flooded with deterministic noise and rounded to a grid
    (:meth:`fedrx.secagg.ckks.CkksSecretKey.release`), never the raw decryption.
    If several hospitals decrypt, the aggregator checks that they agree within the bound.

What the decrypting hospital CAN verify: the epoch; that ``>= min_contributors`` distinct
participants signed an upload for this session/round/epoch; that no aggregate chunk is
byte-identical to a contributor's chunk (stops only the naive "return one upload" replay);
that the ciphertexts are well-formed, fresh-scale, data-level. What it CANNOT verify: that the
aggregate is the sum of those uploads. Checking that would need the individual ciphertexts,
which it could then decrypt. A malicious aggregator can return one hospital's ciphertext plus a
known plaintext offset and have it decrypted: CKKS gives no input privacy against a malicious
aggregator, nor against an aggregator colluding with any hospital (see threat_model.md 4.4).

Dropouts: a hospital that dropped after ``upload`` stays in the sum; the round needs
``min_contributors`` valid uploads and one live decryptor.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedrx.errors import ConfigError, CryptoError
from fedrx.protocol.protection import (
    AggregateResult,
    ClientProtection,
    Protection,
    ProtocolAbort,
    RoundContext,
    ServerProtection,
)
from fedrx.secagg.ckks.ciphertext import CkksAccumulator, CkksPublicContext
from fedrx.secagg.ckks.keyring import CkksKeyring
from fedrx.secagg.ckks.messages import (
    STAGES,
    CkksDecryption,
    CkksDecryptRequest,
    CkksKeyringReply,
    CkksKeyringRequest,
    CkksUpload,
    CkksUploadRequest,
    KeyDelivery,
    UploadHeader,
    upload_statement,
)
from fedrx.secagg.ckks.params import CkksConfig, CkksParams
from fedrx.secagg.ckks.release import ReleasePolicy
from fedrx.secagg.ckks.secret import CkksSecretKey
from fedrx.secagg.identity import Federation, Identity

# ------------------------------------------------------------------------------- client


class CkksClient(ClientProtection):
    """One hospital's side of one round; its epoch keys live on the owning protection."""

    stages = STAGES

    def __init__(self, ctx: RoundContext, owner: CkksProtection, identity: Identity):
        self.ctx = ctx
        self.owner = owner
        self.config = owner.config
        self.identity = identity
        self.federation = owner.federation
        self.vector: np.ndarray | None = None
        self._upload: CkksUpload | None = None
        self._decrypted = False

    def __repr__(self) -> str:
        return f"CkksClient(hospital={self.identity.hospital!r}, round={self.ctx.round})"

    def set_input(self, vector: np.ndarray) -> None:
        x = np.asarray(vector, dtype=np.float64)
        if x.shape != (self.ctx.vector_length,):
            raise ProtocolAbort(f"input length {x.shape} != {self.ctx.vector_length}")
        if not np.all(np.isfinite(x)):
            raise ProtocolAbort("input has non-finite values")
        limit = self.config.params.max_abs_input(len(self.ctx.participants))
        if float(np.max(np.abs(x))) > limit:
            raise ProtocolAbort(f"an input entry exceeds the CKKS range |x| <= {limit:.6g} "
                                  f"for {len(self.ctx.participants)} participants")
        self.vector = x.copy()

    def _secret(self, session_id: bytes, round_: int, key_id: bytes) -> CkksSecretKey:
        if session_id != self.ctx.session_id or round_ != self.ctx.round:
            raise ProtocolAbort(f"request for another session or round ({round_}), "
                                  f"expected round {self.ctx.round}")
        secret = self.owner.held_key(self.identity.hospital)
        if secret is None or key_id != secret.key_id:
            held = "no key" if secret is None else f"epoch {secret.epoch}"
            raise ProtocolAbort(f"aggregator uses key id {key_id.hex()[:16]}, this hospital "
                                  f"holds {held}")
        return secret

    def handle(self, stage: str, request: Any) -> Any:
        if stage == "keys" and isinstance(request, CkksKeyringRequest):
            return self._handle_keys(request)
        if stage == "upload" and isinstance(request, CkksUploadRequest):
            return self._handle_upload(request)
        if stage == "decrypt" and isinstance(request, CkksDecryptRequest):
            return self._handle_decrypt(request)
        raise ProtocolAbort(f"unexpected request for stage {stage!r}")

    def _handle_keys(self, req: CkksKeyringRequest) -> CkksKeyringReply:
        if req.session_id != self.ctx.session_id or req.round != self.ctx.round:
            raise ProtocolAbort("key request for another session or round")
        ring = self.owner.create_epoch(self.identity, req.epoch, self.ctx.session_id)
        return CkksKeyringReply(self.ctx.round, ring)

    def _handle_upload(self, req: CkksUploadRequest) -> CkksUpload:
        if req.delivery is not None:
            self.owner.accept_delivery(self.identity, req.delivery)
        secret = self._secret(req.session_id, req.round, req.key_id)
        if req.vector_length != self.ctx.vector_length:
            raise ProtocolAbort("upload request has the wrong vector length")
        if self._upload is None:  # a repeated request gets the same ciphertexts
            if self.vector is None:
                raise ProtocolAbort("no input set before upload")
            chunks = tuple(secret.encrypt(self.vector))
            digests = tuple(hashlib.sha256(c).digest() for c in chunks)
            me = self.identity.hospital
            sig = self.identity.sign(upload_statement(self.ctx.session_id, self.ctx.round,
                                                      secret.key_id, me, digests))
            self._upload = CkksUpload(self.ctx.round, secret.key_id,
                                      UploadHeader(me, digests, sig), chunks)
            self.vector = None
        elif self._upload.key_id != secret.key_id:
            raise ProtocolAbort("already uploaded under another key this round")
        return self._upload

    def _handle_decrypt(self, req: CkksDecryptRequest) -> CkksDecryption:
        secret = self._secret(req.session_id, req.round, req.key_id)
        if self._decrypted:
            raise ProtocolAbort("already decrypted one aggregate this round")
        n_chunks = secret.params.chunk_count(self.ctx.vector_length)
        seen: set[str] = set()
        individual: set[bytes] = set()
        for hdr in req.contributors:
            if hdr.hospital in seen or hdr.hospital not in self.ctx.participants:
                raise ProtocolAbort(f"contributor {hdr.hospital!r} repeated or not a "
                                      "participant of this round")
            stmt = upload_statement(self.ctx.session_id, self.ctx.round, secret.key_id,
                                    hdr.hospital, hdr.digests)
            if len(hdr.digests) != n_chunks or not self.federation.verify(
                    hdr.hospital, hdr.signature, stmt):
                raise ProtocolAbort(f"upload header of {hdr.hospital!r} does not verify")
            seen.add(hdr.hospital)
            individual.update(hdr.digests)
        if len(seen) < self.config.min_contributors:
            raise ProtocolAbort(f"refusing to decrypt an aggregate of {len(seen)} signed "
                                  f"uploads (< {self.config.min_contributors})")
        if len(req.aggregate) != n_chunks:
            raise ProtocolAbort(f"aggregate has {len(req.aggregate)} chunks, expected {n_chunks}")
        if any(hashlib.sha256(c).digest() in individual for c in req.aggregate):
            raise ProtocolAbort("aggregate chunk is byte-identical to an individual upload")
        self._decrypted = True  # set before decrypting: no second try with other inputs
        try:
            total, policy = secret.release(req.aggregate, self.ctx.vector_length, len(seen),
                                           self.config.flood_bits)
        except CryptoError as exc:
            raise ProtocolAbort(f"aggregate does not decrypt: {exc}") from None
        return CkksDecryption(self.identity.hospital, self.ctx.round, secret.key_id, total,
                              policy.error_bound)


# ------------------------------------------------------------------------------- server


class CkksServer(ServerProtection):
    """The aggregator's side of one round. Holds one running sum: O(model) memory."""

    stages = STAGES

    def __init__(self, ctx: RoundContext, owner: CkksProtection, new_epoch: int | None):
        self.ctx = ctx
        self.owner = owner
        self.config = owner.config
        self.federation = owner.federation
        self.new_epoch = new_epoch
        self.n_chunks = self.config.params.chunk_count(ctx.vector_length)
        self.public: CkksPublicContext | None = None
        self.acc: CkksAccumulator | None = None
        self.headers: dict[str, UploadHeader] = {}
        self.rejected: dict[str, str] = {}
        self.asked: list[str] = []
        self.decryptors: list[str] = []
        self.upload_bytes = 0
        self.total: np.ndarray | None = None
        self.policy: ReleasePolicy | None = None

    def _rotated(self, alive: Sequence[str], shift: int) -> list[str]:
        parts = sorted(h for h in self.ctx.participants if h in alive)
        if not parts:
            return []
        k = shift % len(parts)
        return parts[k:] + parts[:k]

    def requests(self, stage: str, alive: Sequence[str]) -> dict[str, Any]:
        if stage == "keys":
            if self.new_epoch is None:
                return {}
            holders = [h for h in self._rotated(alive, self.new_epoch) if h in
                       self.federation.members]
            if not holders:
                return {}
            self.asked = holders[:1]
            return {holders[0]: CkksKeyringRequest(self.ctx.session_id, self.ctx.round,
                                                   self.new_epoch)}
        if stage == "upload":
            ring = self.owner.keyring
            if ring is None or self.public is None:
                return {}
            out = {}
            for h in alive:
                if h not in self.ctx.participants:
                    continue
                delivery = None
                if h not in self.owner.confirmed(ring.key_id) and h in ring.packages:
                    delivery = KeyDelivery(ring.manifest, ring.public_context, ring.packages[h])
                out[h] = CkksUploadRequest(self.ctx.session_id, self.ctx.round, ring.epoch,
                                           ring.key_id, self.ctx.vector_length, delivery)
            return out
        if stage == "decrypt":
            if self.acc is None or self.public is None:
                return {}
            contributors = tuple(self.acc.contributors)
            recipients = set(self.public.manifest.recipients)
            cands = [h for h in self._rotated(alive, self.ctx.round - 1) if h in recipients]
            cands.sort(key=lambda h: h not in contributors)  # stable: contributors first
            self.asked = cands[: self.config.decryptors]
            req = CkksDecryptRequest(self.ctx.session_id, self.ctx.round, self.public.key_id,
                                     tuple(self.headers[h] for h in contributors),
                                     tuple(self.acc.chunks()))
            return {h: req for h in self.asked}
        raise ProtocolAbort(f"unknown stage {stage!r}")

    def collect(self, stage: str, replies: Mapping[str, Any]) -> None:
        if stage == "keys":
            self._collect_keys(replies)
        elif stage == "upload":
            self._collect_uploads(replies)
        elif stage == "decrypt":
            self._collect_decryptions(replies)
        else:
            raise ProtocolAbort(f"unknown stage {stage!r}")

    def _collect_keys(self, replies: Mapping[str, Any]) -> None:
        if self.new_epoch is not None:
            for h in self.asked:
                msg = replies.get(h)
                try:
                    if not isinstance(msg, CkksKeyringReply) or msg.round != self.ctx.round:
                        raise CryptoError("no keyring in the reply")
                    m = msg.keyring.manifest
                    if m.key_holder != h or m.epoch != self.new_epoch:
                        raise CryptoError("keyring from another holder or for another epoch")
                    if set(m.recipients) != set(self.federation.members):
                        raise CryptoError("keyring is not sealed to every federation member")
                    self.owner.install_keyring(msg.keyring, self.ctx.round)
                except (CryptoError, ConfigError) as exc:
                    self.rejected[h] = f"keys: {exc}"
        ring = self.owner.keyring
        if ring is None:
            raise ProtocolAbort("no CKKS key epoch: the key holder did not deliver keys")
        self.public = self.owner.public_context()
        self.acc = self.public.accumulator(self.ctx.vector_length)

    def _collect_uploads(self, replies: Mapping[str, Any]) -> None:
        if self.acc is None or self.public is None:
            raise ProtocolAbort("upload stage before the keys stage")
        for h in sorted(replies):
            try:
                self._add_upload(h, replies[h])
            except CryptoError as exc:
                self.rejected[h] = str(exc)
        self.owner.confirm(self.public.key_id, self.acc.contributors)
        if len(self.acc.contributors) < self.config.min_contributors:
            raise ProtocolAbort(f"only {len(self.acc.contributors)} valid CKKS uploads "
                                  f"(< {self.config.min_contributors})")

    def _add_upload(self, h: str, msg: Any) -> None:
        assert self.acc is not None and self.public is not None
        if not isinstance(msg, CkksUpload) or msg.header.hospital != h:
            raise CryptoError("not a CKKS upload from this hospital")
        if h not in self.ctx.participants or msg.round != self.ctx.round:
            raise CryptoError("upload for another round or from a non-participant")
        if msg.key_id != self.public.key_id:
            raise CryptoError(f"upload under key id {msg.key_id.hex()[:16]}, the round uses "
                              f"epoch {self.public.epoch} ({self.public.key_id.hex()[:16]})")
        hdr = msg.header
        if len(hdr.digests) != self.n_chunks or len(msg.chunks) != self.n_chunks:
            raise CryptoError(f"upload has {len(msg.chunks)} chunks / {len(hdr.digests)} "
                              f"digests, expected {self.n_chunks}")
        stmt = upload_statement(self.ctx.session_id, self.ctx.round, self.public.key_id, h,
                                hdr.digests)
        if not self.federation.verify(h, hdr.signature, stmt):
            raise CryptoError("upload signature does not verify against the pinned key")
        self.acc.add(h, msg.chunks, hdr.digests)
        self.headers[h] = hdr
        self.upload_bytes += sum(len(c) for c in msg.chunks)

    def _collect_decryptions(self, replies: Mapping[str, Any]) -> None:
        assert self.acc is not None and self.public is not None
        n = len(self.acc.contributors)
        policy = ReleasePolicy.for_sum(self.public.params, n, self.config.flood_bits)
        good: dict[str, np.ndarray] = {}
        for h in sorted(replies):
            msg = replies[h]
            if (h not in self.asked or not isinstance(msg, CkksDecryption) or msg.hospital != h
                    or msg.round != self.ctx.round or msg.key_id != self.public.key_id):
                self.rejected[h] = "invalid decryption reply"
                continue
            total = np.asarray(msg.total, dtype=np.float64)
            if total.shape != (self.ctx.vector_length,) or not np.all(np.isfinite(total)):
                self.rejected[h] = "decryption has the wrong shape or non-finite values"
                continue
            good[h] = total
        if not good:
            raise ProtocolAbort("no key-holding hospital returned the decrypted aggregate")
        first = next(iter(good.values()))
        tol = 2 * policy.error_bound
        for h, t in good.items():
            if float(np.max(np.abs(t - first))) > tol:
                raise ProtocolAbort(f"decryptions disagree beyond {tol:.3g} ({h!r})")
        self.decryptors = list(good)
        self.total = first
        self.policy = policy

    def result(self) -> AggregateResult:
        if self.total is None or self.policy is None or self.acc is None or self.public is None:
            raise ProtocolAbort("the CKKS round has not completed")
        return AggregateResult(self.total.copy(), tuple(self.acc.contributors), {
            "rejected": dict(self.rejected), "decryptors": list(self.decryptors),
            "epoch": self.public.epoch, "error_bound": self.policy.error_bound,
            "ciphertexts_per_upload": self.n_chunks, "upload_bytes": self.upload_bytes,
        })


# ---------------------------------------------------------------------------- protection


class CkksProtection(Protection):
    """CKKS secure aggregation (``--protection ckks``).

    One instance per party. ``identities``: the hospitals this instance acts for (one on a
    hospital node; none on the aggregator; all of them in :meth:`simulated`).
    ``keyring``: optional pre-distributed epoch (manifest, public context, sealed packages;
    safe for anyone). Without it, the first round's ``keys`` stage creates epoch 1 at a key
    holder hospital and the packages travel, sealed, with the upload requests.
    Across rounds the instance keeps: on the aggregator, the current keyring and which
    hospitals confirmed it; on a hospital, its opened secret key of the newest epoch.
    """

    name = "ckks"
    stages = STAGES

    def __init__(self, federation: Federation, keyring: CkksKeyring | None = None,
                 identities: Sequence[Identity] = (), config: CkksConfig | None = None):
        self.federation = federation
        self.config = config or CkksConfig()
        self.config.check()
        self.identities = {i.hospital: i for i in identities}
        self._secrets: dict[str, CkksSecretKey] = {}
        self.keyring: CkksKeyring | None = None
        self._public: CkksPublicContext | None = None
        self._confirmed: dict[bytes, set[str]] = {}
        self._epoch_round: int | None = None
        if keyring is not None:
            self.install_keyring(keyring)

    def __repr__(self) -> str:
        epoch = None if self.keyring is None else self.keyring.epoch
        return f"CkksProtection(epoch={epoch}, acting_for={sorted(self.identities)})"

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

    # -- aggregator-side key state ----------------------------------------------------------
    def install_keyring(self, keyring: CkksKeyring, round_: int | None = None) -> None:
        """Adopt a (verified) newer epoch, first used in ``round_``.

        CryptoError if it is not signed by its key holder, ConfigError if it is not newer."""
        if self.keyring is not None and keyring.epoch <= self.keyring.epoch:
            raise ConfigError(f"key epoch {keyring.epoch} is not newer than {self.keyring.epoch}")
        public = keyring.server_context(self.federation)
        if public.params != self.config.params:
            raise CryptoError("keyring parameters differ from the configured CKKS parameters")
        self.keyring, self._public, self._epoch_round = keyring, public, round_
        self._confirmed = {keyring.key_id: set()}

    rotate = install_keyring

    def public_context(self) -> CkksPublicContext:
        if self._public is None:
            raise ProtocolAbort("no CKKS key epoch installed")
        return self._public

    def confirmed(self, key_id: bytes) -> set[str]:
        return self._confirmed.get(key_id, set())

    def confirm(self, key_id: bytes, hospitals: Sequence[str]) -> None:
        self._confirmed.setdefault(key_id, set()).update(hospitals)

    def forget(self, hospitals: Sequence[str]) -> None:
        """Relay the current epoch's sealed package to ``hospitals`` again at their next
        upload (e.g. they reconnected: a restarted hospital process holds no key). A
        hospital that still holds the epoch ignores the repeat."""
        for seen in self._confirmed.values():
            seen.difference_update(hospitals)

    def new_epoch(self, key_holder: str | None = None) -> CkksKeyring:
        """Create and switch to the next epoch at one of this instance's hospitals."""
        holder = self.identities.get(key_holder or min(self.identities, default=""))
        if holder is None:
            raise ConfigError("new_epoch needs the key holder's identity on this instance")
        epoch = 1 if self.keyring is None else self.keyring.epoch + 1
        fid = os.urandom(32) if self.keyring is None else self.keyring.manifest.federation_id
        ring = CkksKeyring.create(holder, self.federation, epoch=epoch, federation_id=fid,
                                  params=self.config.params)
        self.install_keyring(ring)
        return ring

    # -- hospital-side key state ------------------------------------------------------------
    def held_key(self, hospital: str) -> CkksSecretKey | None:
        """This hospital's newest opened epoch key (opening it from ``keyring`` if needed)."""
        key = self._secrets.get(hospital)
        ring = self.keyring
        if ring is not None and hospital in ring.packages and hospital in self.identities and (
                key is None or key.epoch < ring.epoch):
            try:
                key = self._secrets[hospital] = ring.open(self.identities[hospital],
                                                          self.federation)
            except CryptoError as exc:
                raise ProtocolAbort(f"cannot open the CKKS key package: {exc}") from None
        return key

    def create_epoch(self, holder: Identity, epoch: int, federation_id: bytes) -> CkksKeyring:
        """Key holder: make epoch ``epoch`` (newer than any it holds) and keep its own key."""
        held = self._secrets.get(holder.hospital)
        if held is not None and epoch <= held.epoch:
            raise ProtocolAbort(f"refusing to create key epoch {epoch}: already at "
                                  f"{held.epoch}")
        ring = CkksKeyring.create(holder, self.federation, epoch=epoch,
                                  federation_id=federation_id, params=self.config.params)
        self._secrets[holder.hospital] = ring.open(holder, self.federation)
        return ring

    def accept_delivery(self, identity: Identity, d: KeyDelivery) -> None:
        """Open a relayed package if it is for a NEWER epoch than the one held."""
        held = self._secrets.get(identity.hospital)
        if held is not None and d.manifest.key_id == held.key_id:
            return
        if held is not None and d.manifest.epoch <= held.epoch:
            raise ProtocolAbort(f"refusing key epoch {d.manifest.epoch}: already at "
                                  f"{held.epoch} (rollback)")
        if d.manifest.params != self.config.params:
            raise ProtocolAbort("delivered key epoch uses other CKKS parameters")
        ring = CkksKeyring(d.manifest, d.public_context, {identity.hospital: d.package})
        try:
            self._secrets[identity.hospital] = ring.open(identity, self.federation)
        except CryptoError as exc:
            raise ProtocolAbort(f"cannot open the relayed CKKS key package: {exc}") from None

    # -- Protection interface ---------------------------------------------------------------
    def validate(self, n_hospitals: int, vector_length: int) -> None:
        if n_hospitals < self.config.min_contributors:
            raise ConfigError(f"ckks needs at least min_contributors="
                              f"{self.config.min_contributors} hospitals, got {n_hospitals}")
        if vector_length < 1:
            raise ConfigError("vector_length must be >= 1")

    def min_survivors(self, n_participants: int) -> int:
        return self.config.min_contributors

    def new_server(self, ctx: RoundContext) -> ServerProtection:
        self.validate(len(ctx.participants), ctx.vector_length)
        new_epoch = None
        if self.keyring is None:
            new_epoch = 1
        elif self._epoch_round is None:
            self._epoch_round = ctx.round
        elif (self.config.rotate_every is not None
              and ctx.round - self._epoch_round >= self.config.rotate_every):
            new_epoch = self.keyring.epoch + 1
        return CkksServer(ctx, self, new_epoch)

    def new_client(self, ctx: RoundContext, hospital: str) -> ClientProtection:
        self.validate(len(ctx.participants), ctx.vector_length)
        ident = self.identities.get(hospital)
        if ident is None:
            raise ConfigError(f"ckks protection has no identity for {hospital!r}")
        return CkksClient(ctx, self, ident)


_CONFIG_KEYS = ("min_contributors", "decryptors", "flood_bits", "rotate_every",
                "poly_modulus_degree", "coeff_mod_bit_sizes", "scale_bits")


def make_ckks_protection(*, federation: Federation | None, identity: Identity | None = None,
                         params: Mapping[str, Any] | None = None) -> CkksProtection:
    """The ``ckks`` protection for one party (``identity`` None: the aggregator).

    ``params`` may set ``min_contributors``, ``decryptors``, ``flood_bits``, ``rotate_every``
    and the CKKS ``poly_modulus_degree``, ``coeff_mod_bit_sizes``, ``scale_bits``; and
    ``keyring`` (a :class:`CkksKeyring`) to use a pre-distributed epoch.
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


__all__ = ["CkksClient", "CkksProtection", "CkksServer", "make_ckks_protection"]
