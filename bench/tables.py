"""Markdown table rows of ``fedrx bench`` (arms, epsilon sweep, headline lines).

Cells: 4 decimals for metrics, 3 for seconds and epsilon, bytes with SI units (kB, MB,
GB), ratios as ``1.23x``; ``-`` where a value was not measured, ``n/a`` for hospital CPU on
the Ray backend (not measurable from the driver).
"""

from __future__ import annotations

from typing import Any


def fmt(v: Any, spec: str = ".4f") -> str:
    """``v`` formatted with ``spec``, ``-`` for None."""
    return "-" if v is None else format(v, spec)


def nbytes(v: float | None) -> str:
    """A byte count with an SI unit (``1.50 MB``), ``-`` for None."""
    if v is None:
        return "-"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= div:
            return f"{v / div:.2f} {unit}"
    return f"{v:.0f} B"


def ratio(v: float | None) -> str:
    """``1.23x``, ``-`` for None."""
    return "-" if v is None else f"{v:.2f}x"


ARM_HEADER = ("| arm | jaccard | prauc | f1 | ddi rate | selected (val) jaccard, round "
              "| epsilon | bytes/hospital/round "
              "| up | down | s/round | time x none | bytes x none | hospital CPU s/round "
              "| aggregator CPU s/round | peak RSS |")


def _selected(sel: dict[str, Any] | None) -> str:
    return "-" if not sel else f"{fmt(sel.get('jaccard'))}, {sel['round']}"


def _hospital_cpu(a: dict[str, Any]) -> str:
    """Hospital CPU s/round; ``n/a`` on Ray, where hospitals run in actors the driver cannot
    meter (never the driver's CPU in its place)."""
    v = a.get("hospital_cpu_s_per_round")
    return "n/a" if v is None and a.get("backend") == "ray" else fmt(v, ".3f")


def arms_table(arms: list[dict[str, Any]]) -> list[str]:
    """The arms table (header, rule, one row per arm summary)."""
    lines = [ARM_HEADER, "|" + "---|" * ARM_HEADER.count(" | ") + "---|"]
    for a in arms:
        f = a["final"]
        lines.append(
            f"| {a['arm']} | {fmt(f['jaccard'])} | {fmt(f['prauc'])} | {fmt(f['f1'])} | "
            f"{fmt(f['ddi_rate'])} | {_selected(a.get('selected'))} | "
            f"{fmt(a['epsilon'], '.3f')} | "
            f"{nbytes(a['bytes_per_hospital_round'])} | "
            f"{nbytes(a['bytes_up_per_hospital_round'])} | "
            f"{nbytes(a['bytes_down_per_hospital_round'])} | {fmt(a['s_per_round'], '.3f')} "
            f"| {ratio(a['time_ratio'])} | {ratio(a['bytes_ratio'])} | "
            f"{_hospital_cpu(a)} | "
            f"{fmt(a['aggregator_cpu_s_per_round'], '.3f')} | "
            f"{nbytes(a['peak_memory_bytes'])} |")
    return lines


def sweep_table(rows: list[dict[str, Any]]) -> list[str]:
    """The epsilon-sweep table (one row per :func:`fedrx.bench.sweep.accuracy_row`)."""
    lines = ["| target epsilon | epsilon spent (max over hospitals) | noise multiplier (mean) "
             "| test jaccard | prauc | f1 | s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        target = "no DP" if r["epsilon_target"] is None else format(r["epsilon_target"], "g")
        lines.append(f"| {target} | {fmt(r['epsilon_spent'], '.3f')} | "
                     f"{fmt(r['noise_multiplier'], '.3f')} | {fmt(r['jaccard'])} | "
                     f"{fmt(r['prauc'])} | {fmt(r['f1'])} | {fmt(r['seconds'], '.1f')} |")
    return lines


def headline(arms: list[dict[str, Any]]) -> list[str]:
    """One line per protected arm: round time, bytes and Jaccard against none."""
    base = {a["dp"]: a for a in arms if a["protection"] == "none"}
    lines = []
    for a in arms:
        b = base.get(a["dp"])
        if a["protection"] == "none" or b is None:
            continue
        dj = (a["final"]["jaccard"] or 0.0) - (b["final"]["jaccard"] or 0.0)
        cpu = ("n/a (Ray actors)" if a["cpu_ratio"] is None and a.get("backend") == "ray"
               else ratio(a["cpu_ratio"]))
        lines.append(f"{a['arm']} over {b['arm']}: round time {ratio(a['time_ratio'])} "
                     f"(with evaluation "
                     f"{ratio(a['s_per_round_with_eval'] / b['s_per_round_with_eval'])}), "
                     f"bytes {ratio(a['bytes_ratio'])}, hospital CPU "
                     f"{cpu}, final Jaccard {dj:+.4f}")
    return lines
