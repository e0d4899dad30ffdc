"""Round-level messages between the aggregator and a hospital (transport-independent).

Protection-specific messages (masking stages, ciphertexts) live with their protection;
these are the ones every round has. All are frozen dataclasses of plain values and numpy
arrays, which a transport can encode field by field (no pickle).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

TRAIN = "train"
EVALUATE = "evaluate"


@dataclass(frozen=True)
class TrainRequest:
    """Start of a round: the global model and what the round will do with the update.

    ``model_hash`` is :func:`fedrx.protocol.task.model_hash` of ``weights``; a hospital
    refuses a model whose hash does not match. ``protection`` names the level the round
    uses; a hospital refuses a level other than the one it was configured with.
    ``session_id`` must be the session every party derives from the pinned federation
    (:func:`fedrx.protocol.context.derive_session_id`). ``params`` is never read by a
    hospital: every round parameter comes from its pinned configuration.
    """

    session_id: bytes
    round: int
    participants: tuple[str, ...]
    weights: np.ndarray
    model_hash: str
    protection: str
    vector_length: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainAck:
    """A hospital trained (``status == "trained"``) or refused (``"refused"`` + reason).

    It carries no count and no metric: the example count travels inside the protected
    vector. ``ledger_head`` is the hash of the hospital's newest privacy-ledger entry.
    """

    round: int
    hospital: str
    status: str
    reason: str = ""
    ledger_head: str = ""


@dataclass(frozen=True)
class EvalRequest:
    round: int
    weights: np.ndarray
    model_hash: str
    part: str = "test"
    personalize: bool = False


@dataclass(frozen=True)
class EvalReport:
    """Additive metric sums on the hospital's own held-out patients (see MetricSums):
    ``sums["global"]`` for the global model, ``sums["personal"]`` for the personalised one,
    ``sums["val"]`` for the global model on the hospital's validation patients (used only to
    select a round's model, never for training)."""

    round: int
    hospital: str
    sums: dict[str, float]
