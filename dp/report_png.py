"""The spending chart as PNG files beside ``budget.json`` (matplotlib, Agg backend):
``epsilon.png`` with every hospital (the chart of the HTML page) and ``epsilon_<h>.png``
per hospital. Integer round ticks, the budget line, refused rounds marked with a cross;
the same series as :func:`fedrx.dp.report_svg.series`. Same matplotlib, same ledgers:
same bytes (no date in the PNG metadata).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedrx.atomic import atomic_write_bytes
from fedrx.dp.report_svg import BUDGET, REFUSED, series


def _draw(ser: Sequence[Mapping[str, Any]], title: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=100)
    try:
        budgets = sorted({float(s["budget"]) for s in ser if s["budget"]})
        for b in budgets:
            ax.axhline(b, color=BUDGET, linestyle="--", linewidth=1.2, label=f"budget {b:g}")
        for s in ser:
            pts = s["points"]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color=s["colour"],
                    markersize=3, linewidth=2, label=s["hospital"])
        refused = [p for s in ser for p in s["refused"]]
        if refused:  # after the lines, so the legend lists the hospitals first
            ax.plot([p[0] for p in refused], [p[1] for p in refused], "x", color=REFUSED,
                    markersize=9, markeredgewidth=2.5, linestyle="none", label="refused round")
        top = max([p[1] for s in ser for p in s["points"]] + budgets + [0.0])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round")
        ax.set_ylabel("cumulative epsilon")
        ax.set_ylim(0, top * 1.08 if top > 0 else 1.0)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", color="#e5e5e5")
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
        return buf.getvalue()
    finally:
        plt.close(fig)


def write_pngs(report: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write ``epsilon.png`` then ``epsilon_<h>.png`` for each hospital; return the paths."""
    ser = series(report["hospitals"])
    deltas = ", ".join(f"{d:g}" for d in report["promise"]["deltas"]) or "-"
    paths = [Path(out_dir) / "epsilon.png"]
    atomic_write_bytes(paths[0], _draw(ser, f"Cumulative epsilon per hospital "
                                            f"(patient-level, delta {deltas})"))
    for s in ser:
        p = Path(out_dir) / f"epsilon_{s['hospital']}.png"
        atomic_write_bytes(p, _draw([s], f"{s['hospital']}: cumulative epsilon "
                                         "(patient-level)"))
        paths.append(p)
    return paths
