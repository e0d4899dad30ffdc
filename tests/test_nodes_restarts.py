"""Aggregator restarts do not burn privacy budget without progress (issue 15, item 5).

A 5-round DP federation (synthetic exports, 3 hospital processes, mask) whose aggregator is
killed (exit 137, ``[aggregator] crash_at``) right after the masked inputs of rounds 1, 3
and 5 arrived, and restarted each time from its checkpoint. Rounds 1, 3, 5 are abandoned
(numbers burnt); rounds 2 and 4 retry them with the SAME global model, so every hospital
re-sends the protected input it was already charged for: it pays for 3 rounds, not 5
(before: 5 charged rounds, epsilon 7.99 of 8 for two completed rounds; after: about 6.2).
Slow: process starts import torch.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from fedrx.dp.accountants.registry import compute_epsilon
from fedrx.dp.audit import run_audit
from fedrx.dp.ledger import mechanism_of, read_entries
from fedrx.nodes.launcher import (
    DemoSpec,
    start_aggregator,
    start_federation,
    stop_all,
    write_setup,
)

pytestmark = pytest.mark.slow
WAIT = 240
CRASHES = ["masked_input:1", "masked_input:3", "masked_input:5"]


def test_three_aggregator_restarts_charge_each_model_once(tmp_path):
    spec = DemoSpec(out=tmp_path / "g", data="synthetic", hospitals=3, patients=150,
                    protection="mask", hidden=16, rounds=5, dp=True, timeout=WAIT)
    spec.aggregator = {"crash_at": CRASHES[0]}
    setup = write_setup(spec)
    procs: dict[str, subprocess.Popen] = {}
    try:
        start_federation(setup, procs)
        for nxt in [*CRASHES[1:], None]:
            assert procs["aggregator"].wait(WAIT) == 137
            spec.aggregator = {"crash_at": nxt} if nxt else {}
            write_setup(spec, setup.hospitals)
            procs["aggregator"] = start_aggregator(setup)
        assert procs["aggregator"].wait(WAIT) == 0
        for h in setup.hospitals:
            assert procs[h].wait(60) == 0  # every receipt verified, Goodbye "finished"
    finally:
        stop_all(procs)
    out = setup.out
    doc = json.loads((out / "aggregator" / "results.json").read_text())
    assert [(r["round"], r["status"]) for r in doc["rounds"]] == [(2, "completed"),
                                                                  (4, "completed")]
    for h in setup.hospitals:
        node = out / "nodes" / h
        entries = read_entries(node / "ledger" / f"{h}.jsonl")
        assert [(e["round"], e["status"]) for e in entries] == [(1, "trained"),
                                                                (3, "trained"),
                                                                (5, "trained")]
        state = json.loads((node / "state.json").read_text())
        reused = {r["round"]: r["reused_from"] for r in state["rounds"]}
        assert reused == {1: 0, 2: 1, 3: 0, 4: 3, 5: 0}
        assert [r["round"] for r in state["receipts"]] == [2, 4]
        mechs = [mechanism_of(e) for e in entries]
        eps, delta = entries[-1]["epsilon"], entries[-1]["delta"]
        assert eps == pytest.approx(compute_epsilon(mechs, delta, entries[-1]["accountant"]))
        every_try = compute_epsilon(mechs + mechs[:2], delta, entries[-1]["accountant"])
        assert eps < every_try - 1.0, (eps, every_try)  # what training every try would cost
        res = run_audit(node, out / "aggregator" / "anchors" / f"{h}.json",
                        out / "certs" / "federation.json")
        assert not res.findings, res.findings
