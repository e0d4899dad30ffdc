"""``OUT/plots/*.png`` of ``fedrx bench`` (matplotlib, Agg backend): utility, epsilon, bytes
and round time per round for every arm; cost against hospitals and model size; aggregator
peak memory against model size."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from fedrx.bench.records import UTILITY


def make_plots(doc: dict[str, Any], out: Path) -> list[str]:
    """Write the plots of the results document ``doc`` into ``out``; their paths
    relative to ``OUT`` (``plots/<name>.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(f"plots/{name}")

    arms = doc["arms"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, k in zip(axes.flat, UTILITY, strict=True):
        for a in arms:
            ax.plot([r["round"] for r in a["rounds"]], [r[k] for r in a["rounds"]],
                    marker="o", label=a["arm"])
        ax.set_title(k)
        ax.set_xlabel("round")
    axes.flat[0].legend(fontsize=8)
    save(fig, "utility.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for a in arms:
        if a["dp"]:
            ax.plot([r["round"] for r in a["rounds"]], [r["epsilon"] for r in a["rounds"]],
                    marker="o", label=a["arm"])
    ax.axhline(doc["config"]["epsilon"], color="grey", ls="--", label="target")
    ax.set_xlabel("round")
    ax.set_ylabel("epsilon (max over hospitals)")
    ax.legend(fontsize=8)
    save(fig, "epsilon.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, k, title in ((axes[0], "bytes_up_per_hospital", "up"),
                         (axes[1], "bytes_down_per_hospital", "down")):
        for a in arms:
            ax.plot([r["round"] for r in a["rounds"]], [r[k] for r in a["rounds"]],
                    marker="o", label=a["arm"])
        ax.set_yscale("log")
        ax.set_title(f"bytes {title} per hospital per round")
        ax.set_xlabel("round")
    axes[0].legend(fontsize=8)
    save(fig, "bytes.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for a in arms:
        ax.plot([r["round"] for r in a["rounds"]],
                [r["round_s"] - r["evaluate_s"] for r in a["rounds"]], marker="o",
                label=a["arm"])
    ax.set_xlabel("round")
    ax.set_ylabel("round wall time without evaluation (s)")
    ax.legend(fontsize=8)
    save(fig, "round_time.png")

    sc = doc.get("scaling")
    if sc:
        for part, xkey, xlabel, name in (("hospitals", "n", "hospitals", "scaling_hospitals.png"),
                                         ("model", "d", "parameters", "scaling_model.png")):
            fig, ax = plt.subplots(figsize=(7, 5))
            by: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for r in sc[part]:
                if "skipped" not in r:
                    by[r["scheme"]].append(r)
            for scheme, rows in by.items():
                xs = [r[xkey] for r in rows]
                ax.plot(xs, [r["hospital_s"] for r in rows], marker="o",
                        label=f"{scheme}: hospital")
                ax.plot(xs, [r["aggregator_s"] for r in rows], marker="s", ls="--",
                        label=f"{scheme}: aggregator")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("seconds per round")
            ax.legend(fontsize=7)
            save(fig, name)
        fig, ax = plt.subplots(figsize=(6, 4))
        by = defaultdict(list)
        for r in sc["model"]:
            if r.get("aggregator_peak_bytes"):
                by[r["scheme"]].append(r)
        for scheme, rows in by.items():
            ax.plot([r["d"] for r in rows], [r["aggregator_peak_bytes"] for r in rows],
                    marker="o", label=f"{scheme} aggregator peak")
        ds = sorted({r["d"] for r in sc["model"]})
        if ds:
            ax.plot(ds, [100 * d for d in ds], color="grey", ls=":", label="100 bytes x d")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("bytes")
        ax.legend(fontsize=8)
        save(fig, "memory_model.png")
    return written
