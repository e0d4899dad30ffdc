"""The aggregator's record of each peer: ONE :class:`PeerStatus` per participant.

The sets of the protocol are read off the statuses: U1 (valid advertisement) =
:attr:`ServerView.advertised`, U2 (shares sent to exactly its neighbours) =
:attr:`ServerView.shared`, U3 (masked input arrived, the contributors) =
:attr:`ServerView.masked`; U1 ⊇ U2 ⊇ U3. A peer that does not answer a stage (or whose
answer is rejected) moves to the ``DEAD_*`` status of the last stage it completed and is
never asked again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum


class PeerStatus(Enum):
    INVITED = "invited"
    """A participant the aggregator has not yet heard from."""
    DEAD_BEFORE_ADVERTISE = "dead_before_advertise"
    ADVERTISED = "advertised"
    """Sent a valid, signed advertisement (in U1)."""
    DEAD_AFTER_ADVERTISE = "dead_after_advertise"
    SHARED = "shared"
    """Sent its encrypted shares to exactly its neighbours (in U2)."""
    DEAD_AFTER_SHARE_KEYS = "dead_after_share_keys"
    MASKED = "masked"
    """Its masked input was added to the sum (in U3: it contributes)."""
    DEAD_AFTER_MASKED_INPUT = "dead_after_masked_input"
    SIGNED = "signed"
    """Signed the survivor list (active mode only)."""
    DEAD_AFTER_CONSISTENCY = "dead_after_consistency"
    UNMASKED = "unmasked"
    """Answered unmask with the shares expected of it."""


_DEAD = {PeerStatus.INVITED: PeerStatus.DEAD_BEFORE_ADVERTISE,
         PeerStatus.ADVERTISED: PeerStatus.DEAD_AFTER_ADVERTISE,
         PeerStatus.SHARED: PeerStatus.DEAD_AFTER_SHARE_KEYS,
         PeerStatus.MASKED: PeerStatus.DEAD_AFTER_MASKED_INPUT,
         PeerStatus.SIGNED: PeerStatus.DEAD_AFTER_CONSISTENCY}

# Every peer passes ADVERTISED -> SHARED -> MASKED in this order (in both modes), so
# membership of U1..U3 is "has reached this status", dead or alive since.
_REACHED = {
    PeerStatus.ADVERTISED: frozenset(PeerStatus) - {PeerStatus.INVITED,
                                                    PeerStatus.DEAD_BEFORE_ADVERTISE},
    PeerStatus.SHARED: frozenset(PeerStatus) - {PeerStatus.INVITED,
                                                PeerStatus.DEAD_BEFORE_ADVERTISE,
                                                PeerStatus.ADVERTISED,
                                                PeerStatus.DEAD_AFTER_ADVERTISE},
}
_REACHED[PeerStatus.MASKED] = _REACHED[PeerStatus.SHARED] - {
    PeerStatus.SHARED, PeerStatus.DEAD_AFTER_SHARE_KEYS}


@dataclass
class ServerView:
    """Each participant's status, and ``rejected``: hospital -> why its reply was refused
    (safe to log; may name non-participants that answered)."""

    status: dict[str, PeerStatus]
    rejected: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def invite(participants: Sequence[str]) -> ServerView:
        return ServerView(dict.fromkeys(participants, PeerStatus.INVITED))

    def at(self, status: PeerStatus) -> tuple[str, ...]:
        """The peers whose status is exactly ``status``, sorted."""
        return tuple(sorted(h for h, s in self.status.items() if s is status))

    def advance(self, current: PeerStatus, passed: Iterable[str], to: PeerStatus) -> None:
        """Peers at ``current`` in ``passed`` move to ``to``; the rest at ``current`` die."""
        ok = set(passed)
        for h, s in self.status.items():
            if s is current:
                self.status[h] = to if h in ok else _DEAD[current]

    def _reached(self, status: PeerStatus) -> tuple[str, ...]:
        return tuple(sorted(h for h, s in self.status.items() if s in _REACHED[status]))

    @property
    def advertised(self) -> tuple[str, ...]:
        """U1, sorted."""
        return self._reached(PeerStatus.ADVERTISED)

    @property
    def shared(self) -> tuple[str, ...]:
        """U2, sorted."""
        return self._reached(PeerStatus.SHARED)

    @property
    def masked(self) -> tuple[str, ...]:
        """U3 (the contributors), sorted."""
        return self._reached(PeerStatus.MASKED)
