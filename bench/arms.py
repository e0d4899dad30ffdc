"""The arms of ``fedrx bench``: one federation per (protection, DP) setting, all on the same
data split, vocabulary, initial model and seed.

In process (default): :func:`fedrx.nodes.simulate.run_simulation` with its transport
wrapped by :class:`~fedrx.bench.metering.MeteredTransport` (CPU per hospital, stage and
round) and the process's peak RSS reset per arm. ``--deploy``: real node processes over
gRPC on loopback (:func:`fedrx.nodes.launcher.run_demo`); CPU and memory are then not
measured (separate processes). ``--backend ray``: the same simulation with its hospitals in
Ray worker actors, metered on the driver by
:class:`~fedrx.bench.ray_bench.DriverMeteredTransport` (bytes and time per stage, the
driver's CPU and peak RSS; hospital CPU is not measured, :mod:`fedrx.bench.ray_bench`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedrx.bench.config import BenchConfig
from fedrx.bench.memory import peak_memory, reset_peak_memory
from fedrx.bench.metering import CpuMeter, MeteredTransport
from fedrx.bench.ray_bench import CPU_METHOD, MEMORY_NOTE, DriverMeteredTransport
from fedrx.bench.records import round_record, summarize_arm
from fedrx.nodes.simulate import SimulationConfig, run_simulation
from fedrx.protocol.transport import Transport


def sim_config(cfg: BenchConfig, protection: str, dp: bool, out: Path) -> SimulationConfig:
    """The simulation of one arm (resolved ``cfg``; results in ``out``)."""
    return SimulationConfig(data=cfg.data, hospitals=cfg.hospitals, rounds=int(cfg.rounds or 1),
                            protection=protection, seed=cfg.seed, out=str(out),
                            hidden=int(cfg.hidden or 1), dp=dp, epsilon=cfg.epsilon,
                            backend=cfg.backend, ray_address=cfg.ray_address)


def run_arm(cfg: BenchConfig, name: str, protection: str, dp: bool, out: Path,
            tick: Callable[[str], None]) -> dict[str, Any]:
    """Run one arm; its summary (:func:`summarize_arm`) with every round's numbers."""
    if cfg.deploy:
        return run_arm_deployed(cfg, name, protection, dp, out, tick)
    on_ray = cfg.backend == "ray"
    meter = CpuMeter()
    rounds: list[dict[str, Any]] = []

    def progress(rec: dict[str, Any]) -> None:
        cpu, round_cpu = meter.take()
        # on Ray the hospitals' CPU is in the actors: None, never the driver's
        rounds.append(round_record(rec, None if on_ray else cpu, round_cpu))
        tick(f"{name}: round {rec['round']}/{cfg.rounds}")

    def metered(transport: Transport) -> Transport:
        return (DriverMeteredTransport if on_ray else MeteredTransport)(transport, meter)

    method = reset_peak_memory()
    doc = run_simulation(sim_config(cfg, protection, dp, out), progress,
                         wrap_transport=metered)
    arm = summarize_arm(name, protection, dp, doc, rounds, peak_memory(method))
    arm["backend"] = cfg.backend
    arm["memory_method"] = f"{method} {MEMORY_NOTE}" if on_ray else method
    if on_ray:
        arm["cpu_method"] = CPU_METHOD
    arm["rounds"] = rounds
    arm["out"] = str(out)
    arm["results_json"] = str(out / "results.json")
    return arm


def run_arm_deployed(cfg: BenchConfig, name: str, protection: str, dp: bool, out: Path,
                     tick: Callable[[str], None]) -> dict[str, Any]:
    """One arm over gRPC on loopback; epsilon read from each hospital's own ledger."""
    from fedrx.dp.ledger import read_entries
    from fedrx.nodes.launcher import DemoSpec, run_demo

    spec = DemoSpec(out=out, data=cfg.data, hospitals=int(cfg.hospitals or 1),
                    rounds=int(cfg.rounds or 1), protection=protection,
                    hidden=int(cfg.hidden or 1), local_epochs=1, seed=cfg.seed,
                    dp=dp, epsilon=cfg.epsilon, timeout=1800.0)
    doc = run_demo(spec, echo=lambda _m: None)
    if dp:
        # epsilon lives in each hospital's own ledger (never at the aggregator)
        for rec in doc["rounds"]:
            privacy = {}
            for h in rec["participants"]:
                led = Path(out) / "nodes" / h / "ledger" / f"{h}.jsonl"
                entries = [e for e in read_entries(led) if e["round"] <= rec["round"]]
                if entries:
                    privacy[h] = {"epsilon": entries[-1]["epsilon"]}
            rec["privacy"] = privacy
    rounds = [round_record(r, None, None) for r in doc["rounds"]]
    for r in rounds:
        tick(f"{name} (gRPC): round {r['round']}/{cfg.rounds}")
    arm = summarize_arm(name, protection, dp, doc, rounds, None)
    arm.update(memory_method="not measured (separate processes)", rounds=rounds,
               out=str(out), transport="grpc",
               results_json=str(out / "aggregator" / "results.json"))
    return arm


def warmup(cfg: BenchConfig, out: Path) -> None:
    """One unreported round (protection none, no DP) so that the first arm does not pay
    for torch's and the data loader's first-call costs; its folder is removed."""
    c = sim_config(cfg, "none", False, out)
    c.rounds = 1
    c.personalize = False
    try:
        run_simulation(c)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def arm_doc(arm: dict[str, Any]) -> dict[str, Any]:
    """The arm's own results document (``results.json`` of its run)."""
    return json.loads(Path(arm["results_json"]).read_text())
