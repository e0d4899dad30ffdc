"""A hospital's side of ``ckks-threshold``: key epochs (:class:`HospitalKeyState`, long-lived)
and one round (:class:`HospitalRound`).

What a hospital checks before it answers (each refusal is a ProtocolAbort naming why):

* key stages: the epoch is newer than its own; the members are exactly the round's
  participants; the threshold is the one ITS config gives for that many members (the
  aggregator cannot lower it); every nonce and contribution is signed by its pinned member;
  every sealed share matches the digest its maker signed.
* upload: the key id is its current epoch's; it is a member; the input is in range.
* decrypt (the sum check): the listed uploads are from distinct round participants, carry
  valid signatures of their makers over these chunks for this session/round/key, no chunk
  repeats, there are at least ``max(min_contributors, t)`` of them (so with n_C < t
  colluders a sum holds at least t - n_C honest inputs, as with masking), the decryptor set
  is exactly t distinct members including itself, and it has decrypted nothing else this
  round. It then recomputes the SUM of the listed uploads in its own engine and partially
  decrypts only that, flooded (:func:`~.params.flood_sigma`, computed by itself), within
  its epoch's query budget.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedrx.canonical import canonical_json
from fedrx.errors import CryptoError, FedrxError, ProtocolAbort
from fedrx.secagg import seal as sl
from fedrx.secagg.identity import Federation, Identity
from fedrx.secagg.thckks import messages as m
from fedrx.secagg.thckks.engine import HeEngine
from fedrx.secagg.thckks.keys import EpochKeys, load_keys, save_keys
from fedrx.secagg.thckks.params import ThresholdConfig, flood_sigma

SHARE_PURPOSE = "thckks-key-share"


def federation_digest(federation: Federation) -> bytes:
    return hashlib.sha256(canonical_json(federation.to_json())).digest()


@dataclass
class _Pending:
    session_id: bytes
    epoch: int
    members: tuple[str, ...]
    threshold: int
    nonce: bytes
    seed: bytes | None = None


class HospitalKeyState:
    """One hospital's key epochs: the current :class:`EpochKeys` and a pending set-up."""

    def __init__(self, identity: Identity, federation: Federation, cfg: ThresholdConfig,
                 engine: HeEngine, key_dir: Path | None = None):
        self.identity = identity
        self.hospital = identity.hospital
        self.federation = federation
        self.cfg = cfg
        self.engine = engine
        self.key_dir = key_dir
        self.current: EpochKeys | None = None if key_dir is None else load_keys(
            key_dir, self.hospital)
        self.pending: _Pending | None = None

    def __repr__(self) -> str:
        return f"HospitalKeyState({self.hospital!r}, current={self.current!r})"

    def store(self, keys: EpochKeys) -> None:
        """Make ``keys`` the current epoch (and write it to the key folder, mode 0600)."""
        self.current = keys
        if self.key_dir is not None:
            save_keys(self.key_dir, keys)

    def _verify(self, hospital: str, signature: bytes, message: bytes, what: str) -> None:
        try:
            self.federation.verify(hospital, signature, message)
        except FedrxError:
            raise ProtocolAbort(f"{what} of {hospital!r} is not signed by its pinned key",
                                stage="keys") from None

    def crs(self, req: m.ThCrsRequest, participants: Sequence[str]) -> m.ThNonce:
        newest = 0 if self.current is None else self.current.epoch
        if req.epoch <= newest:
            raise ProtocolAbort(f"key epoch {req.epoch} is not newer than {newest}", stage="crs")
        if tuple(req.members) != tuple(participants) or self.hospital not in req.members:
            raise ProtocolAbort("key epoch members are not this round's participants",
                                stage="crs")
        if req.threshold != self.cfg.t_of(len(req.members)):
            raise ProtocolAbort(f"threshold {req.threshold} is not the configured "
                                f"{self.cfg.t_of(len(req.members))}", stage="crs")
        nonce = os.urandom(32)
        self.pending = _Pending(req.session_id, req.epoch, tuple(req.members), req.threshold,
                                nonce)
        sig = self.identity.sign(self._nonce_statement(self.pending, self.hospital, nonce))
        return m.ThNonce(self.hospital, req.epoch, nonce, sig)

    @staticmethod
    def _nonce_statement(p: _Pending, hospital: str, nonce: bytes) -> bytes:
        return m.statement("nonce", p.session_id, p.epoch, p.members, p.threshold, hospital,
                           nonce)

    @staticmethod
    def contribution_statement(session_id: bytes, seed: bytes, c: m.ThContribution) -> bytes:
        return m.statement("contribution", session_id, c.epoch, seed, c.hospital,
                           m.sha256(c.public), b"".join(c.share_digests))

    def keygen(self, req: m.ThKeygenRequest) -> m.ThKeygenReply:
        p = self.pending
        if (p is None or req.epoch != p.epoch or tuple(req.members) != p.members
                or req.threshold != p.threshold or req.session_id != p.session_id):
            raise ProtocolAbort("keygen request does not match the pending epoch", stage="keygen")
        if [n.hospital for n in req.nonces] != list(p.members):
            raise ProtocolAbort("keygen needs one nonce per member, in order", stage="keygen")
        for n in req.nonces:
            self._verify(n.hospital, n.signature, self._nonce_statement(p, n.hospital, n.nonce),
                         "nonce")
        if req.nonces[p.members.index(self.hospital)].nonce != p.nonce:
            raise ProtocolAbort("our own nonce was replaced", stage="keygen")
        p.seed = m.crs_seed(federation_digest(self.federation), p.session_id, p.epoch,
                            p.members, [n.nonce for n in req.nonces])
        secret, public = self.engine.keygen(p.seed)
        shares = self.engine.share(secret, len(p.members), p.threshold)
        del secret
        sealed = tuple(sl.seal(self.federation.get(h).seal_key(), share,
                               sl.SealLabel(SHARE_PURPOSE, h, p.epoch, p.seed))
                       for h, share in zip(p.members, shares, strict=True))
        c = m.ThContribution(self.hospital, p.epoch, public,
                             tuple(m.sha256(s) for s in sealed), b"")
        c = m.ThContribution(c.hospital, c.epoch, c.public, c.share_digests,
                             self.identity.sign(self.contribution_statement(p.session_id,
                                                                            p.seed, c)))
        return m.ThKeygenReply(c, sealed)

    def keyshares(self, req: m.ThKeysharesRequest) -> m.ThKeyAck:
        p = self.pending
        if p is None or p.seed is None or req.epoch != p.epoch or req.session_id != p.session_id:
            raise ProtocolAbort("keyshares request does not match the pending epoch",
                                stage="keyshares")
        if ([c.hospital for c in req.contributions] != list(p.members)
                or len(req.sealed_shares) != len(p.members)):
            raise ProtocolAbort("keyshares needs one contribution and share per member",
                                stage="keyshares")
        me = p.members.index(self.hospital)
        shares = []
        for c, box in zip(req.contributions, req.sealed_shares, strict=True):
            if c.epoch != p.epoch or len(c.share_digests) != len(p.members):
                raise ProtocolAbort(f"contribution of {c.hospital!r} is malformed",
                                    stage="keyshares")
            self._verify(c.hospital, c.signature,
                         self.contribution_statement(p.session_id, p.seed, c), "contribution")
            if m.sha256(box) != c.share_digests[me]:
                raise ProtocolAbort(f"share from {c.hospital!r} is not the one it signed",
                                    stage="keyshares")
            try:
                shares.append(sl.open_sealed(self.identity.seal_private(), box,
                                             sl.SealLabel(SHARE_PURPOSE, self.hospital,
                                                          p.epoch, p.seed)))
            except CryptoError:
                raise ProtocolAbort(f"share from {c.hospital!r} does not open",
                                    stage="keyshares") from None
        try:
            share = self.engine.combine(shares)
            joint = self.engine.joint_public([c.public for c in req.contributions])
        except CryptoError as exc:
            raise ProtocolAbort(f"key contributions refused: {exc}", stage="keyshares") from None
        key_id = m.key_id_of(joint, p.seed, p.epoch, p.members, p.threshold)
        self.store(EpochKeys(self.hospital, p.epoch, p.members, p.threshold, key_id, joint,
                              share))
        self.pending = None
        sig = self.identity.sign(m.statement("ack", req.session_id, p.epoch, key_id,
                                             self.hospital))
        return m.ThKeyAck(self.hospital, p.epoch, key_id, sig)


