"""Round parameters and stage names of the pairwise-mask protocol (SecAgg / SecAgg+).

Stages, in order (``consistency_check`` only in active mode): ``advertise_keys``,
``share_keys``, ``masked_input``, ``consistency_check``, ``unmask``. See
:mod:`fedrx.secagg.mask` for what each stage does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from fedrx.errors import ConfigError
from fedrx.secagg.graph import Graph

CONTEXT_BYTES = 32
"""Size of :attr:`MaskingParams.context` (a SHA-256 digest)."""

ADVERTISE = "advertise_keys"
SHARE_KEYS = "share_keys"
MASKED_INPUT = "masked_input"
CONSISTENCY = "consistency_check"
UNMASK = "unmask"
STAGES_PASSIVE = (ADVERTISE, SHARE_KEYS, MASKED_INPUT, UNMASK)
STAGES_ACTIVE = (ADVERTISE, SHARE_KEYS, MASKED_INPUT, CONSISTENCY, UNMASK)


class Signer(Protocol):
    """A hospital's long-term signing key (e.g. :class:`fedrx.secagg.identity.Identity`)."""

    hospital: str

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class MaskingParams:
    """Round parameters every party derives identically.

    ``participants``: sorted hospital ids (Shamir index = position + 1). ``length``: entries
    of the encoded vector. ``modulus_bits``: m, with R = 2**m. ``threshold``: t (per
    neighbourhood for SecAgg+). ``context``: the 32-byte digest of the agreed round context
    (session, round, model hash, participants, threshold, graph seed; computed by the
    protocol layer): every advertisement and consistency signature is made over it, and a
    hospital aborts on any relayed advertisement not signed over ITS OWN context, before it
    sends a share. ``min_contributors``: a hospital refuses to reveal any unmasking share
    when fewer hospitals than this contributed; 0 disables the check (distributed DP sets
    it to the number of noise shares it relies on). A hospital counts the survivors it can
    see: all of U3 on the complete graph, its own neighbourhood's part under SecAgg+ (so
    there a floor above the neighbourhood's survivors refuses every round: fails closed).
    """

    session_id: bytes
    round: int
    participants: tuple[str, ...]
    length: int
    modulus_bits: int
    threshold: int
    graph: Graph
    context: bytes
    active: bool = True
    min_contributors: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.context, bytes) or len(self.context) != CONTEXT_BYTES:
            raise ConfigError(f"round context must be a {CONTEXT_BYTES}-byte digest")
        if not isinstance(self.min_contributors, int) or self.min_contributors < 0:
            raise ConfigError("min_contributors must be a non-negative int")

    @property
    def stages(self) -> tuple[str, ...]:
        return STAGES_ACTIVE if self.active else STAGES_PASSIVE

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {h: i + 1 for i, h in enumerate(self.participants)}

    def index(self, hospital: str) -> int:
        """Shamir index of ``hospital`` (position in ``participants`` + 1); O(1)."""
        return self._positions[hospital]
