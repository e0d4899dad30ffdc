"""`fedrx bench`: a CI-sized run writes consistent files (not timings); bad input: one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_cli import assert_one_line_error, run

ARMS = ["none", "mask", "ckks", "none+dp", "mask+dp", "ckks+dp"]


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory, mimic_demo) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench") / "out"
    proc = run("bench", "--ci", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def test_every_arm_and_round(ci_run):
    out, doc = ci_run
    assert [a["arm"] for a in doc["arms"]] == ARMS
    rounds = doc["config"]["rounds"]
    for a in doc["arms"]:
        assert len(a["rounds"]) == rounds
        assert Path(a["results_json"]).is_file()
        for r in a["rounds"]:
            assert r["status"] == "completed"
            for k in ("jaccard", "prauc", "f1", "ddi_rate"):
                assert r[k] is not None and 0.0 <= r[k] <= 1.0
            assert r["round_s"] > 0 and r["hospital_cpu_s"] is not None
            assert r["aggregator_cpu_s"] is not None
        assert a["peak_memory_bytes"] > 0
    # same split, seed and initial model: without DP every protection gives the same model
    # quality up to quantisation / CKKS noise
    base = doc["arms"][0]["final"]["jaccard"]
    for a in doc["arms"][:3]:
        assert abs(a["final"]["jaccard"] - base) < 0.01


def test_bytes(ci_run):
    _, doc = ci_run
    arms = {a["arm"]: a for a in doc["arms"]}
    for a in arms.values():
        assert a["bytes_up_per_hospital_round"] > 0 and a["bytes_down_per_hospital_round"] > 0
    for dp in ("", "+dp"):
        none, mask, ckks = arms["none" + dp], arms["mask" + dp], arms["ckks" + dp]
        assert mask["protection_bytes_per_hospital_round"] > 0
        # masking adds key advertisements, encrypted shares and unmasking down the wire
        # (its m-bit packed upload is SMALLER than none's float64 one, so compare the
        # protection stages' downlink, not the totals)
        assert (mask["rounds"][0]["protection_bytes_down_per_hospital"]
                > none["rounds"][0]["protection_bytes_down_per_hospital"])
        assert ckks["bytes_per_hospital_round"] > mask["bytes_per_hospital_round"]
        assert ckks["bytes_per_hospital_round"] > none["bytes_per_hospital_round"]
        assert none["bytes_ratio"] == pytest.approx(1.0)
        assert ckks["bytes_ratio"] > 1 and ckks["time_ratio"] > 0


def test_epsilon_only_for_dp_arms(ci_run):
    _, doc = ci_run
    for a in doc["arms"]:
        for r in a["rounds"]:
            if a["dp"]:
                assert r["epsilon"] is not None and 0 < r["epsilon"] <= doc["config"][
                    "epsilon"] * 1.001
            else:
                assert r["epsilon"] is None and r["epsilon_by_hospital"] is None
        assert (a["epsilon"] is not None) == a["dp"]


def test_markdown_plots_micro_scaling(ci_run):
    out, doc = ci_run
    md = (out / "bench.md").read_text()
    section = md.split("## Arms", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and
            not ln.startswith("| arm ")]
    assert [r.split("|")[1].strip() for r in rows] == ARMS
    for p in ("utility", "epsilon", "bytes", "round_time", "scaling_hospitals",
              "scaling_model", "memory_model"):
        f = out / "plots" / f"{p}.png"
        assert f.is_file() and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ops = [r["operation"] for r in doc["micro"]["rows"]]
    assert any(o.startswith("mask expansion") for o in ops)
    assert any(o.startswith("CKKS encrypt") for o in ops)
    assert all(r["x_floor"] > 0 for r in doc["micro"]["rows"])
    schemes = {r["scheme"] for r in doc["scaling"]["hospitals"]}
    assert schemes == {"mask-complete", "mask-harary", "ckks"}
    model = doc["scaling"]["model"]
    assert all(r["aggregator_peak_bytes"] and r["aggregator_peak_bytes"] > 0 for r in model)
    assert re.search(r"## Micro-benchmarks", md) and "## Scaling with model size" in md


@pytest.mark.parametrize("args, fragment", [
    (["--protection", "none,aes"], "unknown protection 'aes'"),
    (["--protection", "mask,mask"], "listed twice"),
    (["--dp", "maybe"], "--dp: expected off, on or off,on"),
    (["--hospitals", "1", "--protection", "mask"], "needs --hospitals >= 2"),
    (["--rounds", "0"], "--rounds must be >= 1"),
    (["--epsilon", "-1"], "must be > 0"),
    (["--epsilon-sweep", "1,x"], "--epsilon-sweep"),
    (["--quick", "--ci"], "exclusive"),
    (["--deploy", "--dp", "on"], "--epsilon-sweep none"),
])
def test_bad_input_one_line(tmp_path, args, fragment):
    assert_one_line_error(run("bench", "--out", str(tmp_path / "o"), *args), fragment)


def test_nonempty_out_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    assert_one_line_error(run("bench", "--ci", "--out", str(tmp_path)), "not empty")
