"""Wire specs of the ``ckks-threshold`` protection's messages (:mod:`fedrx.secagg.thckks.messages`).

OpenFHE public keys, ciphertexts and partial decryptions, and the sealed Shamir shares, travel
as opaque bytes with hard size caps independent of the configured ring (the largest one the
worker accepts, N = 2^17 with a few RNS primes); hashes, key ids and nonces are 32 bytes,
signatures 64-byte Ed25519. The engine parses and checks every blob again before use.
"""

from __future__ import annotations

from fedrx.nodes.codec.fields import (
    EPOCH,
    ROUND,
    Bytes,
    CodecError,
    Id,
    Ids,
    Int,
    Limits,
    Many,
    Nested,
    OversizeError,
    message,
)
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb
from fedrx.secagg.thckks import messages as tm

MAX_TH_BLOB = 8 << 20
"""One serialised public key, ciphertext, partial or sealed share (8 MiB)."""
MAX_TH_CHUNKS = 4096
"""Ciphertexts per upload: 4096 x 4096 slots covers 16M parameters."""
MAX_MEMBERS = 1000

HASH = Bytes(exact=32)
SIGNATURE = Bytes(exact=64)
BLOB = Bytes(cap=MAX_TH_BLOB, nonempty=True)
BLOBS = Many(BLOB, cap=MAX_TH_CHUNKS)
MEMBERS = Ids(unique=True)
THRESHOLD = Int(2, MAX_MEMBERS)


def _members_check(msg, lim: Limits) -> None:
    if len(msg.members) > MAX_MEMBERS or list(msg.members) != sorted(msg.members):
        raise CodecError("members must be sorted and at most 1000")


def _keyshares_check(msg: tm.ThKeysharesRequest, lim: Limits) -> None:
    if len(msg.contributions) != len(msg.sealed_shares):
        raise CodecError("one sealed share per contribution")


message(tm.ThCrsRequest, pb.ThCrsRequest, _members_check, session_id=HASH, round=ROUND,
        epoch=EPOCH, members=MEMBERS, threshold=THRESHOLD)
message(tm.ThNonce, pb.ThNonce, hospital=Id(), epoch=EPOCH, nonce=HASH, signature=SIGNATURE)
message(tm.ThKeygenRequest, pb.ThKeygenRequest, _members_check, session_id=HASH, round=ROUND,
        epoch=EPOCH, members=MEMBERS, threshold=THRESHOLD,
        nonces=Many(tm.ThNonce, cap=MAX_MEMBERS))
message(tm.ThContribution, pb.ThContribution, hospital=Id(), epoch=EPOCH, public=BLOB,
        share_digests=Many(HASH, cap=MAX_MEMBERS), signature=SIGNATURE)
message(tm.ThKeygenReply, pb.ThKeygenReply, contribution=Nested(tm.ThContribution),
        sealed_shares=Many(BLOB, cap=MAX_MEMBERS))
message(tm.ThKeysharesRequest, pb.ThKeysharesRequest, _keyshares_check, session_id=HASH,
        round=ROUND, epoch=EPOCH, contributions=Many(tm.ThContribution, cap=MAX_MEMBERS),
        sealed_shares=Many(BLOB, cap=MAX_MEMBERS))
message(tm.ThKeyAck, pb.ThKeyAck, hospital=Id(), epoch=EPOCH, key_id=HASH,
        signature=SIGNATURE)
message(tm.ThUploadRequest, pb.ThUploadRequest, session_id=HASH, round=ROUND, key_id=HASH,
        vector_length=Int(1, "max_elements", OversizeError))
message(tm.ThUpload, pb.ThUpload, hospital=Id(), round=ROUND, key_id=HASH, chunks=BLOBS,
        signature=SIGNATURE)
message(tm.ThDecryptRequest, pb.ThDecryptRequest, session_id=HASH, round=ROUND, key_id=HASH,
        uploads=Many(tm.ThUpload, cap=MAX_MEMBERS), decryptors=Ids(unique=True))
message(tm.ThPartial, pb.ThPartial, hospital=Id(), round=ROUND, key_id=HASH,
        summed=Ids(unique=True), partials=BLOBS)

ENVELOPE_FIELDS = {
    tm.ThCrsRequest: "th_crs_request", tm.ThNonce: "th_nonce",
    tm.ThKeygenRequest: "th_keygen_request", tm.ThKeygenReply: "th_keygen_reply",
    tm.ThKeysharesRequest: "th_keyshares_request", tm.ThKeyAck: "th_key_ack",
    tm.ThUploadRequest: "th_upload_request", tm.ThUpload: "th_upload",
    tm.ThDecryptRequest: "th_decrypt_request", tm.ThPartial: "th_partial",
}
