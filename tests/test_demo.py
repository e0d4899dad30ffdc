"""README's main job: `fedrx demo grpc` (certificates, aggregator + 3 hospital processes over
mutual TLS on loopback, masking, DP on), then ledgers, audit and budget report."""

from __future__ import annotations

import json

import pytest
from test_cli import run

from fedrx.dp.audit import audit

pytestmark = pytest.mark.slow


def test_demo_grpc_with_dp(mimic_demo, tmp_path):
    out = tmp_path / "demo"
    proc = run("demo", "grpc", "--out", str(out), "--rounds", "2", "--hidden", "16",
               "--local-epochs", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((out / "aggregator" / "results.json").read_text())
    assert [r["status"] for r in doc["rounds"]] == ["completed", "completed"]
    assert all(r["contributors"] == ["h1", "h2", "h3"] for r in doc["rounds"])
    assert (out / "budget-report" / "budget.html").is_file()
    assert proc.stderr.count("audit h") == 3 and "FINDING" not in proc.stdout + proc.stderr
    for h in ("h1", "h2", "h3"):
        assert audit(out / "nodes" / h) == []
        assert (out / "nodes" / h / "ledger" / f"{h}.jsonl").is_file()
