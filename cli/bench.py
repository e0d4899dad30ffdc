"""``fedrx bench``: every protection x DP arm on the same split, micro-benchmarks against this
machine's floors, and scaling with hospitals and model size (logic: :mod:`fedrx.bench`)."""

from __future__ import annotations

from pathlib import Path

import click

from fedrx.errors import ConfigError


@click.command("bench")
@click.option("--protection", "protections", default="none,mask,ckks", show_default=True,
              help="comma-separated protection levels (none, mask, ckks)")
@click.option("--dp", "dp", default="off,on", show_default=True,
              help="DP settings to cross with them: off, on or off,on")
@click.option("--hospitals", type=int, help="number of hospitals  [3]")
@click.option("--rounds", type=int, help="federation rounds  [10; --quick 2]")
@click.option("--hidden", type=int, help="hidden width of the model  [128; --quick 16]")
@click.option("--data", default="mimic3-demo", show_default=True,
              help="mimic3-demo, eicu-demo, or a PATH")
@click.option("--out", "out_dir", default="runs/bench", show_default=True,
              help="output folder (new or empty; see --overwrite)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of every arm")
@click.option("--epsilon", type=float, default=8.0, show_default=True,
              help="DP arms: target epsilon for the whole run")
@click.option("--epsilon-sweep", "sweep",
              help="test Jaccard at these epsilons and without DP (protection none), "
                   "e.g. 1,3,8; 'none' to skip  [1,3,8; --quick none]")
@click.option("--quick", is_flag=True, help="tiny sizes: under 3 minutes on 2 cores")
@click.option("--ci", is_flag=True, hidden=True, help="CI-sized run (tests)")
@click.option("--micro/--no-micro", default=True, help="micro-benchmarks against the floors")
@click.option("--scaling/--no-scaling", default=True,
              help="scaling with hospitals and model size")
@click.option("--deploy", is_flag=True,
              help="real node processes over gRPC on loopback (no epsilon sweep)")
@click.option("--overwrite", is_flag=True, help="reuse a non-empty --out (replaces its runs)")
@click.option("--backend", default="inprocess", show_default=True,
              help="the arms' hospitals: inprocess, or ray (Ray worker actors, fedrx[ray]; "
                   "hospital CPU is then not measured)")
@click.option("--ray-address", default="",
              help="--backend ray: the cluster to join  [a local Ray]")
def bench(protections, dp, hospitals, rounds, hidden, data, out_dir, seed, epsilon, sweep,
          quick, ci, micro, scaling, deploy, overwrite, backend, ray_address) -> None:
    """Compare protection levels side by side (utility, epsilon, bytes, time, CPU,
    memory) and measure how their cost scales; writes results.json, bench.md and plots."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from fedrx.bench.config import BenchConfig, parse_dp, parse_epsilons, parse_protections
    from fedrx.bench.run import plan_units, run_bench
    from fedrx.bench.tables import arms_table

    if quick and ci:
        raise ConfigError("--quick and --ci are exclusive")
    cfg = BenchConfig(protections=parse_protections(protections), dp=parse_dp(dp),
                      data=data, hospitals=hospitals, rounds=rounds, hidden=hidden, seed=seed,
                      epsilon=epsilon, out=out_dir,
                      preset="ci" if ci else "quick" if quick else "full", deploy=deploy,
                      micro=micro, scaling=scaling,
                      sweep=None if sweep is None else parse_epsilons(sweep),
                      overwrite=overwrite, backend=backend,
                      ray_address=ray_address).resolve()
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
            "{task.completed}/{task.total}"), TimeElapsedColumn(), console=console,
                  transient=True) as prog:
        task = prog.add_task("fedrx bench", total=plan_units(cfg))

        def tick(desc: str) -> None:
            prog.update(task, advance=1, description=desc)

        doc = run_bench(cfg, tick)
    out = Console()
    out.print("\n".join(arms_table(doc["arms"])), markup=False, highlight=False)
    for line in doc.get("headline") or []:
        out.print(line, markup=False, highlight=False)
    console.print(f"{doc['seconds']:.0f} s; results: {Path(out_dir) / 'results.json'}, table: "
                  f"{Path(out_dir) / 'bench.md'}, plots: {Path(out_dir) / 'plots'}")
