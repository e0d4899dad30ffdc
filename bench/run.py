"""``fedrx bench``: run every part and write ``OUT/results.json`` (format ``fedrx-bench/1``),
``OUT/bench.md`` and ``OUT/plots/`` (see :mod:`fedrx.bench` for what is measured).

``backend`` in the document: ``inprocess``, ``grpc`` (``--deploy``) or the Ray cluster the
arms ran on (:func:`fedrx.bench.ray_bench.cluster_info`; micro-benchmarks, scaling and the
epsilon sweep always run in this process)."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fedrx.atomic import atomic_write_text
from fedrx.bench.arms import arm_doc, run_arm, warmup
from fedrx.bench.config import BenchConfig
from fedrx.bench.micro import run_micro
from fedrx.bench.plots import make_plots
from fedrx.bench.ray_bench import ray_session
from fedrx.bench.records import add_ratios
from fedrx.bench.report import bench_markdown, machine_info
from fedrx.bench.scaling import run_scaling, scaling_fits
from fedrx.bench.sweep import run_sweep
from fedrx.bench.tables import headline


def plan_units(cfg: BenchConfig) -> int:
    """Progress units of :func:`run_bench` (for a progress bar)."""
    s = cfg.settings
    units = len(cfg.arms()) * int(cfg.rounds or 1)
    units += len(cfg.sweep or ()) * int(cfg.rounds or 1) + (1 if cfg.sweep else 0) * int(
        cfg.rounds or 1)
    if cfg.micro:
        units += 2
    if cfg.scaling:
        units += 2 * len(s["scale_ns"]) + 1 + 2 * len(s["scale_ds"])
    return units


def run_bench(cfg: BenchConfig, tick: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run everything; write ``OUT/results.json``, ``OUT/bench.md`` and ``OUT/plots``."""
    cfg.resolve()
    step = tick or (lambda _d: None)
    out = Path(cfg.out)
    if cfg.overwrite:
        for sub in ("arms", "sweep", "plots"):
            if (out / sub).is_dir():
                shutil.rmtree(out / sub)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    phases: dict[str, float] = {}
    backend: dict[str, Any] = {"name": "grpc" if cfg.deploy else cfg.backend}
    with contextlib.ExitStack() as stack:
        if cfg.backend == "ray":  # one Ray session for every arm (not one per arm)
            backend = stack.enter_context(ray_session(cfg.ray_address))
        if not cfg.deploy:
            warmup(cfg, out / "warmup")
        phases["warmup"] = time.perf_counter() - t0
        arms = []
        for name, prot, dp in cfg.arms():
            arms.append(run_arm(cfg, name, prot, dp, out / "arms" / name.replace("+", "_"),
                                step))
    add_ratios(arms)
    phases["arms"] = time.perf_counter() - t0 - sum(phases.values())
    first = arm_doc(arms[0]) if arms else {}
    doc: dict[str, Any] = {
        "format": "fedrx-bench/1",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),  # noqa: UP017
        "machine": machine_info(),
        "backend": backend,
        "config": {k: v for k, v in asdict(cfg).items() if k != "settings"},
        "preset_settings": {k: list(v) if isinstance(v, tuple) else v
                            for k, v in cfg.settings.items()},
        "dataset": first.get("dataset", cfg.data),
        "parameters": first.get("parameters"),
        "arms": arms,
        "headline": headline(arms),
    }
    for part, fn in (("sweep", lambda: run_sweep(cfg, arms, out / "sweep", step)),
                     ("micro", lambda: run_micro(cfg.settings["micro_d"], step)),
                     ("scaling", lambda: run_scaling(cfg.settings, step))):
        t1 = time.perf_counter()
        doc[part] = fn() if (cfg.sweep if part == "sweep" else getattr(cfg, part)) else None
        phases[part] = time.perf_counter() - t1
    doc["phase_seconds"] = phases
    doc["fits"] = scaling_fits(doc["scaling"]) if doc["scaling"] else {}
    doc["seconds"] = time.perf_counter() - t0
    doc["plots"] = make_plots(doc, out / "plots")
    atomic_write_text(out / "results.json", json.dumps(doc, indent=1, default=str) + "\n")
    atomic_write_text(out / "bench.md", bench_markdown(doc))
    return doc
