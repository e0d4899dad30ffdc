"""The aggregator's side of ``ckks-threshold``: its public key-epoch record
(:class:`AggregatorEpoch`, checkpointed) and one round (:class:`AggregatorRound`).

The aggregator holds no key share and chooses neither the seed of the common reference string
nor the threshold. It opens a new epoch (stages ``crs``, ``keygen``, ``keyshares``; EVERY
member must answer) when it has none, when the round's participants differ from the epoch's
members (membership change), after ``rotate_every`` rounds, or before the epoch's flooding
budget would run out. In ``upload`` it verifies each upload's signature and ciphertexts; in
``decrypt`` it asks t live members (rotating with the round) for partial decryptions of the
sum of the accepted uploads and fuses them. Fewer than t answers: the round aborts, nothing
is released (t-1 partials are noise).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedrx.canonical import canonical_json
from fedrx.errors import ConfigError, CryptoError, FedrxError, ProtocolAbort
from fedrx.secagg.identity import Federation
from fedrx.secagg.thckks import messages as m
from fedrx.secagg.thckks.engine import HeEngine
from fedrx.secagg.thckks.hospital import HospitalKeyState, federation_digest
from fedrx.secagg.thckks.params import ThresholdConfig, error_bound, flood_sigma


@dataclass
class AggregatorEpoch:
    """Public facts of the current epoch (no key material)."""

    epoch: int
    members: tuple[str, ...]
    threshold: int
    key_id: bytes
    first_round: int
    queries_used: int = 0
    stale: bool = False  # a member reconnected: open a new epoch (not checkpointed: restored
    # epochs are re-used; a member that lost its share refuses the upload, see reconnected)

    def to_bytes(self) -> bytes:
        return canonical_json({"format": "fedrx-thckks-epoch/1", "epoch": self.epoch,
                               "members": list(self.members), "threshold": self.threshold,
                               "key_id": self.key_id.hex(), "first_round": self.first_round,
                               "queries_used": self.queries_used})

    @staticmethod
    def from_bytes(data: bytes) -> AggregatorEpoch:
        try:
            d = json.loads(data)
            if d["format"] != "fedrx-thckks-epoch/1":
                raise ValueError
            return AggregatorEpoch(int(d["epoch"]), tuple(map(str, d["members"])),
                                   int(d["threshold"]), bytes.fromhex(d["key_id"]),
                                   int(d["first_round"]), int(d["queries_used"]))
        except (ValueError, KeyError, TypeError):
            raise ConfigError("threshold-CKKS epoch checkpoint is malformed") from None


@dataclass
class _Setup:
    epoch: int
    members: tuple[str, ...]
    threshold: int
    nonces: tuple[m.ThNonce, ...] = ()
    seed: bytes = b""
    replies: tuple[m.ThKeygenReply, ...] = ()


class AggregatorRound:
    """One round at the aggregator; ``epochs`` is the long-lived record it updates."""

    def __init__(self, owner, session_id: bytes, round_: int, participants: Sequence[str],
                 vector_length: int):
        self.owner = owner  # holds .epoch (AggregatorEpoch | None), .cfg, .federation, .engine
        self.cfg: ThresholdConfig = owner.cfg
        self.federation: Federation = owner.federation
        self.engine: HeEngine = owner.engine
        self.session_id = session_id
        self.round = round_
        self.participants = tuple(participants)
        self.vector_length = vector_length
        self.n_chunks = -(-vector_length // self.engine.slots)
        self.setup: _Setup | None = None
        self.uploads: list[m.ThUpload] = []
        self.rejected: dict[str, str] = {}
        self.total: np.ndarray | None = None
        self.decryptors: tuple[str, ...] = ()

    def _needs_epoch(self) -> bool:
        e = self.owner.epoch
        return (e is None or e.stale or e.members != self.participants
                or self.round - e.first_round >= self.cfg.rotate_every
                or e.queries_used + self.n_chunks > self.cfg.flood_queries)

    def _verify(self, h: str, sig: bytes, stmt: bytes, what: str) -> None:
        try:
            self.federation.verify(h, sig, stmt)
        except FedrxError:
            raise ProtocolAbort(f"{what} of {h!r} is not signed by it", stage="keys") from None

    # ---------------------------------------------------------------- requests

    def requests(self, stage: str, alive: Sequence[str]) -> dict[str, object]:
        if stage == "crs":
            if not self._needs_epoch():
                return {}
            prev = 0 if self.owner.epoch is None else self.owner.epoch.epoch
            t = self.cfg.t_of(len(self.participants))
            self.setup = _Setup(prev + 1, self.participants, t)
            return {h: m.ThCrsRequest(self.session_id, self.round, prev + 1, self.participants, t)
                    for h in self.participants if h in alive}
        s = self.setup
        if stage == "keygen":
            if s is None:
                return {}
            return {h: m.ThKeygenRequest(self.session_id, self.round, s.epoch, s.members,
                                         s.threshold, s.nonces) for h in s.members if h in alive}
        if stage == "keyshares":
            if s is None:
                return {}
            contribs = tuple(r.contribution for r in s.replies)
            return {h: m.ThKeysharesRequest(self.session_id, self.round, s.epoch, contribs,
                                            tuple(r.sealed_shares[j] for r in s.replies))
                    for j, h in enumerate(s.members) if h in alive}
        e = self.owner.epoch
        if stage == "upload":
            return {h: m.ThUploadRequest(self.session_id, self.round, e.key_id,
                                         self.vector_length) for h in alive if h in e.members}
        if stage == "decrypt":
            live = [h for h in e.members if h in alive]
            if len(live) < e.threshold:
                raise ProtocolAbort(f"{len(live)} live members, below the threshold "
                                    f"t={e.threshold}: nothing decrypted", stage="decrypt")
            k = self.round % len(live)
            self.decryptors = tuple(sorted((live[k:] + live[:k])[:e.threshold]))
            req = m.ThDecryptRequest(self.session_id, self.round, e.key_id,
                                     tuple(self.uploads), self.decryptors)
            return {h: req for h in self.decryptors}
        raise ProtocolAbort(f"unknown stage {stage!r}")

    # ---------------------------------------------------------------- collect

    def collect(self, stage: str, replies: Mapping[str, object]) -> None:
        s = self.setup
        if stage in ("crs", "keygen", "keyshares") and s is None:
            return
        if stage in ("crs", "keygen", "keyshares"):
            missing = [h for h in s.members if h not in replies]
            if missing:
                raise ProtocolAbort(f"key generation needs every member; missing {missing}",
                                    stage=stage)
        if stage == "crs":
            nonces = tuple(replies[h] for h in s.members)
            for h, n in zip(s.members, nonces, strict=True):
                if not isinstance(n, m.ThNonce) or n.hospital != h or n.epoch != s.epoch:
                    raise ProtocolAbort(f"bad nonce from {h!r}", stage=stage)
                self._verify(h, n.signature, m.statement(
                    "nonce", self.session_id, s.epoch, s.members, s.threshold, h, n.nonce),
                    "nonce")
            s.nonces = nonces
            s.seed = m.crs_seed(federation_digest(self.federation), self.session_id, s.epoch,
                                s.members, [n.nonce for n in nonces])
        elif stage == "keygen":
            out = []
            for h in s.members:
                r = replies[h]
                if (not isinstance(r, m.ThKeygenReply) or r.contribution.hospital != h
                        or len(r.sealed_shares) != len(s.members)
                        or len(r.contribution.share_digests) != len(s.members)
                        or [m.sha256(b) for b in r.sealed_shares]
                        != list(r.contribution.share_digests)):
                    raise ProtocolAbort(f"bad key contribution from {h!r}", stage=stage)
                self._verify(h, r.contribution.signature, HospitalKeyState.contribution_statement(
                    self.session_id, s.seed, r.contribution), "contribution")
                out.append(r)
            s.replies = tuple(out)
        elif stage == "keyshares":
            ids = set()
            for h in s.members:
                a = replies[h]
                if not isinstance(a, m.ThKeyAck) or a.hospital != h or a.epoch != s.epoch:
                    raise ProtocolAbort(f"bad key acknowledgement from {h!r}", stage=stage)
                self._verify(h, a.signature, m.statement("ack", self.session_id, s.epoch,
                                                         a.key_id, h), "acknowledgement")
                ids.add(a.key_id)
            if len(ids) != 1:
                raise ProtocolAbort("members computed different joint keys", stage=stage)
            self.owner.epoch = AggregatorEpoch(s.epoch, s.members, s.threshold, ids.pop(),
                                               self.round)
        elif stage == "upload":
            self._collect_uploads(replies)
        elif stage == "decrypt":
            self._collect_partials(replies)

    def _collect_uploads(self, replies: Mapping[str, object]) -> None:
        e = self.owner.epoch
        for h in sorted(replies):
            u = replies[h]
            try:
                if (not isinstance(u, m.ThUpload) or u.hospital != h or u.round != self.round
                        or u.key_id != e.key_id or len(u.chunks) != self.n_chunks):
                    raise ProtocolAbort("malformed upload")
                stmt = m.upload_statement(self.session_id, self.round, e.key_id, h, u.chunks)
                self.federation.verify(h, u.signature, stmt)
                self.engine.check(list(u.chunks))
            except (FedrxError, CryptoError) as exc:
                self.rejected[h] = str(exc)[:200]
                continue
            self.uploads.append(u)
        need = max(self.cfg.min_contributors, e.threshold)
        if len(self.uploads) < need:
            raise ProtocolAbort(f"{len(self.uploads)} valid uploads, below max(min_contributors, "
                                f"t) = {need}", stage="upload")

    def _collect_partials(self, replies: Mapping[str, object]) -> None:
        e = self.owner.epoch
        names = tuple(u.hospital for u in self.uploads)
        parts = []
        for h in self.decryptors:
            p = replies.get(h)
            if (not isinstance(p, m.ThPartial) or p.hospital != h or p.key_id != e.key_id
                    or p.summed != names or len(p.partials) != self.n_chunks):
                raise ProtocolAbort(f"{h!r} returned no valid partial decryption; below the "
                                    f"threshold t={e.threshold}: nothing decrypted",
                                    stage="decrypt")
            parts.append(p)
        e.queries_used += self.n_chunks
        try:
            chunks = [self.engine.fuse([p.partials[k] for p in parts], self.engine.slots)
                      for k in range(self.n_chunks)]
        except CryptoError as exc:
            raise ProtocolAbort(f"fusion failed: {exc}", stage="decrypt") from None
        self.total = np.concatenate(chunks)[:self.vector_length]

    def stats(self) -> dict:
        e = self.owner.epoch
        n = len(self.uploads)
        return {"rejected": dict(self.rejected), "decryptors": list(self.decryptors),
                "epoch": e.epoch, "threshold": e.threshold,
                "flood_sigma": flood_sigma(self.cfg, self.engine.ring_dim, len(e.members), n),
                "error_bound": error_bound(self.cfg, self.engine.ring_dim, len(e.members), n,
                                           e.threshold)}
