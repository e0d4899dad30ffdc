"""Distributed DP end to end: ``fedrx simulate --dp distributed`` over mask and ckks, the
ledger's distributed record and its audit, too few survivors, and the refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedrx.dp.accountants.mechanism import Mechanism
from fedrx.dp.audit import audit
from fedrx.dp.audit_entries import check_entries
from fedrx.dp.distributed.audit import entry_findings
from fedrx.dp.ledger import PrivacyLedger, read_entries
from fedrx.errors import ConfigError
from fedrx.medrx.synth.config import SynthConfig
from fedrx.medrx.synth.writer import generate
from fedrx.nodes.simulate import SimulationConfig, run_simulation
from fedrx.secagg.identity import Identity


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("synth") / "s"
    generate(SynthConfig(hospitals=3, patients=150, seed=0), str(out), overwrite=True)
    return str(out)


def _cfg(data: str, out: Path, **kw) -> SimulationConfig:
    base = dict(data=data, rounds=3, protection="mask", dp=True, dp_mode="distributed",
                dp_k=1, epsilon=8.0, hidden=8, out=str(out), personalize=False,
                budget_store="off", dp_batch=60, eval_every=2, accountant="pld")
    return SimulationConfig(**(base | kw))


@pytest.mark.parametrize("protection", ["mask", "ckks"])
def test_distributed_federation_charges_the_honest_shares(data, tmp_path, protection):
    doc = run_simulation(_cfg(data, tmp_path / "run", protection=protection))
    assert [r["status"] for r in doc["rounds"]] == ["completed"] * 3
    assert all(r["distributed"] == {"survivors": 3, "min_survivors": 2} for r in doc["rounds"])
    assert doc["rounds"][0]["metrics"] == {} and doc["rounds"][1]["metrics"]  # eval every 2
    weights = [r["model_hash"] for r in doc["rounds"]]
    assert len(set(weights)) == 3  # every step moved the global model
    for h, d in doc["dp"].items():
        assert d["mechanism"] == "distributed" and d["k"] == 1 and d["honest_shares"] == 2
        assert d["share_kind"] == ("discrete" if protection == "mask" else "gaussian")
        assert d["epsilon"] <= 8.0 + 1e-9
        entries = read_entries(tmp_path / "run" / "ledger" / f"{h}.jsonl")
        assert len(entries) == 3
        for e in entries:
            assert e["steps"] == 1 and e["distributed"]["shares"] == 3
            assert e["noise_multiplier"] == e["distributed"]["charged_noise_multiplier"]
            assert e["noise_multiplier"] >= e["distributed"]["noise_multiplier"]
            assert entry_findings(e) == []
    assert audit(tmp_path / "run") == []


def test_too_few_survivors_abort_the_round_and_keep_the_model(data, tmp_path):
    """k = 1 of 3: two hospitals gone after sharing their keys leave one survivor; the mask
    threshold and the n - k floor both refuse, nothing is released, the model stays."""
    cfg = _cfg(data, tmp_path / "drop", rounds=2, drop="hosp01@masked_input:2,"
               "hosp02@masked_input:2", eval_every=1)
    doc = run_simulation(cfg)
    r1, r2 = doc["rounds"]
    assert r1["status"] == "completed" and r2["status"] == "aborted"
    assert r2["model_hash"] == r1["model_hash"]
    assert r2["contributors"] == []


def test_distributed_dp_needs_a_secure_sum(data, tmp_path):
    with pytest.raises(ConfigError, match="secure sum"):
        run_simulation(_cfg(data, tmp_path / "none", protection="none"))
    proc = subprocess.run([sys.executable, "-m", "fedrx.cli", "simulate", "--data", data,
                           "--dp", "distributed", "--out", str(tmp_path / "cli")],
                          capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("fedrx: error:") and "secure sum" in lines[0]
    with pytest.raises(ConfigError, match="dp_k"):
        run_simulation(_cfg(data, tmp_path / "k", dp_k=3))


def test_audit_catches_a_charge_above_what_the_shares_give(tmp_path):
    """A hospital that records a larger sigma than its shares guarantee (under-reporting
    epsilon) is caught even though its ledger is correctly signed and chained."""
    from fedrx.dp.distributed.sizing import ShareSizing

    ident = Identity.generate("h1")
    led = PrivacyLedger.in_run_dir(tmp_path, ident)
    sz = ShareSizing(4, 1, 1.1, 1.0, 500, "discrete", 16)
    honest = sz.charged_noise_multiplier()
    led.append(round=1, mechanism=Mechanism(0.1, honest, 1), max_grad_norm=1.0, delta=1e-5,
               accountant="pld", model_hash="m", budget_epsilon=50.0,
               distributed=sz.describe())
    forged = sz.describe() | {"share_variance": sz.share_variance // 2}
    led.append(round=2, mechanism=Mechanism(0.1, honest, 1), max_grad_norm=1.0, delta=1e-5,
               accountant="pld", model_hash="m", budget_epsilon=50.0, distributed=forged)
    led.append(round=3, mechanism=Mechanism(0.1, 2 * honest, 1), max_grad_norm=1.0,
               delta=1e-5, accountant="pld", model_hash="m", budget_epsilon=50.0,
               distributed=sz.describe())
    entries = read_entries(led.path)
    check = check_entries("h1", entries, ident.public, recompute=False)
    kinds = [(f.kind, f.seq) for f in check.findings]
    assert ("distributed", 0) not in kinds
    assert ("distributed", 1) in kinds and ("distributed", 2) in kinds
    assert any("under-reported" in f.message for f in check.findings if f.seq == 2)


def test_results_record_the_mechanism(data, tmp_path):
    run_simulation(_cfg(data, tmp_path / "r", rounds=1))
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    d = next(iter(doc["dp"].values()))
    assert d["count"] >= 1 and d["min_survivors"] == 2 and d["shares"] == 3
    assert np.isfinite(d["charged_noise_multiplier"])
