"""The aggregator's side of one CKKS round, one class per stage state.

``ServerKeys`` (the epoch to create, if any) --collect--> ``ServerUpload`` (the public
context and ONE running sum: O(model) memory) --collect--> ``ServerConfirm`` (the one
contributor list, confirmed by a majority of participants) --collect--> ``ServerDecrypt`` (the
sum, the contributors' signed headers, the confirmations) --collect--> ``ServerDone`` (the
released total). Each state
offers ``requests(alive) -> {hospital: request}`` and ``collect(replies) -> next state``; a
failed round raises :class:`~fedrx.errors.ProtocolAbort`. The key epoch itself lives in the
long-lived :class:`~fedrx.secagg.ckks.key_state.AggregatorKeyState`; the aggregator never
holds a secret key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedrx.errors import ConfigError, CryptoError, ProtocolAbort, SignatureError
from fedrx.secagg.absorb import AbsorbLedger
from fedrx.secagg.ckks.ciphertext import CkksAccumulator, CkksPublicContext
from fedrx.secagg.ckks.key_state import AggregatorKeyState
from fedrx.secagg.ckks.messages import (
    CkksConfirmation,
    CkksConfirmRequest,
    CkksDecryption,
    CkksDecryptRequest,
    CkksKeyringReply,
    CkksKeyringRequest,
    CkksUpload,
    CkksUploadRequest,
    UploadHeader,
    confirm_statement,
    upload_statement,
)
from fedrx.secagg.ckks.release import ReleasePolicy
from fedrx.secagg.ckks.sum_check import bounds_for, check_sum_range, confirm_quorum
from fedrx.secagg.ckks.sum_tag import tag_count


@dataclass
class ServerRound:
    """What the aggregator's round states share: the round, the long-lived key state, and
    the per-hospital rejection reasons and upload bytes reported in the round's stats."""

    session_id: bytes
    round: int
    participants: tuple[str, ...]
    vector_length: int
    keys: AggregatorKeyState
    rejected: dict[str, str] = field(default_factory=dict)
    upload_bytes: int = 0
    context: bytes = b""

    @property
    def n_chunks(self) -> int:
        return self.keys.config.params.chunk_count(self.vector_length)

    @property
    def n_tags(self) -> int:
        return tag_count(len(self.participants))

    def rotated(self, alive: Sequence[str], shift: int) -> list[str]:
        """Live participants in sorted order, rotated left by ``shift``."""
        parts = sorted(h for h in self.participants if h in alive)
        if not parts:
            return []
        k = shift % len(parts)
        return parts[k:] + parts[:k]


class ServerKeys:
    """``keys``: ask one live hospital (rotating with the epoch) to create ``new_epoch``."""

    stage = "keys"

    def __init__(self, rnd: ServerRound, new_epoch: int | None):
        self.rnd = rnd
        self.new_epoch = new_epoch
        self.asked: list[str] = []

    def requests(self, alive: Sequence[str]) -> dict[str, Any]:
        r = self.rnd
        if self.new_epoch is None:
            return {}
        holders = [h for h in r.rotated(alive, self.new_epoch) if h in r.keys.federation.members]
        if not holders:
            return {}
        self.asked = holders[:1]
        return {holders[0]: CkksKeyringRequest(r.session_id, r.round, self.new_epoch)}

    def collect(self, replies: Mapping[str, Any]) -> ServerUpload:
        r = self.rnd
        if self.new_epoch is not None:
            for h in self.asked:
                msg = replies.get(h)
                try:
                    if not isinstance(msg, CkksKeyringReply) or msg.round != r.round:
                        raise CryptoError("no keyring in the reply")
                    m = msg.keyring.manifest
                    if m.key_holder != h or m.epoch != self.new_epoch:
                        raise CryptoError("keyring from another holder or for another epoch")
                    if set(m.recipients) != set(r.keys.federation.members):
                        raise CryptoError("keyring is not sealed to every federation member")
                    r.keys.install(msg.keyring, r.round)
                except (CryptoError, ConfigError) as exc:
                    r.rejected[h] = f"keys: {exc}"
        if r.keys.keyring is None:
            raise ProtocolAbort("no CKKS key epoch: the key holder did not deliver keys")
        public = r.keys.public_context()
        return ServerUpload(r, public, public.accumulator(r.vector_length))


