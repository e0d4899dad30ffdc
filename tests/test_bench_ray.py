"""`fedrx bench --backend ray`: the arms on a local Ray (2 CPUs) give the in-process arms'
results for protection none (same seed: same model hash every round), say which backend
ran, and never report the driver's CPU as a hospital's; bad flags: one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from ray_cluster import local_ray  # noqa: F401
from test_cli import assert_one_line_error, run

from fedrx.bench.config import BenchConfig
from fedrx.cli.main import main
from fedrx.errors import ConfigError

FLAGS = ["--ci", "--no-micro", "--no-scaling", "--seed", "5"]
ARMS = ["--protection", "none,mask", "--dp", "off"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from fedrx.medrx.synth.config import SynthConfig
    from fedrx.medrx.synth.writer import generate

    data = tmp_path_factory.mktemp("synth") / "data"
    generate(SynthConfig(hospitals=2, patients=160, seed=7, catalogue="builtin"), data)
    return data


def _bench(out: Path, synth: Path, *extra: str) -> dict:
    assert main(["bench", *FLAGS, "--data", str(synth), "--out", str(out), *extra]) == 0
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def runs(local_ray, synth, tmp_path_factory) -> tuple[dict, dict, Path]:  # noqa: F811
    import ray

    base = tmp_path_factory.mktemp("bench-ray")
    local = _bench(base / "inprocess", synth, *ARMS)
    remote = _bench(base / "ray", synth, *ARMS, "--backend", "ray")
    # the fixture's Ray was already up: the bench joined it and left it running
    assert ray.is_initialized()
    return local, remote, base / "ray"


def _hashes(arm: dict) -> list[str]:
    doc = json.loads(Path(arm["results_json"]).read_text())
    return [r["model_hash"] for r in doc["rounds"]]


def test_ray_bench_records_the_backend_and_the_in_process_results(runs):
    local, remote, _ = runs
    assert local["backend"] == {"name": "inprocess"}
    b = remote["backend"]
    assert b["name"] == "ray" and b["cluster_cpus"] == 2 and b["started_by_bench"] is False
    assert remote["config"]["backend"] == "ray"
    assert [a["arm"] for a in remote["arms"]] == ["none", "mask"]
    for a in remote["arms"]:
        assert a["backend"] == "ray"
        assert all(r["status"] == "completed" for r in a["rounds"])
        assert json.loads(Path(a["results_json"]).read_text())["config"]["backend"] == "ray"
    lnone, rnone = local["arms"][0], remote["arms"][0]
    assert _hashes(rnone) == _hashes(lnone)
    assert rnone["final"] == lnone["final"]


def test_ray_arms_measure_the_driver_only(runs):
    _, remote, _ = runs
    for a in remote["arms"]:
        assert a["hospital_cpu_s_per_round"] is None and a["cpu_ratio"] is None
        assert "hospital CPU not measured" in a["cpu_method"]
        assert "driver" in a["memory_method"] and a["peak_memory_bytes"] > 0
        for r in a["rounds"]:
            assert r["hospital_cpu_s"] is None and r["hospital_cpu_max_s"] is None
            assert r["hospital_eval_cpu_s"] is None
            assert r["aggregator_cpu_s"] is not None and r["aggregator_cpu_s"] >= 0
            assert r["round_s"] > 0 and r["bytes_up_per_hospital"] > 0


def test_ray_bench_markdown_and_plots(runs):
    _, _, out = runs
    md = (out / "bench.md").read_text()
    assert "transport Ray (2 cluster CPUs" in md and "hospital CPU n/a" in md
    lines = md.split("## Arms", 1)[1].splitlines()
    header = next(ln for ln in lines if ln.startswith("| arm ")).split(" | ")
    rows = [ln.split(" | ") for ln in lines if ln.startswith(("| none ", "| mask "))]
    col = header.index("hospital CPU s/round")
    assert len(rows) == 2 and all(r[col] == "n/a" for r in rows)
    for p in ("utility", "bytes", "round_time"):
        assert (out / "plots" / f"{p}.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, fragment", [
    (["--backend", "nonsense"], "--backend: expected inprocess or ray, got 'nonsense'"),
    (["--backend", "ray", "--deploy"], "are exclusive"),
    (["--ray-address", "127.0.0.1:6379"], "--ray-address needs --backend ray"),
])
def test_bad_backend_flags_one_line(tmp_path, args, fragment):
    assert_one_line_error(run("bench", "--ci", "--out", str(tmp_path / "o"), *args), fragment)


def test_ray_not_installed_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    cfg = BenchConfig(protections=("none",), dp=(False,), out=str(tmp_path / "o"),
                      preset="ci", backend="ray")
    with pytest.raises(ConfigError, match=r"--backend ray needs Ray: pip install 'fedrx\[ray\]'"):
        cfg.resolve()


@pytest.mark.slow
def test_cli_joins_a_cluster_by_address(local_ray, synth, tmp_path):  # noqa: F811
    """The real command line in its own process, joining the running cluster by
    --ray-address: it names the address, and leaving it (ray.shutdown in the driver it
    started) stops no cluster."""
    import ray

    out = tmp_path / "o"
    proc = run("bench", *FLAGS, "--protection", "none", "--dp", "off", "--data", str(synth),
               "--out", str(out), "--backend", "ray", "--ray-address", local_ray)
    assert proc.returncode == 0, proc.stderr[-3000:]
    b = json.loads((out / "results.json").read_text())["backend"]
    assert b["address"] == local_ray and b["started_by_bench"] is True
    assert b["cluster_cpus"] == 2
    assert ray.cluster_resources().get("CPU") == 2  # the cluster is still up


@pytest.mark.slow
def test_dp_arm_on_ray_spends_the_in_process_epsilon(local_ray, synth, tmp_path):  # noqa: F811
    """A DP arm runs on Ray through the same run_simulation: every round's epsilon (the
    accountant's, per hospital) is the in-process arm's, and the ledgers are written by
    the actors into the arm's run folder."""
    flags = ["--protection", "none", "--dp", "on"]
    local = _bench(tmp_path / "inprocess", synth, *flags)
    remote = _bench(tmp_path / "ray", synth, *flags, "--backend", "ray")
    la, ra = local["arms"][0], remote["arms"][0]
    assert ra["arm"] == "none+dp" and ra["backend"] == "ray" and ra["dp"] is True
    assert [r["epsilon_by_hospital"] for r in ra["rounds"]] == \
        [r["epsilon_by_hospital"] for r in la["rounds"]]
    assert 0 < ra["epsilon"] <= 8.0 * 1.001
    ledgers = sorted(p.name for p in (Path(ra["out"]) / "ledger").glob("*.jsonl"))
    assert ledgers == sorted(f"{h}.jsonl" for h in ra["rounds"][0]["epsilon_by_hospital"])
