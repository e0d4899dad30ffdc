"""Streaming aggregation: a reply folded into the running sum the moment it arrives.

An aggregator that gathers every hospital's protected input before summing holds ``n``
inputs at once (``n`` times the model). Instead, the transport hands each reply to the
server protection's ``absorb`` as it arrives (:meth:`fedrx.protocol.protection.
ServerProtection.absorb`); a state that sums (the masked-input state of
:mod:`fedrx.secagg.mask`, the CKKS upload state, the plaintext baseline) validates the reply
exactly as its ``collect`` would, adds it to its running aggregate and returns an
:class:`Absorbed` stand-in, so the input itself can be dropped at once. The stage's
``collect`` then receives the stand-ins in place of the inputs.

Invariants: an :class:`Absorbed` is never on the wire (the wire codec has no encoding for
it, so a peer cannot send one); a state counts a stand-in only for a hospital IT absorbed
in this stage (one absorb per hospital; a second reply from the same hospital is refused),
so a stand-in cannot be forged by whoever builds the replies mapping; an invalid reply is
not absorbed: it is returned unchanged and ``collect`` rejects it as before.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Absorbed:
    """``hospital``'s reply for ``stage`` was validated and added to the running sum."""

    hospital: str
    stage: str


class AbsorbLedger:
    """Which hospitals a state absorbed (valid, added) or refused at absorb time.

    ``take(h)`` answers, at ``collect``, whether the stand-in of ``h`` stands for an input
    that was added; each hospital can be absorbed at most once."""

    def __init__(self) -> None:
        self.added: set[str] = set()
        self.seen: set[str] = set()

    def first(self, hospital: str) -> bool:
        """True the first time ``hospital`` is offered; False for any later reply of it."""
        if hospital in self.seen:
            return False
        self.seen.add(hospital)
        return True

    def counts(self, hospital: str, reply: object, stage: str) -> bool:
        """True iff ``reply`` is THIS ledger's stand-in for an input of ``hospital`` that
        was added in ``stage``."""
        return (isinstance(reply, Absorbed) and reply.hospital == hospital
                and reply.stage == stage and hospital in self.added)
