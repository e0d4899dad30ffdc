"""The agreed round context: what every hospital derives ITSELF, from its pinned
configuration and the request it verified, before it sends anything derived from its data.

A malicious aggregator controls every message a hospital receives. What it must not
control is what a round MEANS: which federation session it belongs to, which model every
participant trains, who takes part, and how many hospitals must survive for anything to be
revealed. So none of these is taken from the aggregator as is:

* the **session id** is derived, not chosen: ``SHA-256("fedrx/session/v1" || anchor)``
  where the anchor is the SHA-256 of the pinned federation (its hospitals' public
  identities) and, in a deployment, of the pinned federation file
  (:func:`derive_session_id`). A hospital refuses any other session id.
* the **round** must be newer than any round the hospital saw (replay) and at most
  :attr:`Pinned.max_round` (the pinned number of rounds plus a slack for rounds burnt by
  aborts and restarts), which bounds how many round numbers an aggregator can try.
* the **participants** must be sorted, distinct, members of the pinned federation, include
  the hospital, and number at least :attr:`Pinned.min_round_size`; the protection adds its
  own minimum derived from the pinned federation size (e.g. ``mask``: t - n_C >= 2 with
  n_C fixed by the federation, never by the round).
* the **model hash** is recomputed by the hospital from the weights it received.
* the SecAgg+ **graph seed** is :func:`graph_seed` of (session, round, participants): the
  aggregator cannot pick it freely (the residual grinding over round numbers and
  participant subsets is bounded by ``max_round`` and ``min_round_size``;
  threat_model.md §4.3).

A protection then binds the DIGEST of all of this (:func:`context_digest`, computed
independently at every party) into what the hospitals sign to each other before any masked
or encrypted input leaves a hospital (``mask``: the AdvertiseKeys and consistency
signatures), so two hospitals given different models, participant lists or thresholds
abort before either uploads anything derived from its data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedrx.canonical import canonical_json
from fedrx.errors import ConfigError, ProtocolError
from fedrx.secagg.identity import Federation

SESSION_DOMAIN = b"fedrx/session/v1\x00"
GRAPH_DOMAIN = b"fedrx/graph-seed/v1\x00"
CONTEXT_DOMAIN = b"fedrx/round-context/v1\x00"
ROUND_SLACK = 16
"""Round numbers allowed beyond ``2 * rounds`` (rounds burnt by aborts and restarts)."""
DIGEST_BYTES = 32


def federation_anchor(federation: Federation, pinned: str = "") -> bytes:
    """SHA-256 over the pinned federation: its hospitals' public identities
    (:meth:`~fedrx.secagg.identity.Federation.to_json`) and ``pinned``, the hex SHA-256 of
    the pinned federation file in a deployment ("" in a simulation)."""
    return hashlib.sha256(SESSION_DOMAIN + canonical_json(
        {"federation": federation.to_json(), "pinned": pinned})).digest()


def derive_session_id(anchor: bytes) -> bytes:
    """The 32-byte session id of the federation pinned by ``anchor``: every party computes
    it; nobody chooses it."""
    if len(anchor) != DIGEST_BYTES:
        raise ConfigError("federation anchor must be a 32-byte digest")
    return hashlib.sha256(SESSION_DOMAIN + b"session" + anchor).digest()


def graph_seed(session_id: bytes, rnd: int, participants: Sequence[str]) -> bytes:
    """The SecAgg+ neighbour-graph seed of one round, a function of the derived session,
    the round number and the participant list only (the aggregator can vary those two
    within the pinned bounds, nothing else; the model is deliberately NOT an input: its
    hash is free for the aggregator to grind)."""
    return hashlib.sha256(GRAPH_DOMAIN + canonical_json(
        {"session": session_id.hex(), "round": int(rnd),
         "participants": list(participants)})).digest()


def context_digest(fields: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical JSON of ``fields`` (plain JSON values; bytes as hex) under a
    fixed domain: equal at two parties iff they agree on every field."""
    plain = {k: v.hex() if isinstance(v, bytes) else v for k, v in fields.items()}
    return hashlib.sha256(CONTEXT_DOMAIN + canonical_json(plain)).digest()


@dataclass(frozen=True)
class Pinned:
    """What a party pinned before any round (never taken from the aggregator).

    ``session_id``: the derived session; ``members``: the pinned federation's hospital ids
    (sorted); ``min_round_size``: fewest participants a hospital accepts (>= 2);
    ``max_round``: largest round number accepted (None: unbounded); ``max_examples``:
    largest example count one hospital may contribute (the aggregator refuses an aggregate
    over c contributors whose count exceeds ``c * max_examples``; None: no bound)."""

    session_id: bytes
    members: tuple[str, ...]
    min_round_size: int = 2
    max_round: int | None = None
    max_examples: int | None = None

    def __post_init__(self) -> None:
        if len(self.session_id) != DIGEST_BYTES:
            raise ConfigError("pinned session id must be 32 bytes")
        if self.min_round_size < 1:
            raise ConfigError("min_round_size must be >= 1")
        if self.min_round_size > len(self.members):
            raise ConfigError(f"min_round_size {self.min_round_size} exceeds the "
                              f"{len(self.members)} federation members")

    def check_round(self, hospital: str, session_id: bytes, rnd: int,
                    participants: Sequence[str]) -> None:
        """Raise ProtocolError unless a round (session, number, participants) is one this
        party may take part in (the replay check against the last round is the caller's)."""
        if session_id != self.session_id:
            raise ProtocolError(f"{hospital}: session id is not this federation's pinned "
                                "session")
        if self.max_round is not None and rnd > self.max_round:
            raise ProtocolError(f"{hospital}: round {rnd} beyond the pinned bound "
                                f"{self.max_round}")
        outside = sorted(set(participants) - set(self.members))
        if outside:
            raise ProtocolError(f"{hospital}: participant(s) outside the pinned federation: "
                                f"{', '.join(p[:32] for p in outside[:3])}")
        if len(participants) < self.min_round_size:
            raise ProtocolError(f"{hospital}: {len(participants)} participant(s), the pinned "
                                f"minimum round size is {self.min_round_size}")


def pin(federation: Federation, *, pinned: str = "", rounds: int | None = None,
        min_round_size: int | None = None, max_examples: int | None = None) -> Pinned:
    """The :class:`Pinned` configuration of ``federation``. ``pinned``: the federation
    file's hash (deployment); ``rounds``: the pinned number of rounds (round numbers up to
    ``2 * rounds + ROUND_SLACK`` are accepted; None: unbounded); ``min_round_size``: None =
    2 (or the federation size if smaller)."""
    ids = tuple(sorted(federation.members))
    size = min(2, len(ids)) if min_round_size is None else int(min_round_size)
    max_round = None if rounds is None else 2 * int(rounds) + ROUND_SLACK
    return Pinned(derive_session_id(federation_anchor(federation, pinned)), ids, size,
                  max_round, max_examples)
