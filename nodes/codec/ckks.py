"""Wire specs of the ``ckks`` protection's messages (:mod:`fedrx.secagg.ckks.messages`) and
the key material they carry (:mod:`fedrx.secagg.ckks.keyring`, :mod:`~.params`).

Ciphertexts, the key-less public context and sealed packages travel as opaque bytes with
hard size caps, independent of the configured CKKS parameters (the largest ring the HE
standard table allows); hashes and key ids are 32-byte SHA-256, signatures 64-byte Ed25519.
"""

from __future__ import annotations

from fedrx.errors import ConfigError
from fedrx.nodes.codec.fields import (
    EPOCH,
    ROUND,
    Array,
    Bytes,
    CodecError,
    Id,
    Ids,
    Int,
    Ints,
    Keyed,
    Limits,
    Many,
    Nested,
    OversizeError,
    Real,
    message,
)
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb
from fedrx.secagg.ckks import keyring as kr
from fedrx.secagg.ckks import messages as cm
from fedrx.secagg.ckks.params import CkksParams

MAX_CKKS_CHUNK_BYTES = 16 * 32768 + 4096
"""One serialised ciphertext: 2 polys x N x 8 bytes + slack at the largest N (32768)."""
MAX_CKKS_PUBLIC_CONTEXT = 4096
MAX_CKKS_SEALED_BYTES = (4 << 20) + 1024
"""A sealed key package: the secret context (<= 4 MiB) + seal framing."""
MAX_CKKS_CHUNKS = 4096
"""Ciphertexts per upload/aggregate: 4096 x 4096 slots covers 16M parameters."""
MAX_CKKS_TAGS = 4096 + 4
"""Keyed linear tags per upload header (participants + a margin, secagg/ckks/sum_tag.py)."""

HASH = Bytes(exact=32)
SIGNATURE = Bytes(exact=64)
PUBLIC_CONTEXT = Bytes(cap=MAX_CKKS_PUBLIC_CONTEXT)
CIPHERTEXTS = Many(Bytes(cap=MAX_CKKS_CHUNK_BYTES, nonempty=True), cap=MAX_CKKS_CHUNKS)


def _params_check(p: CkksParams, lim: Limits) -> None:
    try:
        p.validate()
    except ConfigError as exc:
        raise CodecError(f"CKKS parameters: {exc}") from None


def _upload_check(u: cm.CkksUpload, lim: Limits) -> None:
    if len(u.chunks) != len(u.header.digests):
        raise CodecError(f"CKKS upload has {len(u.chunks)} chunks for "
                         f"{len(u.header.digests)} digests")


message(CkksParams, pb.CkksParams, _params_check, poly_modulus_degree=Int(0, 2**32 - 1),
        coeff_mod_bit_sizes=Ints(cap=8), scale_bits=Int(0, 2**32 - 1), noise_sigma=Real(),
        tail=Real())
message(kr.EpochManifest, pb.EpochManifest, federation_id=HASH, epoch=EPOCH,
        key_holder=Id(), params=Nested(CkksParams), public_context_sha256=HASH,
        key_commitment=HASH, recipients=Ids(), signature=SIGNATURE)
message(kr.SealedKeyPackage, pb.SealedKeyPackage, recipient=Id(), epoch=EPOCH, key_id=HASH,
        sealed=Bytes(cap=MAX_CKKS_SEALED_BYTES), signature=SIGNATURE)
message(kr.CkksKeyring, pb.CkksKeyring, manifest=Nested(kr.EpochManifest),
        public_context=PUBLIC_CONTEXT, packages=Keyed(kr.SealedKeyPackage, "recipient"))
message(cm.KeyDelivery, pb.KeyDelivery, manifest=Nested(kr.EpochManifest),
        public_context=PUBLIC_CONTEXT, package=Nested(kr.SealedKeyPackage))
message(cm.UploadHeader, pb.UploadHeader, hospital=Id(),
        digests=Many(HASH, cap=MAX_CKKS_CHUNKS), signature=SIGNATURE,
        tags=Ints(cap=MAX_CKKS_TAGS, hi=2**64 - 1))
message(cm.CkksKeyringRequest, pb.CkksKeyringRequest, session_id=HASH, round=ROUND,
        epoch=EPOCH)
message(cm.CkksKeyringReply, pb.CkksKeyringReply, round=ROUND,
        keyring=Nested(kr.CkksKeyring))
message(cm.CkksUploadRequest, pb.CkksUploadRequest, session_id=HASH, round=ROUND, epoch=EPOCH,
        key_id=HASH, vector_length=Int(1, "max_elements", OversizeError),
        delivery=Nested(cm.KeyDelivery, optional=True))
message(cm.CkksUpload, pb.CkksUpload, _upload_check, round=ROUND, key_id=HASH,
        header=Nested(cm.UploadHeader), chunks=CIPHERTEXTS)
message(cm.CkksConfirmRequest, pb.CkksConfirmRequest, session_id=HASH, round=ROUND,
        key_id=HASH, contributors=Many(cm.UploadHeader))
message(cm.CkksConfirmation, pb.CkksConfirmation, hospital=Id(), round=ROUND,
        signature=SIGNATURE)
message(cm.CkksDecryptRequest, pb.CkksDecryptRequest, session_id=HASH, round=ROUND,
        key_id=HASH, contributors=Many(cm.UploadHeader), aggregate=CIPHERTEXTS,
        confirmations=Many(cm.CkksConfirmation))
message(cm.CkksDecryption, pb.CkksDecryption, hospital=Id(), round=ROUND, key_id=HASH,
        total=Array("<f8"), error_bound=Real(lo=0.0))

ENVELOPE_FIELDS = {
    cm.CkksKeyringRequest: "ckks_keyring_request", cm.CkksKeyringReply: "ckks_keyring_reply",
    cm.CkksUploadRequest: "ckks_upload_request", cm.CkksUpload: "ckks_upload",
    cm.CkksDecryptRequest: "ckks_decrypt_request", cm.CkksDecryption: "ckks_decryption",
    cm.CkksConfirmRequest: "ckks_confirm_request", cm.CkksConfirmation: "ckks_confirmation",
}