class ServerUpload:
    """``upload``: one request per live participant (with its sealed package until it has
    uploaded under the epoch); valid uploads fold into the running sum."""

    stage = "upload"

    def __init__(self, rnd: ServerRound, public: CkksPublicContext, acc: CkksAccumulator):
        self.rnd = rnd
        self.public = public
        self.acc = acc
        self.headers: dict[str, UploadHeader] = {}
        self._absorbed = AbsorbLedger()

    def requests(self, alive: Sequence[str]) -> dict[str, Any]:
        r = self.rnd
        ring = r.keys.keyring
        assert ring is not None and ring.key_id == self.public.key_id
        return {h: CkksUploadRequest(r.session_id, r.round, ring.epoch, ring.key_id,
                                     r.vector_length, r.keys.delivery_for(h))
                for h in alive if h in r.participants}

    def absorb(self, h: str, msg: Any) -> Any:
        """One upload on arrival, checked and folded exactly as at ``collect``
        (:mod:`fedrx.secagg.absorb`): its stand-in if added, else the upload unchanged
        (its rejection is recorded now and kept at ``collect``)."""
        return self._absorbed.take(h, self.stage, msg, self._checked_add)

    def _checked_add(self, h: str, msg: Any) -> str:
        """:meth:`_add`: "" if added, else why not (recorded as the hospital's rejection)."""
        try:
            self._add(h, msg)
        except CryptoError as exc:
            self.rnd.rejected[h] = str(exc)
            return str(exc)
        return ""

    def collect(self, replies: Mapping[str, Any]) -> ServerDecrypt:
        r = self.rnd
        for h in sorted(replies):
            if h in self._absorbed.added:
                continue  # checked and added on arrival (once)
            if h not in self._absorbed.refused:  # (refused on arrival: reason recorded)
                self._checked_add(h, replies[h])
        self.acc.contributors.sort()  # arrival order is the transport's, not the round's
        r.keys.confirm(self.public.key_id, self.acc.contributors)
        n_min = r.keys.config.min_contributors
        if len(self.acc.contributors) < n_min:
            raise ProtocolAbort(f"only {len(self.acc.contributors)} valid CKKS uploads "
                                f"(< {n_min})")
        return ServerConfirm(r, self.public, self.acc, self.headers)

    def _add(self, h: str, msg: Any) -> None:
        r = self.rnd
        if not isinstance(msg, CkksUpload) or msg.header.hospital != h:
            raise CryptoError("not a CKKS upload from this hospital")
        if h not in r.participants or msg.round != r.round:
            raise CryptoError("upload for another round or from a non-participant")
        if msg.key_id != self.public.key_id:
            raise CryptoError(f"upload under key id {msg.key_id.hex()[:16]}, the round uses "
                              f"epoch {self.public.epoch} ({self.public.key_id.hex()[:16]})")
        hdr = msg.header
        if len(hdr.digests) != r.n_chunks or len(msg.chunks) != r.n_chunks:
            raise CryptoError(f"upload has {len(msg.chunks)} chunks / {len(hdr.digests)} "
                              f"digests, expected {r.n_chunks}")
        if len(hdr.tags) != r.n_tags:
            raise CryptoError(f"upload has {len(hdr.tags)} sum tags, expected {r.n_tags}")
        stmt = upload_statement(r.session_id, r.round, self.public.key_id, h, hdr.digests,
                                r.context, hdr.tags)
        try:
            r.keys.federation.verify(h, hdr.signature, stmt)
        except CryptoError:
            raise SignatureError("upload signature does not verify against the pinned key"
                                 ) from None
        self.acc.add(h, msg.chunks, hdr.digests)
        self.headers[h] = hdr
        r.upload_bytes += sum(len(c) for c in msg.chunks)


class ServerConfirm:
    """``confirm``: send the ONE contributor list (the signed headers, in sum order) to every
    live participant; keep the valid confirmations; a majority of the participants must
    confirm (:func:`~fedrx.secagg.ckks.sum_check.confirm_quorum`) or the round aborts."""

    stage = "confirm"

    def __init__(self, rnd: ServerRound, public: CkksPublicContext, acc: CkksAccumulator,
                 headers: Mapping[str, UploadHeader]):
        self.rnd = rnd
        self.public = public
        self.acc = acc
        self.headers = dict(headers)
        self.listed = tuple(self.headers[h] for h in acc.contributors)

    def requests(self, alive: Sequence[str]) -> dict[str, Any]:
        r = self.rnd
        req = CkksConfirmRequest(r.session_id, r.round, self.public.key_id, self.listed)
        return {h: req for h in alive if h in r.participants}

    def collect(self, replies: Mapping[str, Any]) -> ServerDecrypt:
        r = self.rnd
        stmt = confirm_statement(r.session_id, r.round, self.public.key_id, r.context,
                                 self.listed)
        good: list[CkksConfirmation] = []
        for h in sorted(replies):
            msg = replies[h]
            try:
                if (not isinstance(msg, CkksConfirmation) or msg.hospital != h
                        or msg.round != r.round):
                    raise CryptoError("not a confirmation from this hospital for this round")
                r.keys.federation.verify(h, msg.signature, stmt)
            except CryptoError as exc:
                r.rejected[h] = f"confirm: {exc}"
                continue
            good.append(msg)
        need = confirm_quorum(len(r.participants))
        if len(good) < need:
            raise ProtocolAbort(f"only {len(good)} of {len(r.participants)} participants "
                                f"confirmed the contributor list (< {need})")
        return ServerDecrypt(r, self.public, self.acc, self.headers, tuple(good))


