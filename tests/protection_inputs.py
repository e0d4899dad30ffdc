"""Shared test inputs for the protections' round tests (ckks, ckks-threshold)."""

from __future__ import annotations

import numpy as np

from fedrx.protocol.protection import RoundContext


def weighted_inputs(ctx: RoundContext, seed: int = 0) -> dict[str, np.ndarray]:
    """One weighted FedAvg input ``[count * delta..., count]`` per participant of ``ctx``
    (count in [50, 500), delta ~ N(0, 0.05)), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    out = {}
    for h in ctx.participants:
        count = float(rng.integers(50, 500))
        delta = rng.normal(0, 0.05, ctx.vector_length - 1)
        out[h] = np.concatenate([count * delta, [count]])
    return out
