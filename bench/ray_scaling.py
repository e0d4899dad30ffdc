"""Wall time per round against the number of hospitals: the in-process backend against the
Ray backend (:mod:`fedrx.nodes.ray_backend`), synthetic data (built-in catalogue), masking
over SecAgg+'s Harary graph, the same runner and cryptography on both. A script, not a test.

    python -m fedrx.bench.ray_scaling --ns 10,50,200 --rounds 3 --out runs/ray_scaling.json

Per round: wall seconds of the round (train, every masking stage, evaluation), the median
over rounds 2..``--rounds`` (round 1 pays one-off warm-up costs). Speed-up = in-process /
Ray. Ray is started locally with the cores this process may use (``--cpus``), no dashboard
and a 200 MB object store; the in-process arm runs torch on one thread, as each actor does.

Memory (MB, Linux ``/proc``): ``round_peak_growth_mb``, how far this process's peak RSS
rose above its RSS before the rounds (for the Ray arm: the driver, i.e. the aggregator);
``actors_mb``, the summed RSS and PSS of the ``HospitalWorker`` processes after the
rounds (where the hospitals live; local Ray only). ``--no-stream-arm`` adds a Ray arm
whose transport is asked WITHOUT the streaming ``absorb`` (every reply kept until the
stage's ``collect``), the ablation of :mod:`fedrx.secagg.absorb`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fedrx.atomic import atomic_write_text


def _data(root: Path, n: int, per_hospital: int, seed: int) -> Path:
    from fedrx.medrx.synth.config import SynthConfig
    from fedrx.medrx.synth.writer import generate

    out = root / f"synth-{n}"
    generate(SynthConfig(hospitals=1, patients=n * per_hospital, seed=seed,
                         catalogue="builtin"), out, overwrite=True)
    return out


def _round_seconds(runner: Any, state: Any) -> tuple[list[float], dict[str, float]]:
    """Wall seconds of each round, and the last round's seconds per stage."""
    res = runner.run(state)
    bad = [r["status"] for r in res.rounds if r["status"] != "completed"]
    if bad or not res.rounds:
        raise RuntimeError(f"a benchmark round did not complete: {bad}")
    last = {st["stage"]: round(float(st["seconds"]), 3) for st in res.rounds[-1]["stages"]}
    return [float(r["seconds"]) for r in res.rounds], last


class _NoStream:
    """A transport wrapper that never passes ``absorb`` (the ablation)."""

    def __init__(self, inner: Any):
        self.inner = inner

    def exchange(self, stage: str, rnd: int, requests: Any, absorb: Any = None) -> Any:
        return self.inner.exchange(stage, rnd, requests)

    def take_stats(self) -> Any:
        return self.inner.take_stats()


def _rss_mb() -> float:
    from fedrx.bench.memory import status_kb

    return (status_kb("VmRSS") or 0) / 1024.0


def _pid(_worker: Any) -> int:
    """Runs inside an actor (``__ray_call__``): its process id."""
    import os

    return os.getpid()


def _actors_memory_mb(actors: list[Any]) -> dict[str, float] | None:
    """Summed RSS and PSS (shared pages split between the processes that map them, e.g.
    torch's libraries) of ``actors``' processes, in MB; None where ``/proc`` is missing."""
    import ray

    pids = ray.get([a.__ray_call__.remote(_pid) for a in actors])
    rss = pss = 0
    try:
        for pid in pids:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    except OSError:
        return None
    return {"rss": round(rss / 1024.0, 1), "pss": round(pss / 1024.0, 1)}


