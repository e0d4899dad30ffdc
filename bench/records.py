"""The bench's numbers from run records: per round (:func:`round_record`), per arm
(:func:`summarize_arm`) and against the unprotected arm (:func:`add_ratios`).

Units: bytes, seconds (wall for ``*_s`` of a round, CPU for ``*_cpu_s``), utility metrics
in [0, 1]; a value that was not measured is None.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

UTILITY = ("jaccard", "prauc", "f1", "ddi_rate")


def round_record(rec: dict[str, Any], cpu: dict[tuple[str, str], float] | None,
                 round_cpu: float | None) -> dict[str, Any]:
    """The bench's per-round numbers from one run_simulation round record. ``cpu``: CPU s
    per (hospital, stage), None where hospital CPU was not measured (gRPC nodes, Ray
    actors); ``round_cpu``: this process's CPU s over the round (None: not measured). With
    ``cpu`` None and ``round_cpu`` given, ``aggregator_cpu_s`` is this (driver) process's
    round CPU and every hospital CPU field stays None."""
    n = max(1, len(rec["participants"]))
    stages = rec.get("stages", [])
    outer = ("train", "evaluate")
    up = sum(s["received_bytes"] for s in stages)
    down = sum(s["sent_bytes"] for s in stages)
    p_up = sum(s["received_bytes"] for s in stages if s["stage"] not in outer)
    p_down = sum(s["sent_bytes"] for s in stages if s["stage"] not in outer)
    eval_s = sum(s["seconds"] for s in stages if s["stage"] == "evaluate")
    m = rec.get("metrics", {})
    out: dict[str, Any] = {
        "round": rec["round"], "status": rec["status"],
        "participants": len(rec["participants"]), "contributors": len(rec["contributors"]),
        "dropped": sorted(rec.get("dropped", {})),
        **{k: m.get(k) for k in UTILITY},
        "bytes_up_per_hospital": up / n, "bytes_down_per_hospital": down / n,
        "protection_bytes_up_per_hospital": p_up / n,
        "protection_bytes_down_per_hospital": p_down / n,
        "round_s": rec["seconds"], "evaluate_s": eval_s,
        "train_stage_s": sum(s["seconds"] for s in stages if s["stage"] == "train"),
        "epsilon": None, "epsilon_by_hospital": None,
        "hospital_cpu_s": None, "hospital_cpu_max_s": None, "hospital_eval_cpu_s": None,
        "aggregator_cpu_s": None,
    }
    if rec.get("privacy"):
        eps = {h: p["epsilon"] for h, p in rec["privacy"].items()}
        out["epsilon_by_hospital"] = eps
        out["epsilon"] = max(eps.values())
    if cpu is not None and round_cpu is not None:
        per_h: dict[str, float] = defaultdict(float)
        per_h_eval: dict[str, float] = defaultdict(float)
        for (h, stage), sec in cpu.items():
            (per_h_eval if stage == "evaluate" else per_h)[h] += sec
        hs = rec["participants"] or sorted(per_h)
        vals = [per_h.get(h, 0.0) for h in hs]
        out["hospital_cpu_s"] = sum(vals) / max(1, len(vals))
        out["hospital_cpu_max_s"] = max(vals, default=0.0)
        out["hospital_eval_cpu_s"] = sum(per_h_eval.values()) / max(1, len(hs))
        out["aggregator_cpu_s"] = max(0.0, round_cpu - sum(cpu.values()))
    elif round_cpu is not None:  # hospitals elsewhere (Ray actors): the driver's CPU only
        out["aggregator_cpu_s"] = round_cpu
    return out


def mean(xs: list[float | None]) -> float | None:
    """Mean of the measured values (None ignored); None if none was measured."""
    v = [x for x in xs if x is not None]
    return sum(v) / len(v) if v else None


def summarize_arm(name: str, protection: str, dp: bool, doc: dict[str, Any],
                  rounds: list[dict[str, Any]], peak: int | None) -> dict[str, Any]:
    final = doc["final"]["global"]
    up = mean([r["bytes_up_per_hospital"] for r in rounds])
    down = mean([r["bytes_down_per_hospital"] for r in rounds])
    return {
        "arm": name, "protection": protection, "dp": dp,
        "final": {k: final.get(k) for k in UTILITY},
        "selected": ({"round": doc["selected"]["round"],
                      **{k: doc["selected"]["global"].get(k) for k in UTILITY}}
                     if doc.get("selected") else None),
        "epsilon": rounds[-1]["epsilon"] if dp else None,
        "bytes_up_per_hospital_round": up, "bytes_down_per_hospital_round": down,
        "bytes_per_hospital_round": (up or 0.0) + (down or 0.0),
        "protection_bytes_per_hospital_round": mean(
            [r["protection_bytes_up_per_hospital"] + r["protection_bytes_down_per_hospital"]
             for r in rounds]),
        "s_per_round": mean([r["round_s"] - r["evaluate_s"] for r in rounds]),
        "s_per_round_with_eval": mean([r["round_s"] for r in rounds]),
        "hospital_cpu_s_per_round": mean([r["hospital_cpu_s"] for r in rounds]),
        "aggregator_cpu_s_per_round": mean([r["aggregator_cpu_s"] for r in rounds]),
        "peak_memory_bytes": peak, "parameters": doc.get("parameters"),
        "seconds": doc.get("seconds"), "stopped": doc.get("stopped", ""),
        "time_ratio": None, "bytes_ratio": None, "cpu_ratio": None,
    }


def add_ratios(arms: list[dict[str, Any]]) -> None:
    """Time, bytes and hospital-CPU ratios to the ``none`` arm with the same DP setting."""
    base = {a["dp"]: a for a in arms if a["protection"] == "none"}
    for a in arms:
        b = base.get(a["dp"])
        if b is None:
            continue
        for key, src in (("time_ratio", "s_per_round"), ("bytes_ratio",
                                                          "bytes_per_hospital_round"),
                         ("cpu_ratio", "hospital_cpu_s_per_round")):
            if a.get(src) is not None and b.get(src):
                a[key] = a[src] / b[src]
