"""Distributed DP pinned in the deployment's task spec (issue 16): what task.json pins, that
specs without it keep their hash, and what a hospital node or the aggregator derives."""

from __future__ import annotations

import dataclasses

import pytest

from fedrx.errors import ConfigError
from fedrx.nodes.party import protection_params
from fedrx.nodes.simulate import SimulationConfig
from fedrx.nodes.taskspec import TaskSpec, first_difference, make_spec


def _dist(**kw) -> dict:
    cfg = SimulationConfig(protection="mask", hidden=16)
    return dataclasses.asdict(cfg) | {"dp_mode": "distributed", "dp_k": 1,
                                      "dp_sample_rate": 0.3, "dp_patients": 60} | kw


def test_local_and_no_dp_specs_keep_their_hash():
    """dp_mode local (the default) writes no distributed settings: the spec, and so its
    hash pinned in federation.json, is what it was before distributed DP existed."""
    cfg = SimulationConfig(protection="mask", hidden=16)
    spec = make_spec(cfg)
    assert spec.distributed() is None
    assert not {"dp_mode", "dp_k", "dp_sample_rate", "dp_patients"} & set(spec.settings)
    assert make_spec(dataclasses.replace(cfg, dp_k=2)).sha256 == spec.sha256


def test_distributed_settings_are_pinned_and_compared():
    spec = make_spec(_dist())
    assert spec.distributed() == {"dp_mode": "distributed", "dp_k": 1, "dp_sample_rate": 0.3,
                                  "dp_patients": 60}
    again = TaskSpec.from_json(spec.to_json(), "t")
    assert again.sha256 == spec.sha256
    other = make_spec(_dist(dp_k=0))
    assert other.sha256 != spec.sha256
    assert first_difference(other, spec) == "settings dp_k: 0 here, 1 pinned"
    cfg = spec.task_config({"dp": True, "epsilon": 8.0})
    assert (cfg.dp_mode, cfg.dp_k, cfg.dp_sample_rate) == ("distributed", 1, 0.3)
    # what the hospitals and the aggregator put into the masking round context
    assert protection_params(cfg, 3) | {} == {"clip_norm": cfg.clip_norm,
                                              "min_contributors": 2, "noisy_shares": True}


def test_distributed_spec_refuses_partial_or_bad_settings():
    obj = make_spec(_dist()).to_json()
    for key, bad in (("dp_k", -1), ("dp_sample_rate", 0.0), ("dp_patients", 1),
                     ("dp_mode", "local")):
        broken = dict(obj, settings=dict(obj["settings"], **{key: bad}))
        with pytest.raises(ConfigError):
            TaskSpec.from_json(broken, "t")
    partial = dict(obj, settings={k: v for k, v in obj["settings"].items()
                                  if k != "dp_patients"})
    with pytest.raises(ConfigError, match="dp_patients"):
        TaskSpec.from_json(partial, "t")
    with pytest.raises(ConfigError, match="dp_patients"):
        make_spec(_dist(dp_patients=None))
    with pytest.raises(ConfigError, match="secure sum"):
        make_spec(_dist(protection="none"))


def test_hospital_with_dp_off_is_refused_under_a_distributed_task():
    spec = make_spec(_dist())
    with pytest.raises(ConfigError, match="distributed"):
        spec.check_policy(spec.task_config({"dp": False}))
    spec.check_policy(spec.task_config({"dp": True, "epsilon": 8.0}))