def measure(n: int, backend: str, data: Path, rounds: int, hidden: int,
            seed: int, stream: bool = True) -> dict[str, Any]:
    """One federation of ``n`` hospitals on ``backend``: per-round wall seconds and memory
    (see the module doc); ``stream=False``: the no-absorb ablation."""
    from fedrx.bench.memory import reset_peak_rss, status_kb
    from fedrx.medrx.prepare import prepare
    from fedrx.nodes.party import client_optimizer, protection_params
    from fedrx.nodes.simulate import SimulationConfig
    from fedrx.protocol.api import build_federated_averaging_process
    from fedrx.protocol.optim import ServerOptimizer
    from fedrx.protocol.runner import RunHooks

    with tempfile.TemporaryDirectory() as tmp:
        cfg = SimulationConfig(data=str(data), hospitals=n, rounds=rounds, protection="mask",
                               seed=seed, out=tmp, hidden=hidden, min_patients=3,
                               backend=backend)
        prep = prepare(cfg)
        params = protection_params(cfg, n) | {"graph": "harary"}
        t0 = time.perf_counter()
        if backend == "ray":
            from fedrx.nodes.ray_backend import start_ray_process

            process, state = start_ray_process(cfg, prep, Path(tmp), params=params)
        else:
            # start_process's steps, with the Harary graph in the parameters
            process = build_federated_averaging_process(
                prep.task, client_optimizer=client_optimizer(cfg),
                server_optimizer=ServerOptimizer(cfg.server_optimizer, lr=cfg.server_lr),
                protection="mask", protection_params=params, seed=cfg.seed)
            state = process.initialize()
            process.enroll(prep.hospitals)
        setup = time.perf_counter() - t0
        try:
            runner = process.runner(prep.hospitals, rounds, personalize=False,
                                    hooks=RunHooks(sorted(prep.hospitals)))
            if not stream:
                runner.transport = _NoStream(runner.transport)
            reset_peak_rss()
            before = _rss_mb()
            secs, stages = _round_seconds(runner, state)
            growth = (status_kb("VmHWM") or 0) / 1024.0 - before
            actors = _actors_memory_mb(process.actors) if backend == "ray" else None
        finally:
            if hasattr(process, "close"):
                process.close()
    warm = secs[1:] or secs  # round 1 pays the one-off warm-up (imports, first kernels)
    return {"n": n, "backend": backend if stream else f"{backend}-no-stream",
            "setup_s": setup, "round_s": secs,
            "median_round_s": statistics.median(warm), "parameters": prep.task.spec.size,
            "last_round_stages_s": stages, "round_peak_growth_mb": round(growth, 1),
            "actors_mb": actors}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", default="10,50,200", help="hospital counts  [10,50,200]")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--per-hospital", type=int, default=20, help="patients per hospital")
    ap.add_argument("--cpus", type=int, default=0, help="local Ray CPUs  [the cores]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/ray_scaling.json")
    ap.add_argument("--no-stream-arm", action="store_true",
                    help="also a Ray arm without the streaming absorb (memory ablation)")
    args = ap.parse_args(argv)
    import torch

    from fedrx.nodes.ray_backend import init_ray

    torch.set_num_threads(1)  # the in-process arm on one core, as each Ray actor
    started = init_ray("", args.cpus or None)
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as root:
            for n in (int(x) for x in args.ns.split(",")):
                data = _data(Path(root), n, args.per_hospital, args.seed)
                pair = {}
                for backend in ("inprocess", "ray"):
                    r = measure(n, backend, data, args.rounds, args.hidden, args.seed)
                    pair[backend] = r
                    rows.append(r)
                    print(json.dumps(r), flush=True)
                if args.no_stream_arm:
                    r = measure(n, "ray", data, args.rounds, args.hidden, args.seed, False)
                    rows.append(r)
                    print(json.dumps(r), flush=True)
                speed = pair["inprocess"]["median_round_s"] / pair["ray"]["median_round_s"]
                print(f"n={n}: in-process {pair['inprocess']['median_round_s']:.2f} s/round, "
                      f"ray {pair['ray']['median_round_s']:.2f} s/round, "
                      f"speed-up {speed:.2f}x", flush=True)
                rows.append({"n": n, "speedup": speed})
                out = Path(args.out)
                out.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(out, json.dumps(rows, indent=1) + "\n")
    finally:
        if started:
            import ray

            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
