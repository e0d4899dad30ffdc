"""DP inside the federation: ledgers, budget refusal before training, audit, every protection."""

from __future__ import annotations

import json

import pytest
from test_cli import run

from fedrx.dp.audit import audit
from fedrx.dp.ledger import read_entries
from fedrx.errors import ConfigError
from fedrx.nodes.simulate import SimulationConfig, run_simulation


def _cfg(tmp_path, **kw):
    base = dict(hospitals=3, rounds=2, hidden=16, local_epochs=1, personalize=False, dp=True,
                accountant="rdp",
                epsilon=8.0, out=str(tmp_path / "run"))
    return SimulationConfig(**{**base, **kw})


@pytest.mark.parametrize("protection", ["none", "mask", "ckks"])
def test_dp_works_with_every_protection(mimic_demo, tmp_path, protection):
    doc = run_simulation(_cfg(tmp_path, protection=protection, rounds=1))
    assert doc["rounds"][0]["status"] == "completed"
    assert doc["rounds"][0]["contributors"] == ["h1", "h2", "h3"]
    for h, d in doc["dp"].items():
        entries = read_entries(tmp_path / "run" / "ledger" / f"{h}.jsonl")
        assert [e["round"] for e in entries] == [1]
        assert entries[0]["privacy_unit"] == "patient"
        # the hash of the model RECEIVED, recorded before training
        assert entries[0]["model_hash"] == doc["initial_model_hash"]
        assert 0 < d["epsilon"] <= 8.0
    assert audit(tmp_path / "run") == []


def test_ledger_records_received_model_and_heads_reach_aggregator(mimic_demo, tmp_path):
    doc = run_simulation(_cfg(tmp_path))
    r1, r2 = doc["rounds"]
    for h in ("h1", "h2", "h3"):
        entries = read_entries(tmp_path / "run" / "ledger" / f"{h}.jsonl")
        # round 2 trains on the model round 1 produced
        assert entries[1]["model_hash"] == r1["model_hash"]
        assert r2["ledger_heads"][h] == entries[1]["entry_hash"]
        assert entries[1]["prev_hash"] == entries[0]["entry_hash"]
        assert entries[1]["epsilon"] > entries[0]["epsilon"]
    # planned schedule is calibrated to the target: last round lands just under it
    assert all(7.5 < d["epsilon"] <= 8.0 for d in doc["dp"].values())


def test_budget_exhaustion_refuses_before_training_and_stops(mimic_demo, tmp_path):
    doc = run_simulation(_cfg(tmp_path, rounds=3, budget_epsilon=6.0))
    statuses = [r["status"] for r in doc["rounds"]]
    assert doc["stopped"].startswith("stopped after round")
    last = doc["rounds"][-1]
    assert set(last["refused"]) == {"h1", "h2", "h3"}
    assert "privacy budget" in last["refused"]["h1"]
    assert statuses[-1] == "aborted"  # nobody trained: the model is not updated
    for h in ("h1", "h2", "h3"):
        entries = read_entries(tmp_path / "run" / "ledger" / f"{h}.jsonl")
        assert entries[-1]["status"] == "refused" and entries[-1]["steps"] == 0
        assert entries[-1]["epsilon"] == entries[-2]["epsilon"] <= 6.0
    assert audit(tmp_path / "run") == []


def test_ledgers_are_never_overwritten(mimic_demo, tmp_path):
    run_simulation(_cfg(tmp_path, rounds=1))
    with pytest.raises(ConfigError, match="never overwritten"):
        run_simulation(_cfg(tmp_path, rounds=1))


def test_cli_dp_run_audit_report_and_tamper(mimic_demo, tmp_path):
    out = tmp_path / "cli"
    proc = run("simulate", "--hospitals", "2", "--rounds", "1", "--dp", "on", "--epsilon", "4",
               "--out", str(out), "--local-epochs", "1")
    assert proc.returncode == 0, proc.stderr
    assert "epsilon spent" in proc.stdout
    ok = run("audit", str(out))
    assert ok.returncode == 0 and "audit OK" in ok.stdout
    rep = run("budget", "report", str(out), "--out", str(tmp_path / "rep"))
    assert rep.returncode == 0 and (tmp_path / "rep" / "budget.html").is_file()
    led = out / "ledger" / "h1.jsonl"
    entry = json.loads(led.read_text().splitlines()[0])
    entry["epsilon"] = entry["epsilon"] / 2
    led.write_text(json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n")
    bad = run("audit", str(out))
    assert bad.returncode != 0 and "FINDING" in bad.stdout


def test_server_params_cannot_weaken_local_dp_policy(mimic_demo, tmp_path):
    """Whatever the aggregator puts in the round parameters, the hospital uses its own σ, C."""
    from fedrx.protocol.aggregator import RoundMachine
    from fedrx.protocol.api import build_federated_averaging_process
    from fedrx.protocol.transport import InProcessTransport

    cfg = _cfg(tmp_path, rounds=1)
    from fedrx.medrx.prepare import prepare
    from fedrx.nodes.party import dp_factory

    prep = prepare(cfg)
    p = build_federated_averaging_process(prep.task, protection="none", evaluate=False,
                                          dp=dp_factory(cfg, tmp_path / "run"))
    state = p.initialize()
    p.enroll(prep.hospitals)
    machine = RoundMachine(p._server_protection, InProcessTransport(p.parties))
    hostile = {"noise_multiplier": 0.0, "max_grad_norm": 1e9, "epsilon": 1e9,
               "sample_rate": 1.0, "dp": False}
    _, out = machine.run(state, sorted(prep.hospitals), evaluate=False, params=hostile)
    assert out.status == "completed"
    for h, party in p.parties.items():
        entry = read_entries(tmp_path / "run" / "ledger" / f"{h}.jsonl")[-1]
        assert entry["noise_multiplier"] == party.dp.noise_multiplier > 0.5
        assert entry["max_grad_norm"] == 1.0 and entry["sample_rate"] < 1.0
