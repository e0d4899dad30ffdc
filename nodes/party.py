"""What both the in-process simulation and the hospital node derive from the ``[task]``
settings: protection parameters, the client optimizer, and a hospital's DP state.

One place, so that a hospital process and its simulated twin build the SAME party
(:func:`fedrx.protocol.registry.make_party`) from the same settings.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedrx.protocol.task import ClientOptimizer


def protection_params(cfg: Any) -> dict[str, Any]:
    """Protection-specific settings derived from the task config."""
    if cfg.protection == "mask":
        params: dict[str, Any] = {"clip_norm": cfg.clip_norm}
        if cfg.threshold is not None:
            params["threshold"] = cfg.threshold
        if cfg.rounding_seed is not None:
            params["rounding_seed"] = cfg.rounding_seed
        return params
    return {}


def client_optimizer(cfg: Any) -> ClientOptimizer:
    """Local training settings of every hospital (``[task]`` client_optimizer, lr, ...)."""
    return ClientOptimizer(cfg.client_optimizer, cfg.lr, epochs=cfg.local_epochs,
                           batch_size=cfg.batch_size)


def dp_factory(cfg: Any, run_dir: Path) -> Callable[..., Any]:
    """Per-hospital DP from the hospital's OWN policy in ``cfg``: ledger in
    ``run_dir/ledger/<h>.jsonl``, public identity in ``run_dir/identities/<h>.pub.json``.
    The factory takes (hospital, its long-term identity, its data)."""
    from fedrx.dp.federated import DPPlan, HospitalDP

    dp_cfg = cfg.dp_config()
    plan = DPPlan(rounds=cfg.rounds, local_epochs=cfg.local_epochs)

    def make(hospital: str, identity: Any, data: Any) -> HospitalDP:
        return HospitalDP(hospital, identity, dp_cfg, plan, data.train.n_patients, run_dir)

    return make
