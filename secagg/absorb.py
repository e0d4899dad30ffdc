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
it, so a peer cannot send one); a state counts a hospital as absorbed only if IT added that
hospital's input in this stage (a stand-in it did not issue is an invalid reply, rejected
at ``collect``); each hospital's input is added at most once (a repeated reply is ignored,
and the hospital stays counted once, since its first input is in the sum); an invalid reply
is not absorbed: it is returned unchanged and ``collect`` rejects it as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Absorbed:
    """``hospital``'s reply for ``stage`` was validated and added to the running sum."""

    hospital: str
    stage: str


class AbsorbLedger:
    """Which hospitals a state has added on arrival (``added``) and refused on arrival
    (``refused``: hospital -> reason); a state consults it at ``collect``."""

    def __init__(self) -> None:
        self.added: set[str] = set()
        self.refused: dict[str, str] = {}

    def take(self, hospital: str, stage: str, reply: Any,
             add: Callable[[str, Any], str]) -> Any:
        """What a transport keeps of ``reply``: the stand-in when ``add(hospital, reply)``
        (the state's own check-and-add, returning "" or why it refused) added it now or
        earlier (a repeat is not added twice), else ``reply`` unchanged (refused, the
        reason kept for ``collect``; a second reply after a refusal is not tried again)."""
        if hospital in self.added:
            return Absorbed(hospital, stage)
        if hospital in self.refused:
            return reply
        why = add(hospital, reply)
        if why:
            self.refused[hospital] = why
            return reply
        self.added.add(hospital)
        return Absorbed(hospital, stage)
