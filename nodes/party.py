"""What both the in-process simulation and the hospital node derive from the ``[task]``
settings: protection parameters, the client optimizer, and a hospital's DP state.

One place, so that a hospital process and its simulated twin build the SAME party
(:func:`fedrx.protocol.registry.make_party`) from the same settings.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedrx.errors import ConfigError
from fedrx.protocol.task import ClientOptimizer

DP_MODES = ("local", "distributed")


def dp_mode(cfg: Any) -> str:
    """``"local"`` (each hospital's own DP-SGD), ``"distributed"`` (one federation step per
    round, noise shared) or ``""`` when DP is off."""
    if not getattr(cfg, "dp", False):
        return ""
    mode = getattr(cfg, "dp_mode", "local")
    if mode not in DP_MODES:
        raise ConfigError(f"dp mode must be one of {DP_MODES}, got {mode!r}")
    return mode


def check_distributed(cfg: Any, n_hospitals: int) -> None:
    """ConfigError naming the fix unless ``cfg`` can run distributed DP over
    ``n_hospitals`` (a secure sum, and ``0 <= k < n``)."""
    if cfg.protection not in ("mask", "ckks"):
        raise ConfigError(f"distributed DP needs a secure sum (--protection mask or ckks); "
                          f"with protection {cfg.protection!r} the aggregator would see every "
                          "hospital's partly-noised share")
    k = int(getattr(cfg, "dp_k", 0))
    if not 0 <= k < n_hospitals:
        raise ConfigError(f"dp_k (hospitals that may collude or drop) must be in "
                          f"[0, {n_hospitals - 1}] for {n_hospitals} hospitals, got {k}")


def protection_params(cfg: Any, n_hospitals: int | None = None) -> dict[str, Any]:
    """Protection-specific settings derived from the task config. With distributed DP
    (``n_hospitals`` given) every hospital refuses to release a sum of fewer than
    ``n - k`` contributors."""
    floor = 0
    if dp_mode(cfg) == "distributed":
        if n_hospitals is None:
            raise ConfigError("distributed DP: the federation size is needed")
        check_distributed(cfg, n_hospitals)
        floor = n_hospitals - int(getattr(cfg, "dp_k", 0))
    if cfg.protection == "mask":
        params: dict[str, Any] = {"clip_norm": cfg.clip_norm}
        if cfg.threshold is not None:
            params["threshold"] = cfg.threshold
        if cfg.rounding_seed is not None:
            params["rounding_seed"] = cfg.rounding_seed
        if floor:
            params["min_contributors"] = floor
            params["noisy_shares"] = True
        return params
    if cfg.protection == "ckks" and floor:
        from fedrx.secagg.ckks.params import CkksConfig

        return {"min_contributors": max(CkksConfig().min_contributors, floor)}
    return {}


def client_optimizer(cfg: Any) -> ClientOptimizer:
    """Local training settings of every hospital (``[task]`` client_optimizer, lr, ...)."""
    return ClientOptimizer(cfg.client_optimizer, cfg.lr, epochs=cfg.local_epochs,
                           batch_size=cfg.batch_size)


def distributed_policy(cfg: Any, federation_patients: int, n_hospitals: int) -> Any:
    """The federation's distributed-DP policy from ``cfg`` (``dp_sample_rate`` q, or
    ``dp_batch / N``; one step per round; discrete shares for ``mask``, Gaussian for ckks)."""
    from fedrx.dp.accountants.mechanism import default_delta
    from fedrx.dp.distributed.hospital import DistributedPolicy

    check_distributed(cfg, n_hospitals)
    q = getattr(cfg, "dp_sample_rate", None)
    if q is None:
        q = min(1.0, cfg.dp_batch / federation_patients)
    return DistributedPolicy(
        target_epsilon=cfg.epsilon,
        delta=cfg.delta if cfg.delta is not None else default_delta(federation_patients),
        steps=cfg.rounds, sample_rate=float(q), federation_patients=federation_patients,
        n_hospitals=n_hospitals, k=int(getattr(cfg, "dp_k", 0)),
        max_grad_norm=cfg.max_grad_norm,
        share_kind="discrete" if cfg.protection == "mask" else "gaussian",
        accountant=cfg.accountant, budget_epsilon=cfg.budget_epsilon,
        secure_noise=cfg.secure_noise, seed=None if cfg.secure_noise else cfg.seed)


def dp_factory(cfg: Any, run_dir: Path, *, federation_patients: int | None = None,
               n_hospitals: int | None = None, dim: int | None = None) -> Callable[..., Any]:
    """Per-hospital DP from the hospital's OWN policy in ``cfg``: ledger in
    ``run_dir/ledger/<h>.jsonl``, public identity in ``run_dir/identities/<h>.pub.json``.
    The factory takes (hospital, its long-term identity, its data). Distributed DP also
    needs the federation's training patients, its size and the model's parameter count."""
    if dp_mode(cfg) == "distributed":
        from fedrx.dp.distributed.hospital import DistributedDP

        if federation_patients is None or n_hospitals is None or dim is None:
            raise ConfigError("distributed DP needs the federation's patients, size and the "
                              "model size")
        policy = distributed_policy(cfg, federation_patients, n_hospitals)

        def make_distributed(hospital: str, identity: Any, data: Any) -> DistributedDP:
            return DistributedDP(hospital, identity, policy, data.train.n_patients, dim,
                                 run_dir)

        return make_distributed
    from fedrx.dp.federated import DPPlan, HospitalDP

    dp_cfg = cfg.dp_config()
    plan = DPPlan(rounds=cfg.rounds, local_epochs=cfg.local_epochs)

    def make(hospital: str, identity: Any, data: Any) -> HospitalDP:
        return HospitalDP(hospital, identity, dp_cfg, plan, data.train.n_patients, run_dir)

    return make
