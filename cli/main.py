"""The ``fedrx`` command line.

Every user mistake (bad data, bad config, bad flag) ends as ONE line on stderr,
``fedrx: error: ...``, and a non-zero exit code; never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from fedrx.errors import ConfigError, FedrxError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fedrx")
def app() -> None:
    """Privacy-hardened secure aggregation for federated medication recommendation."""


@app.group("data")
def data_app() -> None:
    """Read, inspect, export and synthesise EHR data."""


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


def _ddi_for(spec: str, mappings: Path | None, ddi: Path | None):
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
    pairs, ddi_path = _ddi_for(data, mappings, ddi)
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
@click.option("--min-patients", type=int, help="merge sites smaller than this  [20]")
@click.option("--drop", help="fault injection: HOSPITAL@STAGE:ROUND[,...]")
@click.option("--clip-norm", type=float,
              help="mask: L2 bound on each hospital's model delta  [10.0]")
@click.option("--threshold", type=int, help="mask: Shamir threshold t  [floor(2n/3)+1]")
@click.option("--rounding-seed", type=int,
              help="mask: reproducible rounding coins (research runs only; default: OS)")
@click.option("--dp", "dp", type=click.Choice(["on", "off"]), default=None,
              help="patient-level DP-SGD at every hospital  [off]")
@click.option("--epsilon", type=float, help="DP: target epsilon for the whole run  [8]")
@click.option("--delta", type=float, help="DP: delta  [below 1/patients]")
@click.option("--max-grad-norm", type=float, help="DP: per-patient clipping norm C  [1.0]")
@click.option("--dp-batch", type=int,
              help="DP: expected patients per batch, capped at half a hospital's  [128]")
@click.option("--accountant", type=click.Choice(["prv", "rdp"]), help="DP accountant  [prv]")
@click.option("--centralized/--no-centralized", default=None,
              help="also train centrally on the same split, for comparison")
@click.option("--config", type=PathType, help="TOML file with a [simulate] table")
def simulate(config, **flags) -> None:
    """Run a federation in one process with the real protocol and cryptography."""
    from rich.table import Table

    from fedrx.config import build, section
    from fedrx.medrx.task import METRIC_NAMES as METRIC_KEYS
    from fedrx.nodes.simulate import SimulationConfig, run_simulation

    if flags.get("dp") is not None:
        flags["dp"] = flags["dp"] == "on"
    cfg = build(SimulationConfig, section(config, "simulate"), flags)
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


from fedrx.cli.bench import bench as _bench  # noqa: E402

app.add_command(_bench)


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
    from fedrx.dp.audit import audit_command

    code = audit_command(path, anchors, federation)
    if code:
        raise click.exceptions.Exit(code)


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
@click.option("--overwrite", is_flag=True, help="replace a non-empty --out")
@click.option("--config", type=PathType, help="TOML file with a [synth] table")
def data_synth(out_dir, hospitals, patients, seed, size_skew, case_mix_skew,
               prescribing_skew, overwrite, config) -> None:
    """Generate a seeded synthetic multi-hospital EHR in the MIMIC-III CSV layout."""
    import time

    from fedrx.config import build, section
    from fedrx.medrx.synth.config import SynthConfig
    from fedrx.medrx.synth.writer import generate

    cfg = build(SynthConfig, section(config, "synth"), {
        "hospitals": hospitals, "patients": patients, "seed": seed, "size_skew": size_skew,
        "case_mix_skew": case_mix_skew, "prescribing_skew": prescribing_skew,
    })
    t0 = time.perf_counter()
    summary = generate(cfg, out_dir, overwrite=overwrite)
    console.print(f"wrote {sum(summary.patients.values())} patients in "
                  f"{len(summary.hospitals)} hospitals to {out_dir} "
                  f"({time.perf_counter() - t0:.1f} s)")


# ----------------------------------------------------------------------------------------
# gRPC deployment (fedrx.nodes): certs init, aggregator serve, node run, demo grpc.
# Thin wrappers; the logic lives in fedrx.nodes.*.


@app.group("certs")
def certs_app() -> None:
    """Certificates and the pinned federation file for a gRPC deployment."""


@certs_app.command("init")
@click.option("--out", "out_dir", type=PathType, required=True, help="folder for keys + certs")
@click.option("--hospitals", required=True, help="comma-separated hospital ids, e.g. h1,h2,h3")
@click.option("--days", type=int, default=825, show_default=True, help="certificate lifetime")
def certs_init(out_dir: Path, hospitals: str, days: int) -> None:
    """Create a CA, mutual-TLS certificates, hospital identities and federation.json."""
    from fedrx.nodes.certs import init_certs

    dep = init_certs(out_dir, hospitals.split(","), days=days)
    console.print(f"CA, aggregator and {len(dep.hospitals)} hospital certificates + "
                  f"identities written to {out_dir}; federation file "
                  f"{out_dir / 'federation.json'} (id {dep.federation_id[:16]})")


@app.group("aggregator")
def aggregator_app() -> None:
    """The aggregator of a gRPC deployment."""


@aggregator_app.command("serve")
@click.option("--config", type=PathType, required=True,
              help="TOML with [aggregator] and [task]")
@click.option("--insecure", is_flag=True, help="plaintext gRPC (testing only; no TLS)")
def aggregator_serve(config: Path, insecure: bool) -> None:
    """Serve hospitals over mutual TLS and run the federation's rounds."""
    from fedrx.nodes.aggregator import AggregatorNode
    from fedrx.nodes.config import load_config, setup_logging

    setup_logging("aggregator")
    cfg, task = load_config(config, "aggregator")
    node = AggregatorNode(cfg, task, insecure=insecure)
    node.install_signals()
    doc = node.run()
    console.print(f"results: {Path(cfg.out) / 'results.json'} "
                  f"({len(doc['rounds'])} round(s))")


