"""Test Jaccard of the federation against the DP target epsilon (protection none).

Every run is :func:`fedrx.nodes.simulate.run_simulation` on the SAME data split, seed and
initial model; DP is patient-level DP-SGD at every hospital, its noise calibrated to reach
the target epsilon after ``rounds`` rounds. ``fedrx bench --epsilon-sweep`` runs it
(:func:`run_sweep`), as does ``python -m fedrx.bench.dp --federation``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedrx.bench.arms import arm_doc
from fedrx.bench.config import BenchConfig
from fedrx.nodes.simulate import SimulationConfig, run_simulation


def accuracy_row(epsilon: float | None, doc: dict) -> dict:
    """One row of the accuracy-vs-epsilon table from a ``run_simulation`` results document
    (``epsilon``: the target, None without DP)."""
    final = doc["final"]["global"]
    dp = doc.get("dp") or {}
    return {"epsilon_target": epsilon,
            "epsilon_spent": max((d["epsilon"] for d in dp.values()), default=None),
            "noise_multiplier": (statistics.mean(d["noise_multiplier"] for d in dp.values())
                                 if dp else None),
            "jaccard": final.get("jaccard"), "prauc": final.get("prauc"),
            "f1": final.get("f1"), "seconds": doc.get("seconds"),
            "hospitals": len(doc.get("hospitals", {})),
            "rounds": len(doc.get("rounds", []))}


def federation_accuracy(epsilons: tuple[float, ...] = (1.0, 3.0, 8.0), *,
                        data: str = "mimic3-demo", hospitals: int | None = 3,
                        rounds: int = 10, hidden: int = 128, seed: int = 0,
                        protection: str = "none", out: str | Path = "runs/bench-dp",
                        include_no_dp: bool = True,
                        progress: Callable[[dict[str, Any]], None] | None = None,
                        **overrides: Any) -> list[dict]:
    """Test Jaccard of the federation at each target epsilon and without DP.

    One run per setting (``out/no-dp``, ``out/eps-<e>``); returns one :func:`accuracy_row`
    per run (no DP first). ``overrides`` are further :class:`SimulationConfig` fields (for
    example ``local_epochs``).
    """
    runs: list[float | None] = ([None] if include_no_dp else []) + list(epsilons)
    rows = []
    for eps in runs:
        name = "no-dp" if eps is None else f"eps-{eps:g}"
        cfg = SimulationConfig(data=data, hospitals=hospitals, rounds=rounds,
                               protection=protection, seed=seed, hidden=hidden,
                               out=str(Path(out) / name), dp=eps is not None,
                               epsilon=8.0 if eps is None else float(eps), **overrides)
        rows.append(accuracy_row(eps, run_simulation(cfg, progress)))
    return rows


def federation_accuracy_table(rows: list[dict]) -> str:
    """Markdown table of :func:`federation_accuracy` rows."""
    lines = ["| target epsilon | epsilon spent | noise multiplier | test jaccard | prauc | f1 |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        eps = "no DP" if r["epsilon_target"] is None else f"{r['epsilon_target']:g}"
        spent = "-" if r["epsilon_spent"] is None else f"{r['epsilon_spent']:.3f}"
        sigma = "-" if r["noise_multiplier"] is None else f"{r['noise_multiplier']:.3f}"
        lines.append(f"| {eps} | {spent} | {sigma} | {r['jaccard']:.4f} | {r['prauc']:.4f} | "
                     f"{r['f1']:.4f} |")
    return "\n".join(lines)


def run_sweep(cfg: BenchConfig, arms: list[dict[str, Any]], out: Path,
              tick: Callable[[str], None]) -> list[dict[str, Any]]:
    """Issue 8's table: test Jaccard at each epsilon and without DP (protection none),
    reusing the none and none+dp arms where they match."""
    have = {a["arm"]: a for a in arms}
    rows: list[dict[str, Any]] = []
    if "none" in have:
        rows.append(accuracy_row(None, arm_doc(have["none"])))
    todo = [e for e in cfg.sweep or () if not ("none+dp" in have and e == cfg.epsilon)]
    rows += federation_accuracy(
        tuple(todo), data=cfg.data, hospitals=cfg.hospitals, rounds=int(cfg.rounds or 1),
        hidden=int(cfg.hidden or 1), seed=cfg.seed, out=out, include_no_dp="none" not in have,
        progress=lambda rec: tick(f"epsilon sweep: round {rec['round']}/{cfg.rounds}"))
    if "none+dp" in have and cfg.epsilon in (cfg.sweep or ()):
        rows.append(accuracy_row(cfg.epsilon, arm_doc(have["none+dp"])))
    rows.sort(key=lambda r: (r["epsilon_target"] is None, r["epsilon_target"] or 0.0))
    return rows
