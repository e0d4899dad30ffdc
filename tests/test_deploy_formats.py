"""Issue 13 acceptance, slow: real process federations where every hospital node reads only
its own export.

* gRPC federations of 3 hospital processes (mutual TLS, protection mask) on the MIMIC-IV
  demo split in 3, the OMOP demo split in 3 and the eICU demo split by ``hospitalid`` (the 3
  sites the split picks): every round completes with 3 contributors, the aggregator's
  config has only ``[aggregator]`` (no path into the exports), each node's ``[data]`` path is
  its own export folder, and each node's log says it read its own export (the patient count
  equals what :func:`~fedrx.medrx.exports.load_export` reads from that folder alone);
* README's demo on a machine without demo data (``FEDRX_DATA_ROOT`` an empty folder):
  ``fedrx demo grpc`` generates a synthetic federation and exits 0 after every round
  completed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedrx.config import load_toml
from fedrx.medrx.exports import load_export
from fedrx.nodes.launcher import DemoSpec, run_demo

pytestmark = pytest.mark.slow

FORMATS = {"mimic4-demo": "mimic4", "omop-demo": "omop", "eicu-demo": "eicu"}


def _own_export_lines(log: Path) -> list[dict[str, str]]:
    """The node log's "own export read" events as {field: value}."""
    rows = []
    for line in log.read_text().splitlines():
        if 'msg="own export read"' in line:
            rows.append(dict(re.findall(r' (\w+)=("[^"]*"|\S+)', line)))
    return rows


def assert_aggregator_has_no_data(out: Path) -> None:
    doc = load_toml(out / "aggregator.toml")
    assert set(doc) == {"aggregator"}, doc
    exports = str((out / "exports").resolve())
    for k, v in doc["aggregator"].items():
        assert exports not in str(v), (k, v)
        assert k not in ("data", "path", "mappings", "hospitals", "vocabulary"), k


def assert_each_node_own_folder(out: Path, hospitals: list[str]) -> None:
    exports = (out / "exports").resolve()
    for h in hospitals:
        doc = load_toml(out / "nodes" / f"{h}.toml")
        assert set(doc) <= {"node", "data", "privacy"}, doc
        assert Path(doc["data"]["path"]).resolve() == exports / h
        others = [str(exports / g) for g in hospitals if g != h]
        text = json.dumps(doc)
        assert not any(o in text for o in others), (h, text)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_three_hospital_grpc_federation_on_own_exports(name, data_root, tmp_path):
    if not (data_root / name).is_dir():
        pytest.skip(f"{name} not found")
    out = tmp_path / name
    spec = DemoSpec(out=out, data=name, hospitals=3, rounds=2, hidden=16, protection="mask",
                    dp=False, timeout=600)
    doc = run_demo(spec, echo=lambda m: None)
    hs = sorted(doc["hospitals"])
    assert len(hs) == 3
    assert [r["status"] for r in doc["rounds"]] == ["completed", "completed"]
    assert all(sorted(r["contributors"]) == hs for r in doc["rounds"]), doc["rounds"]
    assert_aggregator_has_no_data(out)
    assert_each_node_own_folder(out, hs)
    figures = {"dataset": name, "jaccard": doc["rounds"][-1]["metrics"].get("jaccard"),
               "hospitals": {}}
    min_visits = json.loads((out / "certs" / "task.json").read_text())["settings"]["min_visits"]
    for h in hs:
        data = load_toml(out / "nodes" / f"{h}.toml")["data"]
        cohort = load_export(data["path"], "auto", mappings=data.get("mappings") or None,
                             min_visits=min_visits, hospital=h)
        assert cohort.stats.get("export_format_" + FORMATS[name]) == 1
        lines = _own_export_lines(out / "logs" / f"{h}.log")
        assert len(lines) == 1, lines
        assert lines[0]["hospital"] == f'"{h}"'
        assert int(lines[0]["patients"]) == len(cohort.patients)
        figures["hospitals"][h] = {"patients": len(cohort.patients),
                                   "visits": cohort.n_visits,
                                   "train_visits": int(lines[0]["train_visits"])}
    # for the report (run with -s): patients/visits per hospital and the final Jaccard
    print("DEPLOY-FIGURES " + json.dumps(figures))


def test_demo_grpc_without_demo_data(tmp_path):
    """README's first command on a machine with no demo data: a synthetic federation."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "fedrx.cli", "demo", "grpc", "--out", str(out),
                           "--rounds", "1", "--hidden", "16", "--dp", "off"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path,
                          env={**os.environ, "FEDRX_DATA_ROOT": str(empty), "COLUMNS": "120"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no demo data found" in proc.stdout + proc.stderr
    doc = json.loads((out / "aggregator" / "results.json").read_text())
    assert [r["status"] for r in doc["rounds"]] == ["completed"]
    hs = sorted(doc["hospitals"])
    assert sorted(doc["rounds"][0]["contributors"]) == hs and len(hs) == 3
    assert_aggregator_has_no_data(out)
    assert_each_node_own_folder(out, hs)
    assert not list(empty.iterdir())  # nothing written to the (empty) data root
