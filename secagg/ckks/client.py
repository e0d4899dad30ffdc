"""One hospital's side of one CKKS round, one class per state.

``ClientReady`` (holds the input vector) --upload--> ``ClientUploaded`` (holds only its own
ciphertexts, to answer a repeated request identically) --confirm--> ``ClientConfirmed`` (holds
the one contributor list it signed this round) --decrypt--> ``ClientDone`` (holds nothing: a
hospital decrypts at most one aggregate per round). ``ClientReady`` also answers ``keys`` (it
stays ready) and may confirm or decrypt without having uploaded (a hospital whose upload was
lost). Every ``handle`` returns ``(reply, next_state)``; a refusal raises
:class:`~fedrx.errors.ProtocolAbort` and leaves the state as it was, except a failed
decryption: its reply IS the ProtocolAbort, to be raised after moving to ``ClientDone``.
The epoch key lives in the long-lived
:class:`~fedrx.secagg.ckks.key_state.HospitalKeyState`, never in a round state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedrx.errors import CryptoError, ProtocolAbort
from fedrx.secagg.ckks.key_state import HospitalKeyState
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
from fedrx.secagg.ckks.secret import CkksSecretKey
from fedrx.secagg.ckks.sum_check import (
    RoundBinding,
    bounds_for,
    check_sum_range,
    check_tagged_sum,
    verify_confirmations,
    verify_headers,
)
from fedrx.secagg.ckks.sum_tag import SumTagKey, tag_count


@dataclass(frozen=True)
class ClientRound:
    """What a hospital's round states share: the round (session, number, participants,
    vector length), the digest of the round context this hospital verified itself (signed
    into its upload; a decryptor accepts only uploads naming its own) and the hospital's
    long-lived key state."""

    session_id: bytes
    round: int
    participants: tuple[str, ...]
    vector_length: int
    keys: HospitalKeyState
    context: bytes = b""

    @property
    def n_tags(self) -> int:
        return tag_count(len(self.participants))

    def binding(self, secret: CkksSecretKey) -> RoundBinding:
        """This hospital's own view of the round, for checking listed upload headers."""
        cfg = self.keys.config
        return RoundBinding(self.session_id, self.round, secret.key_id, self.context,
                            self.participants, secret.params.chunk_count(self.vector_length),
                            self.n_tags, cfg.min_contributors)

    def tag_key(self, secret: CkksSecretKey) -> SumTagKey:
        return secret.sum_tag_key(self.session_id, self.round, self.context, self.n_tags)

    def secret(self, session_id: bytes, round_: int, key_id: bytes) -> CkksSecretKey:
        """The held key, if the request is for this round and names the held epoch."""
        if session_id != self.session_id or round_ != self.round:
            raise ProtocolAbort(f"request for another session or round ({round_}), "
                                f"expected round {self.round}")
        secret = self.keys.held()
        if secret is None or key_id != secret.key_id:
            held = "no key" if secret is None else f"epoch {secret.epoch}"
            raise ProtocolAbort(f"aggregator uses key id {key_id.hex()[:16]}, this hospital "
                                f"holds {held}")
        return secret


def _unexpected(stage: str) -> ProtocolAbort:
    return ProtocolAbort(f"unexpected request for stage {stage!r}")


class ClientState:
    """A round state: ``handle(stage, request) -> (reply, next state)``."""

    def __init__(self, rnd: ClientRound):
        self.rnd = rnd

    def handle(self, stage: str, request: Any) -> tuple[Any, ClientState]:
        raise _unexpected(stage)


class ClientReady(ClientState):
    """Before the upload: holds the (range-checked) input vector."""

    def __init__(self, rnd: ClientRound, vector: np.ndarray | None):
        super().__init__(rnd)
        self.vector = vector

    def handle(self, stage: str, request: Any) -> tuple[Any, ClientState]:
        if stage == "keys" and isinstance(request, CkksKeyringRequest):
            return self._keys(request), self
        if stage == "upload" and isinstance(request, CkksUploadRequest):
            return self._upload(request)
        if stage == "confirm" and isinstance(request, CkksConfirmRequest):
            return confirm(self.rnd, request)
        if stage == "decrypt" and isinstance(request, CkksDecryptRequest):
            return decrypt(self.rnd, request)
        raise _unexpected(stage)

    def _keys(self, req: CkksKeyringRequest) -> CkksKeyringReply:
        r = self.rnd
        if req.session_id != r.session_id or req.round != r.round:
            raise ProtocolAbort("key request for another session or round")
        return CkksKeyringReply(r.round, r.keys.create_epoch(req.epoch, r.session_id))

    def _upload(self, req: CkksUploadRequest) -> tuple[CkksUpload, ClientState]:
        r = self.rnd
        secret = _check_upload_request(r, req)
        if self.vector is None:
            raise ProtocolAbort("no input set before upload")
        chunks = tuple(secret.encrypt(self.vector))
        digests = tuple(hashlib.sha256(c).digest() for c in chunks)
        try:
            tags = r.tag_key(secret).tags(chunks)
        except CryptoError as exc:
            raise ProtocolAbort(f"cannot tag the upload: {exc}") from None
        me = r.keys.hospital
        sig = r.keys.identity.sign(upload_statement(r.session_id, r.round, secret.key_id, me,
                                                    digests, r.context, tags))
        upload = CkksUpload(r.round, secret.key_id, UploadHeader(me, digests, sig, tags),
                            chunks)
        return upload, ClientUploaded(r, upload)


def _check_upload_request(r: ClientRound, req: CkksUploadRequest) -> CkksSecretKey:
    if req.delivery is not None:
        r.keys.accept(req.delivery)
    secret = r.secret(req.session_id, req.round, req.key_id)
    if req.vector_length != r.vector_length:
        raise ProtocolAbort("upload request has the wrong vector length")
    return secret