class HospitalRound:
    """One hospital's side of one round (the three key stages delegate to the key state)."""

    def __init__(self, keys: HospitalKeyState, session_id: bytes, round_: int,
                 participants: Sequence[str], vector_length: int):
        self.keys = keys
        self.session_id = session_id
        self.round = round_
        self.participants = tuple(participants)
        self.vector_length = vector_length
        self.vector: np.ndarray | None = None
        self.decrypted = False

    def set_input(self, vector: np.ndarray) -> None:
        x = np.asarray(vector, dtype=np.float64)
        if x.shape != (self.vector_length,) or not np.all(np.isfinite(x)):
            raise ProtocolAbort(f"input must be {self.vector_length} finite values")
        limit = self.keys.cfg.max_abs_sum / len(self.participants)
        if float(np.max(np.abs(x), initial=0.0)) > limit:
            raise ProtocolAbort(f"an input entry exceeds |x| <= {limit:.6g}")
        self.vector = x.copy()

    def _check_round(self, req, stage: str) -> None:
        if req.session_id != self.session_id or req.round != self.round:
            raise ProtocolAbort("request for another session or round", stage=stage)

    def handle(self, stage: str, req) -> object:
        kinds = {"crs": m.ThCrsRequest, "keygen": m.ThKeygenRequest,
                 "keyshares": m.ThKeysharesRequest, "upload": m.ThUploadRequest,
                 "decrypt": m.ThDecryptRequest}
        if stage not in kinds or not isinstance(req, kinds[stage]):
            raise ProtocolAbort(f"unexpected request for stage {stage!r}", stage=stage)
        self._check_round(req, stage)
        if stage == "crs":
            return self.keys.crs(req, self.participants)
        if stage == "keygen":
            return self.keys.keygen(req)
        if stage == "keyshares":
            return self.keys.keyshares(req)
        if stage == "upload":
            return self._upload(req)
        return self._decrypt(req)

    def _epoch(self, key_id: bytes, stage: str) -> EpochKeys:
        cur = self.keys.current
        if cur is None or key_id != cur.key_id:
            raise ProtocolAbort("request under a key epoch this hospital does not hold",
                                stage=stage)
        return cur

    def _upload(self, req: m.ThUploadRequest) -> m.ThUpload:
        cur = self._epoch(req.key_id, "upload")
        if req.vector_length != self.vector_length:
            raise ProtocolAbort("upload request for another vector length", stage="upload")
        if self.vector is None:
            raise ProtocolAbort("no input set before upload", stage="upload")
        chunks = tuple(self.keys.engine.encrypt(cur.joint_public, self.vector))
        stmt = m.upload_statement(self.session_id, self.round, cur.key_id,
                                  self.keys.hospital, chunks)
        return m.ThUpload(self.keys.hospital, self.round, cur.key_id, chunks,
                          self.keys.identity.sign(stmt))

    def expected_chunks(self) -> int:
        return -(-self.vector_length // self.keys.engine.slots)

    def _decrypt(self, req: m.ThDecryptRequest) -> m.ThPartial:
        cur = self._epoch(req.key_id, "decrypt")
        me = self.keys.hospital
        if self.decrypted:
            raise ProtocolAbort("already decrypted one sum this round", stage="decrypt")
        dec = tuple(req.decryptors)
        if (len(dec) != cur.threshold or len(set(dec)) != len(dec) or me not in dec
                or not set(dec) <= set(cur.members)):
            raise ProtocolAbort("the decryptor set is not t distinct members including us",
                                stage="decrypt")
        names = [u.hospital for u in req.uploads]
        if len(set(names)) != len(names) or not set(names) <= set(self.participants):
            raise ProtocolAbort("the listed uploads are not from distinct participants",
                                stage="decrypt")
        need = max(self.keys.cfg.min_contributors, cur.threshold)
        if len(names) < need:
            raise ProtocolAbort(f"a sum of {len(names)} uploads is below max(min_contributors, "
                                f"t) = {need}", stage="decrypt")
        n_chunks = self.expected_chunks()
        digests: set[bytes] = set()
        for u in req.uploads:
            if u.round != self.round or u.key_id != cur.key_id or len(u.chunks) != n_chunks:
                raise ProtocolAbort(f"upload of {u.hospital!r} is not of this round and key",
                                    stage="decrypt")
            stmt = m.upload_statement(self.session_id, self.round, cur.key_id, u.hospital,
                                      u.chunks)
            try:
                self.keys.federation.verify(u.hospital, u.signature, stmt)
            except FedrxError:
                raise ProtocolAbort(f"upload of {u.hospital!r} is not signed by it",
                                    stage="decrypt") from None
            for c in u.chunks:
                d = m.sha256(c)
                if d in digests:
                    raise ProtocolAbort("a ciphertext is listed twice", stage="decrypt")
                digests.add(d)
        if cur.queries_used + n_chunks > self.keys.cfg.flood_queries:
            raise ProtocolAbort("this key epoch's decryption budget is spent; re-key",
                                stage="decrypt")
        self.decrypted = True
        self.keys.store(cur.spent(n_chunks))
        idx = [cur.members.index(h) + 1 for h in dec]
        sigma = flood_sigma(self.keys.cfg, self.keys.engine.ring_dim, len(cur.members),
                            len(names))
        try:
            parts = tuple(self.keys.engine.partial(cur.share, [u.chunks[k] for u in req.uploads],
                                                   cur.index, idx, me == dec[0], sigma)
                          for k in range(n_chunks))
        except CryptoError as exc:
            raise ProtocolAbort(f"listed uploads refused: {exc}", stage="decrypt") from None
        return m.ThPartial(me, self.round, cur.key_id, tuple(names), parts)
