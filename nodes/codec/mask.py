"""Wire specs of the ``mask`` protection's messages (:mod:`fedrx.secagg.mask.messages`).

Sizes fixed by the protocol: X25519 public keys 32 bytes, Ed25519 signatures 64, AEAD nonces
12; an encrypted share at most 4096 bytes, a revealed Shamir share at most 1024 (33 today).
"""

from __future__ import annotations

from fedrx.nodes.codec.fields import (
    ROUND,
    Bytes,
    CodecError,
    Id,
    Ids,
    Int,
    Limits,
    Many,
    OversizeError,
    message,
)
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb
from fedrx.secagg.mask import messages as mk

KEY = Bytes(exact=32)
SIGNATURE = Bytes(exact=64)
MAX_SHARE_CIPHERTEXT = 4096
MAX_REVEALED_SHARE = 1024


def _masked_check(m: mk.MaskedInput, lim: Limits) -> None:
    if len(m.packed) != (m.length * m.modulus_bits + 7) // 8:
        raise CodecError("packed vector length does not match length * modulus_bits")


message(mk.AdvertiseRequest, pb.AdvertiseRequest, round=ROUND)
message(mk.AdvertiseKeys, pb.AdvertiseKeys, hospital=Id(), round=ROUND, enc_public=KEY,
        mask_public=KEY, signature=SIGNATURE)
message(mk.ShareKeysRequest, pb.ShareKeysRequest, round=ROUND,
        advertised=Many(mk.AdvertiseKeys))
message(mk.EncryptedShare, pb.EncryptedShare, sender=Id(), receiver=Id(),
        nonce=Bytes(exact=12), ciphertext=Bytes(cap=MAX_SHARE_CIPHERTEXT))
message(mk.ShareKeysReply, pb.ShareKeysReply, hospital=Id(), round=ROUND,
        shares=Many(mk.EncryptedShare))
message(mk.MaskedInputRequest, pb.MaskedInputRequest, round=ROUND,
        shares=Many(mk.EncryptedShare))
message(mk.MaskedInput, pb.MaskedInput, _masked_check, hospital=Id(), round=ROUND,
        modulus_bits=Int(1, 64), length=Int(0, "max_elements", OversizeError),
        packed=Bytes())
message(mk.ConsistencyRequest, pb.ConsistencyRequest, round=ROUND, survivors=Ids())
message(mk.ConsistencySignature, pb.ConsistencySignature, hospital=Id(), round=ROUND,
        signature=SIGNATURE, outside=Ids())
message(mk.UnmaskRequest, pb.UnmaskRequest, round=ROUND, survivors=Ids(), dropped=Ids(),
        signatures=Many(mk.ConsistencySignature))
message(mk.RevealedShare, pb.RevealedShare, owner=Id(), kind=Id(),
        share=Bytes(cap=MAX_REVEALED_SHARE))
message(mk.UnmaskReply, pb.UnmaskReply, hospital=Id(), round=ROUND,
        shares=Many(mk.RevealedShare))

ENVELOPE_FIELDS = {
    mk.AdvertiseRequest: "advertise_request", mk.AdvertiseKeys: "advertise_keys",
    mk.ShareKeysRequest: "share_keys_request", mk.ShareKeysReply: "share_keys_reply",
    mk.MaskedInputRequest: "masked_input_request", mk.MaskedInput: "masked_input",
    mk.ConsistencyRequest: "consistency_request",
    mk.ConsistencySignature: "consistency_signature", mk.UnmaskRequest: "unmask_request",
    mk.UnmaskReply: "unmask_reply",
}
