"""The CLI: user mistakes end as one line on stderr with a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FEDRX = [sys.executable, "-m", "fedrx.cli"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*FEDRX, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "120"}, timeout=600)


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fedrx: error:") and fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--data", "/no/such/place"], "dataset not found"),
        (["train", "--bogus"], "No such option"),
        (["train", "--epochs", "0"], "epochs must be >= 1"),
        (["train", "--epochs", "many"], "not a valid integer"),
        (["train", "--model", "gpt"], "--model"),
        (["frobnicate"], "No such command"),
        (["data", "export", "mimic3-demo", "--out", "x.csv"], "must end in .jsonl"),
    ],
)
def test_bad_flags(args, fragment):
    assert_one_line_error(run(*args), fragment)


def test_bad_config_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 3")
    assert_one_line_error(run("train", "--config", str(bad)), "invalid TOML")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[train]\nepocs = 3\n")
    assert_one_line_error(run("train", "--config", str(unknown)), "unknown config key 'epocs'")
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[train]\nepochs = "three"\n')
    assert_one_line_error(run("train", "--config", str(wrong)), "expected int")
    assert_one_line_error(run("train", "--config", str(tmp_path / "nope.toml")),
                          "cannot read config")


def test_bad_data(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run("train", "--data", str(tmp_path / "empty")), "unknown layout")
    h = tmp_path / "h"
    h.mkdir()
    (h / "ADMISSIONS.csv").write_text("row_id,subject_id\n1,2\n")
    assert_one_line_error(run("data", "inspect", str(h)), "missing column(s) hadm_id")
    f = tmp_path / "x.jsonl"
    f.write_text("not json\n")
    assert_one_line_error(run("train", "--data", str(f)), "not valid JSON")


def test_train_on_mimic_demo_writes_results(mimic_demo, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepochs = 4\nhidden = 32\n")
    out = tmp_path / "r.json"
    proc = run("train", "--data", "mimic3-demo", "--config", str(cfg), "--seed", "1",
               "--json", str(out), "--save-model", str(tmp_path / "m.npz"))
    assert proc.returncode == 0, proc.stderr
    assert "copy_last_visit" in proc.stdout and "jaccard" in proc.stdout
    res = json.loads(out.read_text())
    assert res["config"]["epochs"] == 4 and res["config"]["hidden"] == 32
    assert res["config"]["seed"] == 1
    assert set(res["test"]) == {"model", "logreg", "copy_last_visit"}
    assert res["ddi_file"].endswith("ddi_atc3_pairs_gamenet.csv")
    assert (tmp_path / "m.npz").is_file() and (tmp_path / "m.vocab.json").is_file()


def test_data_inspect_and_export(mimic_demo, tmp_path):
    proc = run("data", "inspect", "mimic3-demo")
    assert proc.returncode == 0 and "94 patients" in proc.stdout
    out = tmp_path / "r.jsonl"
    assert run("data", "export", "mimic3-demo", "--out", str(out)).returncode == 0
    assert len(out.read_text().splitlines()) == 94


def test_installed_under_one_import_name(tmp_path):
    """Nothing generic (dp, protocol, secagg...) is importable from site-packages."""
    code = ("import importlib.util as u, fedrx.secagg, fedrx.dp, fedrx.protocol, fedrx.nodes, "
            "fedrx.proto, fedrx.cli, fedrx.medrx;"
            "print([m for m in ('dp','protocol','secagg','nodes','proto','cli','medrx','core')"
            " if u.find_spec(m)])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("address, fragment", [
    ("127.0.0.1:1", "--ray-address 127.0.0.1:1: nothing accepts connections there"),
    ("nonsense", "is not host:port"),
])
def test_unreachable_or_malformed_ray_address_is_one_line(tmp_path, address, fragment):
    """Ray itself retries an unreachable cluster for minutes; fedrx says so in one line."""
    pytest.importorskip("ray")
    data = tmp_path / "d"
    assert run("data", "synth", "--out", str(data), "--hospitals", "2", "--patients", "40",
               "--catalogue", "builtin").returncode == 0
    proc = run("simulate", "--data", str(data), "--rounds", "1", "--backend", "ray",
               "--ray-address", address, "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, fragment)