class ServerDecrypt:
    """``decrypt``: send the aggregate and the signed headers (with their sum tags) to
    ``config.decryptors`` live key holders (contributors first, rotated by round);
    cross-check what comes back and bound it by the configuration (count, norm, range)."""

    stage = "decrypt"

    def __init__(self, rnd: ServerRound, public: CkksPublicContext, acc: CkksAccumulator,
                 headers: Mapping[str, UploadHeader],
                 confirmations: tuple[CkksConfirmation, ...] = ()):
        self.rnd = rnd
        self.public = public
        self.acc = acc
        self.headers = dict(headers)
        self.confirmations = confirmations
        self.asked: list[str] = []

    def requests(self, alive: Sequence[str]) -> dict[str, Any]:
        r = self.rnd
        contributors = tuple(self.acc.contributors)
        recipients = set(self.public.manifest.recipients)
        cands = [h for h in r.rotated(alive, r.round - 1) if h in recipients]
        cands.sort(key=lambda h: h not in contributors)  # stable: contributors first
        self.asked = cands[: r.keys.config.decryptors]
        req = CkksDecryptRequest(r.session_id, r.round, self.public.key_id,
                                 tuple(self.headers[h] for h in contributors),
                                 tuple(self.acc.chunks()), self.confirmations)
        return {h: req for h in self.asked}

    def collect(self, replies: Mapping[str, Any]) -> ServerDone:
        r = self.rnd
        n = len(self.acc.contributors)
        policy = ReleasePolicy.for_sum(self.public.params, n, r.keys.config.flood_bits)
        good: dict[str, np.ndarray] = {}
        for h in sorted(replies):
            msg = replies[h]
            if (h not in self.asked or not isinstance(msg, CkksDecryption) or msg.hospital != h
                    or msg.round != r.round or msg.key_id != self.public.key_id):
                r.rejected[h] = "invalid decryption reply"
                continue
            total = np.asarray(msg.total, dtype=np.float64)
            if total.shape != (r.vector_length,) or not np.all(np.isfinite(total)):
                r.rejected[h] = "decryption has the wrong shape or non-finite values"
                continue
            good[h] = total
        if not good:
            raise ProtocolAbort("no key-holding hospital returned the decrypted aggregate")
        first = next(iter(good.values()))
        check_sum_range(first, n, bounds_for(r.keys.config, len(r.participants)),
                        policy.error_bound)
        tol = 2 * policy.error_bound
        for h, t in good.items():
            if float(np.max(np.abs(t - first))) > tol:
                raise ProtocolAbort(f"decryptions disagree beyond {tol:.3g} ({h!r})")
        return ServerDone(r, first, tuple(self.acc.contributors), list(good), self.public.epoch,
                          policy)


class ServerDone:
    """The round's released total, its contributors and stats."""

    stage = None

    def __init__(self, rnd: ServerRound, total: np.ndarray, contributors: tuple[str, ...],
                 decryptors: list[str], epoch: int, policy: ReleasePolicy):
        self.rnd = rnd
        self.total = total
        self.contributors = contributors
        self.decryptors = decryptors
        self.epoch = epoch
        self.policy = policy

    def stats(self) -> dict[str, Any]:
        r = self.rnd
        return {"rejected": dict(r.rejected), "decryptors": list(self.decryptors),
                "epoch": self.epoch, "error_bound": self.policy.error_bound,
                "ciphertexts_per_upload": r.n_chunks, "upload_bytes": r.upload_bytes}


ServerState = ServerKeys | ServerUpload | ServerConfirm | ServerDecrypt | ServerDone
