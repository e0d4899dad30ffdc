"""gRPC deployment with separate OS processes on loopback (``python -m fedrx.cli ...``).

Each case starts an aggregator and hospital processes (mutual TLS, ephemeral ports) on the
MIMIC-III demo with a small model (hidden 16). Every wait is bounded. Slow (process start
imports torch and prepares data in each process): deselect with ``-m 'not slow'``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fedrx.nodes.certs import init_certs
from fedrx.nodes.launcher import (
    DemoSpec,
    run_demo,
    simulation_twin,
    start_aggregator,
    start_federation,
    stop_all,
    write_setup,
    write_toml,
)
from fedrx.nodes.simulate import run_simulation
from fedrx.nodes.taskspec import make_spec

pytestmark = pytest.mark.slow
WAIT = 240


def _simulate(spec: DemoSpec, out: Path) -> np.ndarray:
    """The same federation in one process: the same exports, the same pinned task."""
    cfg = simulation_twin(write_setup(spec), spec, out)
    run_simulation(cfg)
    return np.load(out / "global_model.npy", allow_pickle=False)


def _grpc_weights(spec: DemoSpec) -> np.ndarray:
    return np.load(Path(spec.out) / "aggregator" / "global_model.npy", allow_pickle=False)


def test_none_over_processes_equals_inprocess_exactly(tmp_path, mimic_demo):
    spec = DemoSpec(out=tmp_path / "g", protection="none", rounds=2, hidden=16, timeout=WAIT)
    doc = run_demo(spec, echo=lambda m: None)
    assert [r["status"] for r in doc["rounds"]] == ["completed"] * 2
    assert np.array_equal(_grpc_weights(spec), _simulate(spec, tmp_path / "sim"))


def test_mask_over_processes_equals_inprocess_exactly(tmp_path, mimic_demo):
    """With reproducible rounding coins (``rounding_seed``, research runs only) masking over
    separate processes gives exactly the in-process model, over several rounds."""
    spec = DemoSpec(out=tmp_path / "g", protection="mask", rounds=2, hidden=16, timeout=WAIT,
                    task={"rounding_seed": 11})
    doc = run_demo(spec, echo=lambda m: None)
    assert [r["status"] for r in doc["rounds"]] == ["completed"] * 2
    assert np.array_equal(_grpc_weights(spec), _simulate(spec, tmp_path / "sim"))


def test_mask_over_processes_equals_inprocess_within_quantization(tmp_path, mimic_demo):
    """Deployment default: OS-random rounding coins, so two runs differ by quantization
    noise: per coordinate the weighted SUM differs by < n * 2**-frac_bits (n = 3 hospitals,
    frac_bits = 16), so after one round the averaged model differs by < n * 2**-16 / examples
    (+ float32 rounding). Clipping is deterministic and identical in both runs."""
    spec = DemoSpec(out=tmp_path / "g", protection="mask", rounds=1, hidden=16, timeout=WAIT)
    doc = run_demo(spec, echo=lambda m: None)
    assert doc["rounds"][0]["status"] == "completed"
    examples = doc["rounds"][0]["examples"]
    w_grpc, w_sim = _grpc_weights(spec), _simulate(spec, tmp_path / "sim")
    bound = 3 * 2.0**-16 / examples + 2 * np.spacing(np.abs(w_sim).astype(np.float32))
    diff = np.abs(w_grpc.astype(np.float64) - w_sim.astype(np.float64))
    assert np.all(diff <= bound)


def test_ckks_over_processes_equals_inprocess_within_ckks_bound(tmp_path, mimic_demo):
    """CKKS over separate processes: key epoch created at a hospital process, sealed packages
    relayed by the aggregator process, flooded decryption. One round; the two final models
    differ by at most 2 * e * (1 + |avg delta|) / (n - e) (+ float32 rounding), e being
    the release error bound per slot of the sum (see the in-thread ckks test)."""
    spec = DemoSpec(out=tmp_path / "g", protection="ckks", rounds=1, hidden=16, timeout=WAIT)
    doc = run_demo(spec, echo=lambda m: None)
    r = doc["rounds"][0]
    assert r["status"] == "completed", r["reason"]
    w_grpc, w_sim = _grpc_weights(spec), _simulate(spec, tmp_path / "sim")
    e, n = r["protection_stats"]["error_bound"], r["examples"]
    bound = 2 * e * (1 + r["update_norm"]) / (n - e) \
        + 2 * np.spacing(np.abs(w_sim).astype(np.float32))
    diff = np.abs(w_grpc.astype(np.float64) - w_sim.astype(np.float64))
    assert np.all(diff <= bound)


def test_hospital_killed_mid_round_and_rogue_client(tmp_path, mimic_demo):
    """h4 dies (abrupt exit) when masked_input of round 2 arrives: round 2 completes with the
    3 survivors (t = 3 of 4), round 3 runs with them. A node with a certificate from another
    CA never gets a session and gives up; the federation is unaffected."""
    spec = DemoSpec(out=tmp_path / "g", protection="mask", hospitals=4, rounds=3, hidden=16,
                    aggregator={"min_hospitals": 3, "stage_deadline": 30.0},
                    node_extra={"h4": {"fault": "masked_input:2"}}, timeout=WAIT)
    setup = write_setup(spec)
    other = tmp_path / "other"
    init_certs(other, ["h1"], task=make_spec(spec.task_table()))
    rogue_cfg = tmp_path / "rogue.toml"
    d = other / "hospitals" / "h1"
    write_toml(rogue_cfg, {"node": {
        "hospital": "h1", "aggregator_file": str(setup.address_file), "server_name": "",
        "ca": str(other / "ca.pem"), "cert": str(d / "tls.pem"), "key": str(d / "tls.key"),
        "identity": str(d / "identity.json"), "federation": str(other / "federation.json"),
        "give_up_seconds": 3.0, "backoff_max": 0.5},
        "data": {"path": str(setup.exports.root / "h1"),
                 "mappings": str(setup.exports.mappings or "")}})
    procs: dict[str, subprocess.Popen] = {}
    try:
        start_federation(setup, procs)
        procs["rogue"] = subprocess.Popen(
            [*_py(), "node", "run", "--config", str(rogue_cfg)], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        assert procs["aggregator"].wait(WAIT) == 0
        assert procs["h4"].wait(30) == 137
        rogue_out = procs["rogue"].communicate(timeout=60)[0].decode()
        assert procs["rogue"].returncode == 2
        assert "no session with the aggregator" in rogue_out
    finally:
        stop_all(procs)
    doc = json.loads((setup.out / "aggregator" / "results.json").read_text())
    r1, r2, r3 = doc["rounds"]
    assert r1["status"] == r2["status"] == r3["status"] == "completed"
    assert r2["contributors"] == ["h1", "h2", "h3"] and "h4" in r2["dropped"]
    assert r2["dropped"]["h4"].startswith("masked_input")
    assert r3["participants"] == ["h1", "h2", "h3"]


def test_aggregator_killed_and_restarted_resumes(tmp_path, mimic_demo):
    """The aggregator exits abruptly right after checkpointing round 1; restarted, it
    resumes at round 2 with the hospitals (which reconnect by themselves), and since it
    died between rounds the final model equals the uninterrupted in-process run."""
    spec = DemoSpec(out=tmp_path / "g", protection="none", rounds=3, hidden=16, timeout=WAIT)
    out = _kill_and_restart(spec, {"crash_after_round": 1}, rounds_seen=1)
    doc = json.loads((out / "aggregator" / "results.json").read_text())
    assert [r["round"] for r in doc["rounds"]] == [1, 2, 3]
    assert all(r["status"] == "completed" for r in doc["rounds"])
    log = (out / "logs" / "aggregator.log").read_text()
    assert "resuming from checkpoint" in log
    assert np.array_equal(_grpc_weights(spec), _simulate(spec, tmp_path / "sim"))


def _kill_and_restart(spec: DemoSpec, crash: dict, rounds_seen: int) -> Path:
    """Run the federation with the aggregator's fault injection ``crash``; once it has exited
    abruptly (code 137), restart it without the fault and let everyone finish."""
    spec.aggregator = crash
    setup = write_setup(spec)
    procs: dict[str, subprocess.Popen] = {}
    try:
        start_federation(setup, procs)
        assert procs["aggregator"].wait(WAIT) == 137
        latest = setup.out / "aggregator" / "checkpoint" / "LATEST"
        assert latest.read_text().strip() == f"round-{rounds_seen:06d}"
        spec.aggregator = {}
        write_setup(spec, setup.hospitals)
        procs["aggregator"] = start_aggregator(setup)
        assert procs["aggregator"].wait(WAIT) == 0
        for h in setup.hospitals:
            assert procs[h].wait(30) == 0
    finally:
        stop_all(procs)
    return setup.out


def test_aggregator_killed_mid_round_burns_the_round_and_goes_on(tmp_path, mimic_demo):
    """The aggregator dies MID-ROUND, right after the masked inputs of round 2 arrived (the
    hospitals hold round-2 secrets and have revealed nothing for unmasking). Restarted, it
    resumes from the round-1 checkpoint and abandons round 2: its number is burnt, so the
    retry is round 3, with fresh per-round keys and masks (hospitals refuse any round not
    newer than one they saw, and their ledgers and receipts never roll back). Every
    hospital ends with receipts for rounds 1 and 3 only."""
    spec = DemoSpec(out=tmp_path / "g", protection="mask", rounds=3, hidden=16, timeout=WAIT)
    out = _kill_and_restart(spec, {"crash_at": "masked_input:2"}, rounds_seen=1)
    doc = json.loads((out / "aggregator" / "results.json").read_text())
    assert [(r["round"], r["status"]) for r in doc["rounds"]] == [(1, "completed"),
                                                                  (3, "completed")]
    assert doc["rounds"][1]["contributors"] == ["h1", "h2", "h3"]
    log = (out / "logs" / "aggregator.log").read_text()
    assert "fault injection: exiting abruptly mid-round" in log
    assert "round in flight at the last stop is abandoned" in log
    receipts = json.loads((out / "aggregator" / "receipts.json").read_text())
    assert [r["round"] for r in receipts["rounds"]] == [1, 3]
    for h in ("h1", "h2", "h3"):
        node = json.loads((out / "nodes" / h / "state.json").read_text())
        assert node["last_round"] == 3
        assert [r["round"] for r in node["receipts"]] == [1, 3]
        states = {r["round"]: r["state"] for r in node["rounds"]}
        assert states[1] == states[3] == "done" and states[2] != "done"  # 2 never finished
    assert doc["selected"]["round"] in (1, 3)


def test_ckks_aggregator_killed_between_rounds_keeps_its_key_epoch(tmp_path, mimic_demo):
    """CKKS restart: the aggregator checkpoints the key epoch (public data and sealed packages
    only); restarted after round 1, it resumes with the SAME epoch, relays each hospital its
    sealed package again, and rounds 2 and 3 decrypt and complete."""
    spec = DemoSpec(out=tmp_path / "g", protection="ckks", rounds=3, hidden=16, timeout=WAIT)
    out = _kill_and_restart(spec, {"crash_after_round": 1}, rounds_seen=1)
    doc = json.loads((out / "aggregator" / "results.json").read_text())
    rounds = doc["rounds"]
    assert [(r["round"], r["status"]) for r in rounds] == [(1, "completed"), (2, "completed"),
                                                           (3, "completed")], \
        [r["reason"] for r in rounds]
    assert len({r["protection_stats"]["epoch"] for r in rounds}) == 1
    assert all(r["contributors"] == ["h1", "h2", "h3"] for r in rounds)
    assert "resuming from checkpoint" in (out / "logs" / "aggregator.log").read_text()


def _py() -> list[str]:
    import sys

    return [sys.executable, "-m", "fedrx.cli"]
