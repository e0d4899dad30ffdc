"""What the parties of a masking round sign, hash and check identically: the signed
advertisement and consistency statements, the round session id ``sid_r``, the sign of each
pairwise mask, and the well-formedness checks both sides apply to the same inputs."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from fedrx.errors import SignatureError
from fedrx.secagg import kex
from fedrx.secagg.identity import Federation
from fedrx.secagg.mask.messages import AdvertiseKeys
from fedrx.secagg.mask.params import MaskingParams


def advertise_message(session_id: bytes, round_: int, hospital: str, enc_pk: bytes,
                      mask_pk: bytes) -> bytes:
    """The bytes ``hospital`` signs over its per-round public keys."""
    return kex.encode_fields("fedrx/secagg/v1/advertise", session_id, round_, hospital,
                             enc_pk, mask_pk)


def consistency_message(sid_r: bytes, round_: int, survivors: Sequence[str],
                        model_hash: bytes) -> bytes:
    """The bytes a hospital signs in consistency_check (``survivors`` in sorted order)."""
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


def signed_by(federation: Federation, hospital: str, signature: bytes,
              message: bytes) -> bool:
    """Whether ``signature`` verifies; the protocol EXCLUDES a peer whose signature fails
    (the round goes on without it), so here the verdict is a decision, not an error."""
    try:
        federation.verify(hospital, signature, message)
    except SignatureError:
        return False
    return True


def valid_ad(ad: Any, params: MaskingParams, federation: Federation) -> bool:
    """A well-formed advertisement for this round by a participant, signed by it."""
    return (isinstance(ad, AdvertiseKeys) and ad.round == params.round
            and ad.hospital in params.participants
            and isinstance(ad.enc_public, bytes) and len(ad.enc_public) == 32
            and isinstance(ad.mask_public, bytes) and len(ad.mask_public) == 32
            and ad.enc_public != ad.mask_public
            and signed_by(federation, ad.hospital, ad.signature, advertise_message(
                params.session_id, params.round, ad.hospital, ad.enc_public, ad.mask_public)))


def distinct(names: Any) -> bool:
    """A tuple of distinct hospital ids."""
    return (isinstance(names, tuple) and all(isinstance(x, str) for x in names)
            and len(set(names)) == len(names))
