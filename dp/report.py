"""Privacy budget reports from a run directory's ledgers (``fedrx budget report``).

:func:`budget_report` reads ``DIR/ledger/<hospital>.jsonl`` (format in docs/ledger.md) and
writes into ``out_dir``:

* ``budget.json``: machine-readable, ``{"format": "fedrx-budget-report/1", "hospitals":
  [{"hospital", "rounds": [{"round", "status", "epsilon", "steps"}...], "final_epsilon",
  "budget_epsilon", "delta", "accountant", "privacy_unit", "trained_rounds",
  "refused_rounds", "budget_used"}...]}``;
* ``budget.md`` and ``budget.html``: a per-hospital table and the plots;
* ``epsilon_<hospital>.png``: cumulative epsilon against round with the budget line.

The report shows what the ledgers claim; it does not verify them (run ``fedrx audit``).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from fedrx.dp.ledger import check_hospital_id, read_entries
from fedrx.errors import LedgerError

REPORT_FORMAT = "fedrx-budget-report/1"


def _ledger_files(run_dirs: list[Path]) -> list[Path]:
    files = []
    for run_dir in run_dirs:
        led_dir = run_dir / "ledger" if (run_dir / "ledger").is_dir() else run_dir
        files += [p for p in led_dir.glob("*.jsonl") if not p.name.startswith(".")]
    names = [p.name for p in files]
    if len(set(names)) != len(names):
        raise LedgerError("two ledgers of the same hospital among the run directories")
    return sorted(files, key=lambda p: p.name)


def _summaries(run_dir: Path | list[Path]) -> list[dict[str, Any]]:
    dirs = [Path(d) for d in run_dir] if isinstance(run_dir, list) else [Path(run_dir)]
    files = _ledger_files(dirs)
    if not files:
        raise LedgerError(f"no ledgers under {', '.join(map(str, dirs))} "
                          "(expected DIR/ledger/<hospital>.jsonl)")
    out = []
    for p in files:
        hospital = check_hospital_id(p.name.removesuffix(".jsonl"))
        entries = read_entries(p)
        rounds = [{"round": e.get("round"), "status": e.get("status"),
                   "epsilon": e.get("epsilon"), "steps": e.get("steps")} for e in entries]
        last = entries[-1] if entries else {}
        budget = last.get("budget_epsilon")
        final = last.get("epsilon", 0.0)
        out.append({
            "hospital": hospital,
            "rounds": rounds,
            "final_epsilon": final,
            "budget_epsilon": budget,
            "delta": last.get("delta"),
            "accountant": last.get("accountant"),
            "privacy_unit": last.get("privacy_unit"),
            "trained_rounds": sum(1 for e in entries if e.get("status") == "trained"),
            "refused_rounds": sum(1 for e in entries if e.get("status") == "refused"),
            "budget_used": (final / budget) if budget else None,
        })
    return out


def _plot(s: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    tr = [r for r in s["rounds"] if r["status"] == "trained"]
    rf = [r for r in s["rounds"] if r["status"] == "refused"]
    ax.plot([r["round"] for r in s["rounds"]], [r["epsilon"] for r in s["rounds"]],
            "-", color="tab:blue", label="cumulative epsilon")
    ax.plot([r["round"] for r in tr], [r["epsilon"] for r in tr], "o", color="tab:blue",
            markersize=3)
    if rf:
        ax.plot([r["round"] for r in rf], [r["epsilon"] for r in rf], "x", color="tab:red",
                label="refused round")
    if s["budget_epsilon"]:
        ax.axhline(s["budget_epsilon"], color="tab:red", linestyle="--",
                   label=f"budget {s['budget_epsilon']:g}")
    ax.set_xlabel("round")
    ax.set_ylabel(f"epsilon (delta={s['delta']:g})" if s["delta"] else "epsilon")
    ax.set_title(f"{s['hospital']}: {s['accountant'] or ''} accountant, patient-level")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def budget_report(run_dir: Path | list[Path], out_dir: Path) -> list[Path]:
    """Write ``budget.json``, ``budget.md``, ``budget.html`` and one PNG per hospital;
    return the written paths (JSON, Markdown, HTML, then PNGs).

    ``run_dir`` may be a list of folders (e.g. the gRPC deployment's node folders, each
    holding ``ledger/<hospital>.jsonl`` of its own hospital): one report over all of them."""
    summaries = _summaries(run_dir)
    out_dir = Path(out_dir)
    if isinstance(run_dir, list):
        run_dir = ", ".join(str(d) for d in run_dir)  # type: ignore[assignment]
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = []
    for s in summaries:
        p = out_dir / f"epsilon_{s['hospital']}.png"
        _plot(s, p)
        pngs.append(p)
    jp = out_dir / "budget.json"
    jp.write_text(json.dumps({"format": REPORT_FORMAT, "hospitals": summaries}, indent=1,
                             sort_keys=True) + "\n", encoding="utf-8")
    cols = ["hospital", "privacy unit", "accountant", "delta", "trained rounds",
            "refused rounds", "epsilon", "budget", "used"]
    rows = [[s["hospital"], s["privacy_unit"] or "-", s["accountant"] or "-",
             _fmt(s["delta"], "g"), str(s["trained_rounds"]), str(s["refused_rounds"]),
             _fmt(s["final_epsilon"]), _fmt(s["budget_epsilon"], "g"),
             _fmt(s["budget_used"], ".0%")] for s in summaries]
    md = ["# Privacy budget report", "",
          f"Run directory: `{run_dir}`. Cumulative (epsilon, delta) per hospital as recorded "
          "in its signed ledger (verify with `fedrx audit`). Privacy unit: patient.", "",
          "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md.append("")
    for p in pngs:
        md += [f"![epsilon vs round]({p.name})", ""]
    mp = out_dir / "budget.md"
    mp.write_text("\n".join(md), encoding="utf-8")
    esc = html.escape
    table = "<table border=1 cellpadding=4><tr>" + "".join(f"<th>{esc(c)}</th>" for c in cols)
    table += "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"
    imgs = "".join(f'<p><img src="{esc(p.name)}" alt="epsilon vs round"></p>' for p in pngs)
    hp = out_dir / "budget.html"
    hp.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>Privacy budget report"
        f"</title></head><body><h1>Privacy budget report</h1><p>Run directory: "
        f"<code>{esc(str(run_dir))}</code>. Cumulative (epsilon, delta) per hospital as "
        "recorded in its signed ledger (verify with <code>fedrx audit</code>). Privacy unit: "
        f"patient.</p>{table}{imgs}</body></html>\n", encoding="utf-8")
    return [jp, mp, hp, *pngs]
