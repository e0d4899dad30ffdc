"""The ``fedrx`` command line.

Every user mistake (bad data, bad config, bad flag) ends as ONE line on stderr,
``fedrx: error: ...``, and a non-zero exit code; never a traceback. Commands live in
:mod:`fedrx.cli.data`, :mod:`fedrx.cli.privacy`, :mod:`fedrx.cli.deploy` and
:mod:`fedrx.cli.bench`; training and simulation here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.table import Table

import fedrx.cli.data  # noqa: F401  (each module registers its commands on app)
import fedrx.cli.deploy  # noqa: F401
import fedrx.cli.privacy  # noqa: F401
from fedrx.cli.app import (
    PathType,
    app,
    console,
    data_option,
    ddi_for,
    mappings_option,
    metrics_table,
    out,
)
from fedrx.cli.bench import bench
from fedrx.errors import ConfigError, FedrxError

app.add_command(bench)


@app.command()
@data_option
@click.option("--json", "json_out", type=PathType, help="write results (JSON) here")
@click.option("--config", type=PathType, help="TOML file with a [train] table")
@click.option("--model", type=click.Choice(["mlp", "logreg"]), help="model kind")
@click.option("--epochs", type=int, help="maximum epochs")
@click.option("--batch-size", type=int, help="visits per minibatch")
@click.option("--lr", type=float, help="Adam learning rate")
@click.option("--hidden", type=int, help="hidden width")
@click.option("--seed", type=int, help="seed for split, init and batch order")
@click.option("--min-visits", type=int, default=1, show_default=True,
              help="drop patients with fewer visits (GAMENet used 2)")
@mappings_option
@click.option("--ddi", type=PathType, help="DDI pairs CSV (atc3_a,atc3_b)")
@click.option("--save-model", type=PathType, help="write the model's weights (.npz, no pickle)")
def train(data, json_out, config, model, epochs, batch_size, lr, hidden, seed, min_visits,
          mappings, ddi, save_model) -> None:
    """Centralized training of the recommender, plus logistic-regression and
    copy-last-visit baselines; prints a test-metrics table."""
    from rich.progress import Progress

    from fedrx.atomic import atomic_write_text
    from fedrx.config import build, section
    from fedrx.medrx.datasets import load_dataset
    from fedrx.medrx.train import TrainConfig, train_centralized

    cfg = build(TrainConfig, section(config, "train"), {
        "model": model, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "hidden": hidden, "seed": seed,
    })
    cfg.validate()
    for target in (json_out, save_model):
        if target is not None and target.is_dir():
            raise ConfigError(f"{target} is a folder; give a file name")
    cohort = load_dataset(data, mappings_dir=mappings, min_visits=min_visits)
    pairs, ddi_path = ddi_for(data, mappings, ddi)
    console.print(f"[bold]{cohort.name}[/]: {len(cohort.patients)} patients, "
                  f"{cohort.n_visits} visits, {len(cohort.hospitals)} hospital(s)")
    with Progress(console=console, transient=True) as prog:
        task = prog.add_task("training", total=cfg.epochs)

        def step(kind: str, epoch: int, loss: float, score: float) -> None:
            prog.update(task, completed=epoch,
                        description=f"{kind} epoch {epoch} loss {loss:.4f} val jaccard {score:.4f}")

        result, vocab, best = train_centralized(cohort, cfg, pairs, progress=step)
    out.print(metrics_table(f"test metrics: {cohort.name} ({result.sizes['test_patients']} "
                            f"patients, {result.sizes['test_visits']} visits)", result.test))
    payload = result.as_dict()
    payload["ddi_file"] = str(ddi_path) if ddi_path else None
    payload["reader_stats"] = cohort.stats
    if save_model is not None:
        from fedrx.medrx.modelio import save_model as _save

        payload["model_sha256"] = _save(save_model, best, {
            "model": cfg.model, "hidden": cfg.hidden, "vocab_sizes": list(vocab.sizes)})
        vocab.save(save_model.with_suffix(".vocab.json"))
        console.print(f"model written to {save_model}")
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(payload, indent=1, sort_keys=True) + "\n")
        console.print(f"results written to {json_out}")


@app.command()
@click.option("--data", help="mimic3-demo, eicu-demo, or a PATH  [mimic3-demo]")
@click.option("--hospitals", type=int, help="number of hospitals (split or merge sites)")
@click.option("--rounds", type=int, help="federation rounds  [10]")
@click.option("--protection", help="none, mask or ckks  [none]")
@click.option("--seed", type=int, help="seed  [0]")
@click.option("--out", help="output folder  [runs/simulate]")
@click.option("--local-epochs", type=int, help="local epochs per round  [1]")
@click.option("--lr", type=float, help="client learning rate  [1e-3]")
@click.option("--server-optimizer", help="fedavg or fedadam  [fedavg]")
@click.option("--server-lr", type=float, help="server learning rate  [1.0]")
@click.option("--partition", help="iid or skew (single-site data only)  [iid]")
@click.option("--min-patients", type=int,
              help="merge sites smaller than this (1: every site with data is its own "
                   "hospital; below 3 patients it trains only)  [20]")
@click.option("--drop", help="fault injection: HOSPITAL@STAGE:ROUND[,...]")
@click.option("--clip-norm", type=float,
              help="mask: L2 bound on each hospital's model delta  [10.0]")
@click.option("--threshold", type=int, help="mask: Shamir threshold t  [floor(2n/3)+1]")
@click.option("--rounding-seed", type=int,
              help="mask: reproducible rounding coins (research runs only; default: OS)")
@click.option("--dp", "dp", type=click.Choice(["on", "off", "distributed"]), default=None,
              help="patient-level DP: on = DP-SGD at every hospital on its own; distributed = "
                   "one DP-SGD step of the whole federation per round, noise shared under "
                   "mask or ckks  [off]")
@click.option("--dp-k", type=int,
              help="distributed DP: hospitals that may collude with the aggregator or drop, "
                   "together; shares are sized for n-k honest survivors  [0]")
@click.option("--dp-sample-rate", type=float,
              help="distributed DP: common patient sampling rate q  [dp-batch / patients]")
@click.option("--eval-every", type=int, help="evaluate every this many rounds  [1]")
@click.option("--epsilon", type=float, help="DP: target epsilon for the whole run  [8]")
@click.option("--delta", type=float, help="DP: delta  [below 1/patients]")
@click.option("--max-grad-norm", type=float, help="DP: per-patient clipping norm C  [1.0]")
@click.option("--dp-batch", type=int,
              help="DP: expected patients per batch, capped at half a hospital's  [128]")
@click.option("--accountant", type=click.Choice(["pld", "prv", "rdp"]), help="DP accountant  [pld]")
@click.option("--vocabulary", type=click.Choice(["data", "public"]),
              help="data: from the hospitals' training patients; public: ICD/ATC categories "
                   "of the code systems, reveals nothing about any hospital  [data]")
@click.option("--centralized/--no-centralized", default=None,
              help="also train centrally on the same split, for comparison")
@click.option("--backend", type=click.Choice(["inprocess", "ray"]),
              help="inprocess, or ray: hospitals in Ray worker actors (fedrx[ray])  [inprocess]")
@click.option("--ray-address",
              help="--backend ray: the cluster to join (with --dp, --out must be a folder "
                   "every node mounts at the same path)  [a local Ray]")
@click.option("--stage-deadline", type=float,
              help="--backend ray: seconds a stage waits for its hospitals; later ones have "
                   "dropped  [3600]")
@click.option("--config", type=PathType, help="TOML file with a [simulate] table")
def simulate(config, **flags) -> None:
    """Run a federation in one process with the real protocol and cryptography."""

    from fedrx.config import build, section
    from fedrx.medrx.task import METRIC_NAMES as METRIC_KEYS
    from fedrx.nodes.simulate import SimulationConfig, run_simulation

    if flags.get("dp") is not None:
        if flags["dp"] == "distributed":
            flags["dp_mode"] = "distributed"
        flags["dp"] = flags["dp"] != "off"
    table = section(config, "simulate")
    if (flags.get("dp_mode") or (table or {}).get("dp_mode")) == "distributed":
        from fedrx.medrx.task import DP_DEFAULTS  # DP-aware defaults, unless set

        for key, val in DP_DEFAULTS.items():
            if flags.get(key) is None and key not in (table or {}):
                flags[key] = val
    cfg = build(SimulationConfig, table, flags)
    cfg.budget_store = cfg.budget_store or "auto"  # DP runs on the same patients: one budget
    cfg.validate()
    table = Table(title=f"fedrx simulate: {cfg.data}, protection {cfg.protection}")
    for col in ("round", "status", "contrib.", "dropped", "jaccard", "prauc", "f1",
                "ddi", "s"):
        table.add_column(col, justify="right")

    def progress(rec: dict) -> None:
        m = rec["metrics"]
        dropped = ",".join(sorted(rec["dropped"])) or "-"
        console.print(
            f"round {rec['round']:>3}  {rec['status']:<9} contributors "
            f"{len(rec['contributors'])}/{len(rec['participants'])}  dropped {dropped}  "
            + "  ".join(f"{k} {m[k]:.4f}" for k in ("jaccard", "prauc", "f1") if k in m)
            + f"  ({rec['seconds']:.1f} s)" + (f"  reason: {rec['reason']}" if rec["reason"]
                                               else ""))
        table.add_row(str(rec["round"]), rec["status"], str(len(rec["contributors"])),
                      dropped, *(f"{m[k]:.4f}" if k in m else "-"
                                 for k in ("jaccard", "prauc", "f1", "ddi_rate")),
                      f"{rec['seconds']:.1f}")

    doc = run_simulation(cfg, progress)
    out.print(table)
    if "centralized" in doc:
        out.print(metrics_table("centralized on the same split", doc["centralized"]))
    final = doc["final"]["global"]
    out.print("final global model: " + "  ".join(f"{k} {final[k]:.4f}" for k in METRIC_KEYS
                                                 if k in final))
    sel = doc.get("selected")
    if sel:
        out.print(f"selected model (best validation jaccard, round {sel['round']}, "
                  "selected_model.npy): " + "  ".join(
                      f"{k} {sel['global'][k]:.4f}" for k in METRIC_KEYS if k in sel["global"]))
    if doc.get("dp"):
        out.print("epsilon spent: " + ", ".join(f"{h} {d['epsilon']:.3f}/{d['budget_epsilon']:g}"
                                              for h, d in doc["dp"].items()))
    if doc.get("stopped"):
        console.print(f"[yellow]{doc['stopped']}[/]")
    console.print(f"results: {Path(cfg.out) / 'results.json'}, "
                  f"summary: {Path(cfg.out) / 'summary.md'}"
                  + (f", ledgers: {Path(cfg.out) / 'ledger'}" if doc.get("dp") else ""))


def main(argv: list[str] | None = None) -> int:
    """Console entry point: runs the app, turning user errors into one line."""
    try:
        rv = app.main(args=argv, prog_name="fedrx", standalone_mode=False)
    except click.exceptions.Abort:
        print("fedrx: aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("fedrx: interrupted", file=sys.stderr)
        return 130
    except FedrxError as exc:
        print(f"fedrx: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except click.ClickException as exc:
        print(f"fedrx: error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    return rv if isinstance(rv, int) else 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
