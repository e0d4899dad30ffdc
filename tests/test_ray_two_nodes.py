"""``--ray-address`` with a cluster of TWO Ray nodes (a head and a worker node, 1 CPU each,
both on this machine: the multi-node layout a consortium's researcher would join): the
command line joins it, its two actors land on the two nodes, a DP run writes every ledger
into the shared run folder and ``fedrx audit`` verifies them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("ray")

from ray_cluster import _stop_cluster  # noqa: E402

pytestmark = pytest.mark.slow
FEDRX = [sys.executable, "-m", "fedrx.cli"]


def _ray(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("ray")), *args],
                          capture_output=True, text=True, timeout=180, env=env, check=False)


@pytest.fixture
def two_nodes():
    tmp = tempfile.mkdtemp(prefix="fedrx-ray2-")
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    store = f"--object-store-memory={80 * 1024 * 1024}"
    head = _ray("start", "--head", "--num-cpus=1", "--include-dashboard=false", store,
                f"--temp-dir={tmp}", "--port=0", "--disable-usage-stats", env=env)
    found = re.search(r"--address='([^']+)'", head.stdout + head.stderr)
    try:
        assert head.returncode == 0 and found, (head.stdout + head.stderr)[-2000:]
        address = found.group(1)
        worker = _ray("start", f"--address={address}", "--num-cpus=1", store,
                      "--disable-usage-stats", env=env)
        assert worker.returncode == 0, (worker.stdout + worker.stderr)[-2000:]
        yield address, env
    finally:
        _stop_cluster(tmp)
        if found:
            _stop_cluster(found.group(1))  # the worker node's processes name the head


def test_a_dp_federation_on_a_two_node_cluster(two_nodes, tmp_path):
    address, env = two_nodes
    env = dict(env, FEDRX_BUDGET_STORE="off", COLUMNS="120")
    data = tmp_path / "data"
    made = subprocess.run([*FEDRX, "data", "synth", "--out", str(data), "--hospitals", "4",
                           "--patients", "240", "--catalogue", "builtin"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert made.returncode == 0, made.stderr[-2000:]
    out = tmp_path / "run"
    run = subprocess.run([*FEDRX, "simulate", "--data", str(data), "--rounds", "2",
                          "--protection", "mask", "--dp", "on", "--min-patients", "3",
                          "--backend", "ray", "--ray-address", address, "--out", str(out)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert doc["backend"]["name"] == "ray" and doc["backend"]["address"] == address
    assert doc["backend"]["actors"] == 2 and doc["backend"]["nodes"] == 2
    assert [r["status"] for r in doc["rounds"]] == ["completed", "completed"]
    assert all(len(r["contributors"]) == 4 for r in doc["rounds"])
    assert sorted(p.name for p in (out / "ledger").iterdir()) == \
        [f"hosp0{i}.jsonl" for i in range(1, 5)]
    audit = subprocess.run([*FEDRX, "audit", str(out)], capture_output=True, text=True,
                           timeout=300, env=env)
    assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr[-2000:]
    assert "audit OK" in audit.stdout