@app.group("node")
def node_app() -> None:
    """A hospital site of a gRPC deployment."""


@node_app.command("run")
@click.option("--config", type=PathType, required=True, help="TOML with [node] and [task]")
@click.option("--insecure", is_flag=True, help="plaintext gRPC (testing only; no TLS)")
def node_run(config: Path, insecure: bool) -> int:
    """Connect to the aggregator and answer its requests until the federation ends."""
    from fedrx.nodes.config import load_config, setup_logging
    from fedrx.nodes.hospital import HospitalNode

    cfg, task = load_config(config, "node")
    setup_logging(cfg.hospital)
    node = HospitalNode(cfg, task, insecure=insecure)
    node.install_signals()
    node.build_party()
    return node.run()


@app.group("demo")
def demo_app() -> None:
    """Ready-made demonstrations."""


@demo_app.command("grpc")
@click.option("--out", "out_dir", type=PathType, default=Path("runs/grpc-demo"),
              show_default=True, help="folder for certificates, configs, logs and results")
@click.option("--data", default="mimic3-demo", show_default=True)
@click.option("--hospitals", type=int, default=3, show_default=True)
@click.option("--rounds", type=int, default=3, show_default=True)
@click.option("--protection", default="mask", show_default=True)
@click.option("--hidden", type=int, default=64, show_default=True)
@click.option("--local-epochs", type=int, default=2, show_default=True)
@click.option("--dp", "dp", type=click.Choice(["on", "off"]), default="on", show_default=True,
              help="patient-level DP-SGD at every hospital (each hospital's own policy)")
@click.option("--epsilon", type=float, default=8.0, show_default=True,
              help="DP: each hospital's target epsilon for the whole run")
@click.option("--timeout", type=float, default=900.0, show_default=True,
              help="give up after this many seconds")
def demo_grpc(out_dir: Path, data: str, hospitals: int, rounds: int, protection: str,
              hidden: int, local_epochs: int, dp: str, epsilon: float, timeout: float) -> None:
    """Certificates + an aggregator and hospital processes on loopback, then the table."""
    from fedrx.nodes.launcher import DemoSpec, print_round_table, run_demo

    if not epsilon > 0:
        raise ConfigError(f"--epsilon must be > 0, got {epsilon}")
    spec = DemoSpec(out=out_dir, data=data, hospitals=hospitals, rounds=rounds,
                    protection=protection, hidden=hidden, local_epochs=local_epochs,
                    dp=dp == "on", epsilon=epsilon, timeout=timeout)
    doc = run_demo(spec, echo=lambda m: console.print(m))
    print_round_table(doc, out)
    console.print(f"results: {out_dir / 'aggregator' / 'results.json'}, summary: "
                  f"{out_dir / 'aggregator' / 'summary.md'}, node state and receipts: "
                  f"{out_dir / 'nodes'}/<hospital>/state.json, logs: {out_dir / 'logs'}")

# ----------------------------------------------------------------------- end gRPC block


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
