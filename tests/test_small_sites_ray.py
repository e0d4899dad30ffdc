"""Hospitals of 1 and 2 patients on ``--backend ray`` (issue 18: every site its own
hospital): the same round records as the in-process backend, the tiny hospitals among the
contributors. On the shared local Ray test cluster (``tests/ray_cluster.py``)."""

from __future__ import annotations

import math

import pytest
import torch

ray = pytest.importorskip("ray")

from ray_cluster import local_ray  # noqa: E402, F401  (the shared module fixture)
from test_small_sites import write_tiny_sites  # noqa: E402

from fedrx.medrx.prepare import prepare  # noqa: E402
from fedrx.nodes.ray_backend import start_ray_process  # noqa: E402
from fedrx.nodes.simulate import SimulationConfig, start_process  # noqa: E402
from fedrx.protocol.runner import RunHooks  # noqa: E402

pytestmark = [pytest.mark.usefixtures("local_ray"), pytest.mark.slow]


def _records(res):
    return [(r["round"], r["status"], r["model_hash"], r["contributors"], r["metrics"],
             r["val_metrics"]) for r in res.rounds]


def _run(cfg: SimulationConfig, start, out):
    prep = prepare(cfg)
    process, state = start(cfg, prep, out)
    try:
        return process.runner(prep.hospitals, cfg.rounds, personalize=cfg.personalize,
                              hooks=RunHooks(sorted(prep.hospitals))).run(state)
    finally:
        if hasattr(process, "close"):
            process.close()


def test_tiny_hospitals_on_ray_give_the_in_process_records(tmp_path):
    data = write_tiny_sites(tmp_path)
    common = dict(data=str(data), min_patients=1, rounds=2, hidden=16, seed=3,
                  protection="mask", rounding_seed=11, personalize=True)
    # the in-process arm on one torch thread, as each actor runs: a 1- or 2-row batch takes
    # another BLAS path on 2 threads (the weights then differ in the 10th digit)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = _run(SimulationConfig(out=str(tmp_path / "l"), backend="inprocess", **common),
                     start_process, tmp_path / "l")
    finally:
        torch.set_num_threads(threads)
    remote = _run(SimulationConfig(out=str(tmp_path / "r"), backend="ray", **common),
                  start_ray_process, tmp_path / "r")
    assert [r["status"] for r in remote.rounds] == ["completed", "completed"]
    assert {"tiny1", "tiny2"} <= set(remote.rounds[-1]["contributors"])
    assert all(math.isfinite(v) for v in remote.rounds[-1]["metrics"].values())
    assert _records(remote) == _records(local)
