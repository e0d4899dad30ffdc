"""``fedrx audit`` and ``fedrx budget``: what a privacy officer runs."""

from __future__ import annotations

from pathlib import Path

import click

from fedrx.cli.app import PathType, app, out


@app.group("budget")
def budget_app() -> None:
    """Privacy-budget reports from a run's ledgers."""


@budget_app.command("report")
@click.argument("folders", nargs=-1, required=True, type=PathType)
@click.option("--out", "out_dir", type=PathType, required=True, help="report folder")
@click.option("--anchors", type=PathType,
              help="anchors file for the audit, as fedrx audit --anchors (default: found "
                   "beside each folder)")
@click.option("--federation", type=PathType,
              help="federation file pinning the keys, as fedrx audit --federation")
def budget_report_cmd(folders: tuple[Path, ...], out_dir: Path, anchors: Path | None,
                      federation: Path | None) -> None:
    """The privacy officer's report over run or node FOLDERS (one hospital or a whole
    federation): one self-contained budget.html (the promise, the spending per round, what
    the audit verified, red on top when it failed), the same as budget.json, budget.md and
    epsilon.png. Exit 0 when the audit is clean, 1 when it found problems (the report is
    written either way)."""
    import json
    import shlex

    from fedrx.dp.report import budget_report

    cmd = ["fedrx", "budget", "report", *map(str, folders), "--out", str(out_dir)]
    cmd += ["--anchors", str(anchors)] if anchors else []
    cmd += ["--federation", str(federation)] if federation else []
    paths = budget_report(list(folders), out_dir, anchors=anchors, federation=federation,
                          command=shlex.join(cmd))
    verdict = json.loads(paths[0].read_text(encoding="utf-8"))["verdict"]
    for p in paths:
        out.print(str(p))
    click.echo(verdict["line"])
    if not verdict["ok"]:
        raise click.exceptions.Exit(1)


@app.command("audit")
@click.argument("path", type=PathType)
@click.option("--anchors", type=PathType,
              help="JSON of anchored ledger heads (default: the anchors found beside the "
                   "run: aggregator anchors, the node's receipts, a simulation's results)")
@click.option("--federation", type=PathType,
              help="federation.json pinning the hospitals' keys and the aggregator's receipt "
                   "key (default: found in PATH or up to 3 folders above it, also in certs/, "
                   "else beside the anchors file)")
@click.option("--json", "json_out", type=PathType,
              help="also write the result as JSON (fedrx-audit/1) to this file")
def audit_cmd(path: Path, anchors: Path | None, federation: Path | None,
              json_out: Path | None) -> None:
    """Verify ledger signatures against the PINNED keys, the canonical form and hash chains,
    the anchored heads and their signed round receipts, and recompute epsilon independently
    (Google dp-accounting, PLD). One line per hospital says what was checked. Exit 0 when
    clean, non-zero otherwise."""
    from fedrx.dp.audit import run_audit
    from fedrx.dp.audit_report import format_audit

    result = run_audit(path, anchors, federation)
    if json_out is not None:
        import json

        from fedrx.atomic import atomic_write_text

        atomic_write_text(json_out, json.dumps(result.to_json(), indent=1) + "\n")
    click.echo(format_audit(result))  # not rich: findings may hold [...] and long lines
    if result.exit_code:
        raise click.exceptions.Exit(result.exit_code)
