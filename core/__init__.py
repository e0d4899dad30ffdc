"""fedrx: privacy-hardened secure aggregation for federated medication recommendation.

Public API (TensorFlow-Federated style)::

    import fedrx
    process = fedrx.build_federated_averaging_process(task, protection="mask")
    state = process.initialize()
    state, outcome = process.next(state, hospitals)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["ClientOptimizer", "build_federated_averaging_process", "fedadam", "fedavg"]


def __getattr__(name: str) -> Any:  # lazy: importing fedrx must not import torch
    if name == "build_federated_averaging_process":
        from fedrx.protocol.api import build_federated_averaging_process

        return build_federated_averaging_process
    if name in ("fedavg", "fedadam"):
        from fedrx.protocol import optim

        return getattr(optim, name)
    if name == "ClientOptimizer":
        from fedrx.protocol.task import ClientOptimizer

        return ClientOptimizer
    raise AttributeError(f"module 'fedrx' has no attribute {name!r}")
