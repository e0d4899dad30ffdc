"""Distributed DP in a loopback federation (``fedrx demo grpc --dp distributed``).

What the launcher adds to the pinned task and to each hospital's and the aggregator's config
when the demo runs distributed DP: the task pins the mechanism, ``k``, the common rate ``q``
and the federation's total training patients ``N`` (:data:`fedrx.nodes.taskspec.DISTRIBUTED`);
the DP-aware defaults of the task come from :data:`fedrx.medrx.task.DP_DEFAULTS`.

``N`` is what the federation agrees before training. The launcher, which writes every
hospital's export, counts it the way each hospital node will (its own export, the public
categories, the seeded patient split); a real federation would agree an announced total.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedrx.medrx.task import DP_DEFAULTS

TASK_DEFAULTS = ("server_optimizer", "server_lr")
"""Shared task settings the distributed demo takes from :data:`DP_DEFAULTS`."""


def task_settings(k: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """The task settings of distributed DP (``dp_patients`` is added once counted)."""
    out = {key: DP_DEFAULTS[key] for key in TASK_DEFAULTS}
    out |= {"dp_mode": "distributed", "dp_k": k,
            "dp_sample_rate": DP_DEFAULTS["dp_sample_rate"]}
    return out | {key: v for key, v in overrides.items() if key in out}


def privacy_settings() -> dict[str, Any]:
    """A hospital's ``[privacy]`` keys of distributed DP beyond dp and epsilon."""
    return {"max_grad_norm": DP_DEFAULTS["max_grad_norm"]}


def aggregator_settings() -> dict[str, Any]:
    """``[aggregator]`` keys of distributed DP: evaluate every few steps."""
    return {"eval_every": DP_DEFAULTS["eval_every"]}


def train_patients(export: Path, mappings: Path | None, *, seed: int, min_visits: int,
                   hospital: str) -> int:
    """Training patients of one hospital export, counted as its node will count them."""
    from fedrx.medrx.exports import load_export
    from fedrx.medrx.public_vocab import to_categories
    from fedrx.medrx.split import split_patients

    cohort = load_export(export, "auto", mappings=mappings, min_visits=min_visits,
                         hospital=hospital)
    cohort, _ = to_categories(cohort)
    return len(split_patients(cohort.patients, seed=seed).train)
