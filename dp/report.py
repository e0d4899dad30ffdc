"""The privacy officer's report (``fedrx budget report FOLDER... --out DIR``).

:func:`budget_report` reads every hospital ledger under the input folders (a run directory
``DIR/ledger/<hospital>.jsonl`` or one node folder per hospital), AUDITS them as
``fedrx audit`` does (:mod:`fedrx.dp.report_verify`) and writes into ``out_dir``:

* ``budget.json``: the report's content (``fedrx-budget-report/2``,
  :mod:`fedrx.dp.report_data`): the promise, the spending per round, the verification and
  its verdict, the commands that repeat it;
* ``budget.md``: a short Markdown summary;
* ``budget.html``: the self-contained page (:mod:`fedrx.dp.report_html`): the verdict on
  top (red when the audit found anything), the promise, the chart and per-round tables,
  the verification per hospital, how to reproduce it;
* ``epsilon.png`` (every hospital, the page's chart) and ``epsilon_<hospital>.png``.

Same inputs, same bytes: nothing in the files depends on the time or the host (paths are
shown as given).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedrx.atomic import atomic_write_text
from fedrx.dp.report_data import REPORT_FORMAT, build_report
from fedrx.dp.report_html import render_html
from fedrx.dp.report_png import write_pngs

__all__ = ["REPORT_FORMAT", "budget_report", "render_markdown"]


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def render_markdown(rep: Mapping[str, Any]) -> str:
    """A short Markdown summary (verdict, one row per hospital, the commands)."""
    cols = ["hospital", "mechanism", "accountant", "delta", "trained rounds",
            "refused rounds", "epsilon", "budget", "used", "verified"]
    md = ["# Privacy budget report", "", f"**{rep['verdict']['line']}**", ""]
    md += [f"- {x}" for x in rep["verdict"]["lines"]]
    md += ["", f"Inputs: `{', '.join(rep['inputs'])}`; fedrx {rep['fedrx_version']}. "
           "Privacy unit: patient. Full report: budget.html.", "",
           "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for s in rep["hospitals"]:
        md.append("| " + " | ".join([
            s["hospital"], ", ".join(s["mechanisms"]) or "-", s["accountant"] or "-",
            _fmt(s["delta"], "g"), str(s["trained_rounds"]), str(s["refused_rounds"]),
            _fmt(s["final_epsilon"], ".3f"), _fmt(s["budget_epsilon"], "g"),
            _fmt(s["budget_used"], ".0%"),
            "yes" if s["verification"]["ok"] else "**NO**"]) + " |")
    md += ["", "![cumulative epsilon per hospital](epsilon.png)", ""]
    md += [f"![{s['hospital']}](epsilon_{s['hospital']}.png)" for s in rep["hospitals"]]
    md += ["", "Re-verify:", "", "```sh", *rep["verify_commands"], "```", ""]
    return "\n".join(md)


def budget_report(run_dir: Path | Sequence[Path], out_dir: Path, *,
                  anchors: Path | None = None, federation: Path | None = None,
                  command: str | None = None) -> list[Path]:
    """Write the report files (see the module doc); return their paths: ``budget.json``,
    ``budget.md``, ``budget.html``, then the PNGs (``epsilon.png`` first).

    ``run_dir`` is one folder or a list (e.g. the gRPC deployment's node folders); one
    report covers all of them. ``anchors``/``federation`` are passed to the audit like
    ``fedrx audit --anchors/--federation`` (found beside the folders when omitted, see
    :func:`fedrx.dp.anchors.find_anchors`); ``command`` is the command line shown
    as the one that made the report. Raises :class:`~fedrx.errors.LedgerError` when there
    is no ledger, two folders hold the same hospital, or an anchors/federation file is
    unreadable. A ledger that fails the audit is still reported, with the failure on top."""
    folders = [Path(run_dir)] if isinstance(run_dir, (str, Path)) else \
        [Path(d) for d in run_dir]
    out = Path(out_dir)
    if command is None:
        cmd = ["fedrx", "budget", "report", *map(str, folders), "--out", str(out)]
        cmd += ["--anchors", str(anchors)] if anchors else []
        cmd += ["--federation", str(federation)] if federation else []
        command = shlex.join(cmd)
    rep = build_report(folders, anchors=anchors, federation=federation, command=command)
    out.mkdir(parents=True, exist_ok=True)
    jp, mp, hp = out / "budget.json", out / "budget.md", out / "budget.html"
    atomic_write_text(jp, json.dumps(rep, indent=1, sort_keys=True, allow_nan=False) + "\n")
    atomic_write_text(mp, render_markdown(rep))
    atomic_write_text(hp, render_html(rep))
    return [jp, mp, hp, *write_pngs(rep, out)]
