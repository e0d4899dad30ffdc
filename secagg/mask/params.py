"""Round parameters and stage names of the pairwise-mask protocol (SecAgg / SecAgg+).

Stages, in order (``consistency_check`` only in active mode): ``advertise_keys``,
``share_keys``, ``masked_input``, ``consistency_check``, ``unmask``. See
:mod:`fedrx.secagg.mask` for what each stage does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fedrx.secagg.graph import Graph

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
    neighbourhood for SecAgg+). ``model_hash``: bound into consistency signatures.
    """

    session_id: bytes
    round: int
    participants: tuple[str, ...]
    length: int
    modulus_bits: int
    threshold: int
    graph: Graph
    active: bool = True
    model_hash: bytes = b""

    @property
    def stages(self) -> tuple[str, ...]:
        return STAGES_ACTIVE if self.active else STAGES_PASSIVE

    def index(self, hospital: str) -> int:
        return self.participants.index(hospital) + 1
