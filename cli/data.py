"""``fedrx data``: read, inspect, export and synthesise EHR data."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from fedrx.cli.app import PathType, app, console, mappings_option, out
from fedrx.errors import ConfigError


@app.group("data")
def data_app() -> None:
    """Read, inspect, export and synthesise EHR data."""


@data_app.command("inspect")
@click.argument("data")
@mappings_option
def data_inspect(data: str, mappings: Path | None) -> None:
    """Read DATA (mimic3-demo, eicu-demo, or a PATH) and print per-hospital counts."""
    from fedrx.medrx.datasets import load_dataset

    cohort = load_dataset(data, mappings_dir=mappings)
    t = Table(title=f"{cohort.name}: {len(cohort.patients)} patients, {cohort.n_visits} visits")
    for col in ("hospital", "patients", "visits", "labels/visit", "dx/visit", "px/visit"):
        t.add_column(col, justify="right")
    for h, pts in cohort.by_hospital().items():
        visits = [v for p in pts for v in p.visits]
        n = max(len(visits), 1)
        t.add_row(h, str(len(pts)), str(len(visits)),
                  f"{sum(len(v.labels) for v in visits) / n:.1f}",
                  f"{sum(len(v.diagnoses) for v in visits) / n:.1f}",
                  f"{sum(len(v.procedures) for v in visits) / n:.1f}")
    out.print(t)
    for k, v in sorted(cohort.stats.items()):
        out.print(f"  {k}: {v}")


@data_app.command("export")
@click.argument("data")
@click.option("--out", "out_path", type=PathType, required=True,
              help="canonical records file (.jsonl)")
@mappings_option
def data_export(data: str, out_path: Path, mappings: Path | None) -> None:
    """Write DATA as canonical visit records (JSON Lines, one patient per line)."""
    from fedrx.medrx.datasets import load_dataset
    from fedrx.medrx.records import write_jsonl

    if out_path.suffix != ".jsonl":
        raise ConfigError(f"--out must end in .jsonl, got {out_path.name}")
    cohort = load_dataset(data, mappings_dir=mappings)
    write_jsonl(out_path, cohort.patients)
    console.print(f"{len(cohort.patients)} patients written to {out_path}")


@data_app.command("synth")
@click.option("--out", "out_dir", type=PathType, required=True,
              help="output folder (must be new or empty)")
@click.option("--hospitals", type=int, help="number of hospitals [5]")
@click.option("--patients", type=int, help="patients in total [5000]")
@click.option("--seed", type=int, help="generator seed [0]")
@click.option("--size-skew", type=float, help="0 = equal hospital sizes")
@click.option("--case-mix-skew", type=float,
              help="Dirichlet concentration of the case mix (small = more non-IID)")
@click.option("--prescribing-skew", type=float,
              help="probability a hospital substitutes its own preferred drug")
@click.option("--catalogue", type=click.Choice(["auto", "demo", "builtin"]),
              help="codes: the MIMIC-III demo's (demo), fedrx's built-in synthetic ones "
                   "(builtin), or the demo if found, else built-in (auto) [auto]")
@click.option("--overwrite", is_flag=True, help="replace a non-empty --out")
@click.option("--config", type=PathType, help="TOML file with a [synth] table")
def data_synth(out_dir, hospitals, patients, seed, size_skew, case_mix_skew,
               prescribing_skew, catalogue, overwrite, config) -> None:
    """Generate a seeded synthetic multi-hospital EHR in the MIMIC-III CSV layout."""
    import time

    from fedrx.config import build, section
    from fedrx.medrx.synth.builtin import BUILTIN_NOTE
    from fedrx.medrx.synth.config import SynthConfig
    from fedrx.medrx.synth.writer import generate

    cfg = build(SynthConfig, section(config, "synth"), {
        "hospitals": hospitals, "patients": patients, "seed": seed, "size_skew": size_skew,
        "case_mix_skew": case_mix_skew, "prescribing_skew": prescribing_skew,
        "catalogue": catalogue,
    })
    t0 = time.perf_counter()
    summary = generate(cfg, out_dir, overwrite=overwrite)
    if summary.catalogue == "builtin":
        why = "no MIMIC-III demo found" if cfg.catalogue == "auto" else "--catalogue builtin"
        console.print(f"{why}: using fedrx's built-in synthetic code catalogue "
                      f"({BUILTIN_NOTE})", markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {sum(summary.patients.values())} patients in "
                  f"{len(summary.hospitals)} hospitals to {out_dir} "
                  f"({time.perf_counter() - t0:.1f} s)")


@data_app.command("split")
@click.argument("src", type=PathType)
@click.option("--by", type=click.Choice(["site", "random"]), required=True,
              help="site: one export per hospital id (eICU; OMOP care sites); "
                   "random: a seeded patient split")
@click.option("--hospitals", type=int, required=True,
              help="number of exports (site: the N largest sites)")
@click.option("--out", "out_dir", type=PathType, required=True,
              help="output folder (must be new or empty)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of --by random")
@click.option("--format", "fmt", type=click.Choice(["auto", "mimic3", "mimic4", "eicu", "omop"]),
              default="auto", show_default=True, help="layout of SRC")
def data_split(src: Path, by: str, hospitals: int, out_dir: Path, seed: int, fmt: str) -> None:
    """Split the EHR export SRC into one export per hospital, in SRC's own layout (same file
    names, headers and compression, rows filtered), with a split.json manifest."""
    from fedrx.medrx.export_split import MANIFEST, split_export

    m = split_export(src, out_dir, by=by, hospitals=hospitals, seed=seed, fmt=fmt)
    for name, h in m["hospitals"].items():
        stays = f" ({h['stays']:,} stays)" if "stays" in h else ""
        out.print(f"{name}: {h['patients']:,} patients{stays}, {h['rows']:,} rows -> "
                  f"{out_dir / name}", markup=False, highlight=False, soft_wrap=True)
    notes = [f"{len(m['hospitals'])} {m['layout']} exports ({m['method']}) in {out_dir}, "
             f"manifest {out_dir / MANIFEST}"]
    if m.get("dropped_cross_site_stays"):
        notes.append(f"{m['dropped_cross_site_stays']} stays at a site other than the "
                     "patient's first are not exported")
    if "mappings/" in m["not_copied"]:
        notes.append(f"mappings/ not copied: point each node's --mappings at {src / 'mappings'}")
    out.print("; ".join(notes), markup=False, highlight=False, soft_wrap=True)