class ClientUploaded(ClientState):
    """After the upload: holds its own signed ciphertexts (a repeated request gets them)."""

    def __init__(self, rnd: ClientRound, upload: CkksUpload):
        super().__init__(rnd)
        self.upload = upload

    def handle(self, stage: str, request: Any) -> tuple[Any, ClientState]:
        if stage == "upload" and isinstance(request, CkksUploadRequest):
            secret = _check_upload_request(self.rnd, request)
            if self.upload.key_id != secret.key_id:
                raise ProtocolAbort("already uploaded under another key this round")
            return self.upload, self
        if stage == "confirm" and isinstance(request, CkksConfirmRequest):
            return confirm(self.rnd, request)
        if stage == "decrypt" and isinstance(request, CkksDecryptRequest):
            return decrypt(self.rnd, request)
        raise _unexpected(stage)


class ClientConfirmed(ClientState):
    """After signing the round's contributor list: holds that list's statement and the
    reply (a repeated request for the same list gets it again; any other list is refused)."""

    def __init__(self, rnd: ClientRound, listed: tuple[UploadHeader, ...],
                 reply: CkksConfirmation):
        super().__init__(rnd)
        self.listed = listed
        self.reply = reply

    def handle(self, stage: str, request: Any) -> tuple[Any, ClientState]:
        if stage == "confirm" and isinstance(request, CkksConfirmRequest):
            self.rnd.secret(request.session_id, request.round, request.key_id)
            if tuple(request.contributors) != self.listed:
                raise ProtocolAbort("already confirmed another contributor list this round")
            return self.reply, self
        if stage == "decrypt" and isinstance(request, CkksDecryptRequest):
            return decrypt(self.rnd, request, self.listed)
        raise _unexpected(stage)


def confirm(r: ClientRound, req: CkksConfirmRequest
            ) -> tuple[CkksConfirmation, ClientConfirmed]:
    """Sign the round's ONE contributor list, after checking every listed upload header
    against this hospital's own round (:func:`~fedrx.secagg.ckks.sum_check.verify_headers`:
    participants, distinct, signed over this hospital's context, at least
    ``min_contributors``). Refusals leave the state as it was."""
    secret = r.secret(req.session_id, req.round, req.key_id)
    verify_headers(req.contributors, r.binding(secret), r.keys.federation)
    stmt = confirm_statement(r.session_id, r.round, secret.key_id, r.context, req.contributors)
    reply = CkksConfirmation(r.keys.hospital, r.round, r.keys.identity.sign(stmt))
    return reply, ClientConfirmed(r, tuple(req.contributors), reply)


class ClientDone(ClientState):
    """After one decryption: refuses every further request of the round."""

    def handle(self, stage: str, request: Any) -> tuple[Any, ClientState]:
        if stage == "decrypt" and isinstance(request, CkksDecryptRequest):
            raise ProtocolAbort("already decrypted one aggregate this round")
        raise _unexpected(stage)


def decrypt(r: ClientRound, req: CkksDecryptRequest,
            confirmed: tuple[UploadHeader, ...] | None = None
            ) -> tuple[CkksDecryption | ProtocolAbort, ClientDone]:
    """Check the decrypt request, then release the flooded, rounded sum (once per round).

    Before anything is decrypted: this round and the held epoch; the listed upload headers
    (:func:`~fedrx.secagg.ckks.sum_check.verify_headers`: ``>= min_contributors`` distinct
    participants, each signed over this hospital's OWN round context); a majority of the
    participants confirmed exactly that list
    (:func:`~fedrx.secagg.ckks.sum_check.verify_confirmations`; and it is the list this
    hospital confirmed, if it confirmed one: ``confirmed``); the chunk count; and
    that the aggregate IS the sum of exactly those uploads
    (:func:`~fedrx.secagg.ckks.sum_check.check_tagged_sum`). After decryption, before
    release: the sum is within the configured range
    (:func:`~fedrx.secagg.ckks.sum_check.check_sum_range`). A refusal of the header list
    leaves the state as it was; once the aggregate itself was examined the hospital is done
    for the round, whatever the outcome."""
    secret = r.secret(req.session_id, req.round, req.key_id)
    cfg = r.keys.config
    binding = r.binding(secret)
    who = verify_headers(req.contributors, binding, r.keys.federation)
    if confirmed is not None and tuple(req.contributors) != confirmed:
        raise ProtocolAbort("asked to decrypt another contributor list than this hospital "
                            "confirmed")
    verify_confirmations(req.confirmations, req.contributors, binding, r.keys.federation)
    if len(req.aggregate) != binding.n_chunks or not all(
            isinstance(c, bytes) for c in req.aggregate):
        raise ProtocolAbort(f"aggregate has {len(req.aggregate)} chunks, expected "
                            f"{binding.n_chunks} byte strings")
    individual = {d for hdr in req.contributors for d in hdr.digests}
    if any(hashlib.sha256(c).digest() in individual for c in req.aggregate):
        raise ProtocolAbort("aggregate chunk is byte-identical to an individual upload")
    done = ClientDone(r)  # no second try with other inputs, even if this one fails
    key = r.tag_key(secret)
    try:
        total, policy = secret.release(
            req.aggregate, r.vector_length, len(who), cfg.flood_bits,
            check=lambda vecs: check_tagged_sum(vecs, req.contributors, key))
        check_sum_range(total, len(who), bounds_for(cfg, len(r.participants)),
                        policy.error_bound)
    except CryptoError as exc:
        return ProtocolAbort(f"aggregate does not decrypt: {exc}"), done
    except ProtocolAbort as exc:
        return exc, done
    return CkksDecryption(r.keys.hospital, r.round, secret.key_id, total,
                          policy.error_bound), done
