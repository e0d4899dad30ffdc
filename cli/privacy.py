"""``fedrx audit`` and ``fedrx budget``: what a privacy officer runs."""

from __future__ import annotations

from pathlib import Path

import click

from fedrx.cli.app import PathType, app, out


@app.group("budget")
def budget_app() -> None:
    """Privacy-budget reports from a run's ledgers."""


@budget_app.command("report")
@click.argument("run_dir", type=PathType)
@click.option("--out", "out_dir", type=PathType, required=True, help="report folder")
def budget_report_cmd(run_dir: Path, out_dir: Path) -> None:
    """Markdown, HTML, JSON and PNG plots of epsilon per round for every hospital."""
    from fedrx.dp.report import budget_report

    paths = budget_report(run_dir, out_dir)
    for p in paths:
        out.print(str(p))


@app.command("audit")
@click.argument("path", type=PathType)
@click.option("--anchors", type=PathType, help="JSON of anchored ledger heads")
@click.option("--federation", type=PathType,
              help="federation.json pinning the aggregator's receipt key (default: found "
                   "beside the anchors file or up to 3 folders above it, also in certs/)")
def audit_cmd(path: Path, anchors: Path | None, federation: Path | None) -> None:
    """Verify ledger signatures and hash chains and recompute epsilon independently
    (Google dp-accounting, PLD); with --anchors also the aggregator's signed round receipts
    they carry. Exit 0 when clean, non-zero otherwise."""
    from fedrx.dp.audit import run_audit
    from fedrx.dp.audit_report import format_audit

    result = run_audit(path, anchors, federation)
    click.echo(format_audit(result))  # not rich: findings may hold [...] and long lines
    if result.exit_code:
        raise click.exceptions.Exit(result.exit_code)
