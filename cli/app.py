"""The ``fedrx`` click group, the shared consoles and options of its commands."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fedrx")
def app() -> None:
    """Privacy-hardened secure aggregation for federated medication recommendation."""


console = Console(stderr=True)
out = Console()

PathType = click.Path(path_type=Path)
data_option = click.option(
    "--data", default="mimic3-demo", show_default=True,
    help="mimic3-demo, eicu-demo, or a PATH (folder or .jsonl)",
)
mappings_option = click.option(
    "--mappings", type=PathType, default=None,
    help="folder with ndc2rxnorm_mapping.txt and ndc2atc_level4.csv(.gz)",
)


def ddi_for(spec: str, mappings: Path | None, ddi: Path | None):
    """The DDI graph for a run (see :func:`fedrx.medrx.datasets.find_ddi_pairs`), with a
    warning on the terminal when there is none."""
    from fedrx.medrx.datasets import find_ddi_pairs

    pairs, path = find_ddi_pairs(spec, mappings, ddi)
    if pairs is None:
        console.print("[yellow]warning:[/] no DDI graph found; DDI rate is reported as 0")
    return pairs, path


def metrics_table(title: str, rows: dict[str, dict]) -> Table:
    t = Table(title=title)
    t.add_column("method")
    for col in ("jaccard", "prauc", "f1", "precision", "recall", "ddi_rate", "avg_meds"):
        t.add_column(col, justify="right")
    for name, m in rows.items():
        t.add_row(name, *(f"{m[c]:.4f}" for c in
                          ("jaccard", "prauc", "f1", "precision", "recall", "ddi_rate")),
                  f"{m['avg_meds']:.2f}")
    return t
