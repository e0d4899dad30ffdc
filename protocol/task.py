"""What a federation trains: the task interface the round state machine drives.

The protocol layer never touches torch: a :class:`FederatedTask` turns a flat float32
weight vector plus a hospital's private data into new weights (local training), metric
sums (evaluation) and personalised weights. :mod:`fedrx.medrx.task` implements it for
medication recommendation.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ClientOptimizer:
    """Local training at each hospital: ``name`` is ``sgd`` or ``adam``; ``epochs`` passes
    over the hospital's training visits (or ``steps`` minibatches if set) per round."""

    name: str = "adam"
    lr: float = 1e-3
    epochs: int = 1
    batch_size: int = 64
    steps: int | None = None
    weight_decay: float = 0.0


@dataclass
class LocalResult:
    """Outcome of one hospital's local training. ``weights`` are float32, flat."""

    weights: np.ndarray
    n_examples: int
    loss: float
    dp: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from SHA-256 of the parts joined by ':' (for research RNGs only:
    data order, initialisation; never for keys, masks or DP noise)."""
    d = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(d[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def model_hash(weights: np.ndarray) -> str:
    """SHA-256 (hex) of a flat float32 weight vector's little-endian bytes."""
    w = np.ascontiguousarray(weights, dtype="<f4")
    return hashlib.sha256(b"fedrx-model/1\0" + w.tobytes()).hexdigest()


class FederatedTask(ABC):
    """A model and its training, evaluation and personalisation on private data.

    ``metric_names``: the metrics :meth:`pool_metrics` returns, in display order.
    """

    metric_names: tuple[str, ...] = ()

    def check_weights(self, weights: np.ndarray) -> None:  # noqa: B027
        """Raise :class:`~fedrx.errors.ProtocolError` unless ``weights`` fits this task's
        model (a hospital checks every received model before it trains or evaluates).
        Default: any flat vector."""

    def pool_metrics(self, reports: list[dict[str, Any]]) -> dict[str, float]:
        """Pool hospitals' evaluation reports (``{"global": metric sums, ...}`` each, as
        :meth:`evaluate` returns them ``.as_dict()``) into metrics equal to evaluating all
        their patients together; ``{}`` when there is nothing to pool. Default: no metrics."""
        return {}

    @abstractmethod
    def initial_weights(self, seed: int) -> np.ndarray:
        """Deterministic initial weights (float32, flat) for ``seed``."""

    @abstractmethod
    def local_train(self, weights: np.ndarray, data: Any, opt: ClientOptimizer,
                    seed: int, dp: Any = None) -> LocalResult:
        """Train from ``weights`` on the hospital's training data."""

    @abstractmethod
    def evaluate(self, weights: np.ndarray, data: Any, part: str = "test") -> Any:
        """Additive metric sums of ``weights`` on the hospital's ``part`` data."""

    @abstractmethod
    def personalize(self, weights: np.ndarray, data: Any, opt: ClientOptimizer,
                    seed: int) -> np.ndarray:
        """Fine-tune a personal copy (e.g. the output head) on the hospital's data."""

    @abstractmethod
    def n_train_examples(self, data: Any) -> int:
        """Number of local training examples (the FedAvg weight)."""
