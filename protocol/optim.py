"""Server optimizers: turn the averaged client delta into the next global model.

Both are small pure objects with explicit state (numpy arrays), so a checkpoint is just
their arrays. ``FedAvg`` with ``lr=1`` is McMahan et al.'s FedAvg; ``FedAdam`` is Reddi et
al. (ICLR 2021) "Adaptive Federated Optimization" with bias-free moments and ``tau``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedrx.errors import ConfigError


@dataclass
class ServerOptimizer:
    name: str = "fedavg"
    lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    m: np.ndarray | None = field(default=None, repr=False)
    v: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.name not in ("fedavg", "fedadam"):
            raise ConfigError(f"unknown server optimizer {self.name!r} (fedavg or fedadam)")
        if not self.lr > 0:
            raise ConfigError(f"server learning rate must be > 0, got {self.lr}")

    def step(self, weights: np.ndarray, avg_delta: np.ndarray) -> np.ndarray:
        """New float32 weights from float32 ``weights`` and the float64 average delta."""
        if self.name == "fedavg":
            return (weights.astype(np.float64) + self.lr * avg_delta).astype(np.float32)
        if self.m is None or self.v is None:
            self.m = np.zeros_like(avg_delta)
            self.v = np.full_like(avg_delta, self.tau**2)
        self.m = self.beta1 * self.m + (1 - self.beta1) * avg_delta
        self.v = self.beta2 * self.v + (1 - self.beta2) * avg_delta**2
        upd = self.lr * self.m / (np.sqrt(self.v) + self.tau)
        return (weights.astype(np.float64) + upd).astype(np.float32)


def fedavg(lr: float = 1.0) -> ServerOptimizer:
    return ServerOptimizer("fedavg", lr=lr)


def fedadam(lr: float = 1e-2, beta1: float = 0.9, beta2: float = 0.99,
            tau: float = 1e-3) -> ServerOptimizer:
    return ServerOptimizer("fedadam", lr=lr, beta1=beta1, beta2=beta2, tau=tau)
