"""What the parties of a masking round sign, hash and check identically: the signed
advertisement and consistency statements, the round session id ``sid_r``, the sign of each
pairwise mask, and the well-formedness checks both sides apply to the same inputs."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from fedrx.errors import SignatureError
from fedrx.secagg import kex
from fedrx.secagg.graph import Graph
from fedrx.secagg.identity import Federation
from fedrx.secagg.mask.messages import AdvertiseKeys
from fedrx.secagg.mask.params import MaskingParams


def advertise_message(session_id: bytes, round_: int, context: bytes, hospital: str,
                      enc_pk: bytes, mask_pk: bytes) -> bytes:
    """The bytes ``hospital`` signs over its per-round public keys, bound to the agreed round
    ``context`` (:attr:`MaskingParams.context`): an advertisement made for another context
    (another model, participant list, threshold or graph seed) fails verification."""
    return kex.encode_fields("fedrx/secagg/v2/advertise", session_id, round_, context,
                             hospital, enc_pk, mask_pk)


def consistency_message(sid_r: bytes, round_: int, survivors: Sequence[str],
                        context: bytes) -> bytes:
    """The bytes a hospital signs in consistency_check: ``survivors`` (sorted) is the part of
    U3 in its own neighbourhood (itself included; all of U3 on the complete graph)."""
    return kex.encode_fields("fedrx/secagg/v2/consistency", sid_r, round_, context,
                             len(survivors), *survivors)


def round_session_id(params: MaskingParams) -> bytes:
    """sid_r: SHA-256 of the session id, round and agreed round context; salts every key the
    round derives. Every party computes it before any key is advertised. It needs no hash of
    the advertisements: each is signed over the same context, so an advertisement made for
    another round context never verifies; and a SecAgg+ hospital only ever sees its own
    neighbourhood's advertisements (issue 14 item 9)."""
    return hashlib.sha256(kex.encode_fields("fedrx/secagg/v2/round-sid", params.session_id,
                                            params.round, params.context)).digest()


def local_survivors(graph: Graph, u3: Sequence[str], h: str,
                    u3_set: frozenset[str] | None = None) -> tuple[str, ...]:
    """The part of U3 (sorted) in ``h``'s neighbourhood, ``h`` included: what ``h`` signs
    and acts on (all of U3 on the complete graph). ``u3_set``: ``frozenset(u3)`` when the
    caller asks for many hospitals (then O(k log k) per call, not O(n))."""
    if graph.complete:
        return tuple(u3)
    return tuple(sorted(graph.holders(h) & (u3_set if u3_set is not None else frozenset(u3))))


def mask_sign(owner: str, peer: str) -> int:
    """+1 if ``owner`` adds PRG(k_owner,peer), -1 if it subtracts it (owner < peer adds)."""
    return 1 if peer > owner else -1


def signed_by(federation: Federation, hospital: str, signature: bytes,
              message: bytes) -> bool:
    """Whether ``signature`` verifies; the protocol EXCLUDES a peer whose signature fails
    (the round goes on without it), so here the verdict is a decision, not an error."""
    if not isinstance(signature, bytes) or not isinstance(hospital, str):
        return False
    try:
        federation.verify(hospital, signature, message)
    except SignatureError:
        return False
    return True


def valid_ad(ad: Any, params: MaskingParams, federation: Federation) -> bool:
    """A well-formed advertisement for this round by a participant, signed by it."""
    return (isinstance(ad, AdvertiseKeys) and ad.round == params.round
            and isinstance(ad.hospital, str) and ad.hospital in params.participants
            and isinstance(ad.signature, bytes)
            and isinstance(ad.enc_public, bytes) and len(ad.enc_public) == 32
            and isinstance(ad.mask_public, bytes) and len(ad.mask_public) == 32
            and ad.enc_public != ad.mask_public
            and signed_by(federation, ad.hospital, ad.signature, advertise_message(
                params.session_id, params.round, params.context, ad.hospital, ad.enc_public,
                ad.mask_public)))


def repeated_key(ads: Sequence[AdvertiseKeys]) -> str | None:
    """The first hospital (in the given order) whose ``enc`` or ``mask`` public key was
    already advertised by another hospital (or by itself as its other key), else None.

    A hospital that advertises another's public key as its own could not use the matching
    secret, but it would make two parties' pairwise keys and share encryptions collide;
    the round is refused instead (issue 14 item 8)."""
    seen: set[bytes] = set()
    for ad in ads:
        keys = {ad.enc_public, ad.mask_public}
        if len(keys) != 2 or keys & seen:
            return ad.hospital
        seen |= keys
    return None


def distinct(names: Any) -> bool:
    """A tuple of distinct hospital ids."""
    return (isinstance(names, tuple) and all(isinstance(x, str) for x in names)
            and len(set(names)) == len(names))
