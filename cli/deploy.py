"""The gRPC deployment: ``fedrx certs init``, ``aggregator serve``, ``node run``,
``demo grpc``. Thin wrappers; the logic lives in :mod:`fedrx.nodes`."""

from __future__ import annotations

from pathlib import Path

import click

from fedrx.cli.app import PathType, app, console, out
from fedrx.errors import ConfigError


@app.group("certs")
def certs_app() -> None:
    """Certificates and the pinned federation file for a gRPC deployment."""


@certs_app.command("init")
@click.option("--out", "out_dir", type=PathType, required=True, help="folder for keys + certs")
@click.option("--hospitals", required=True, help="comma-separated hospital ids, e.g. h1,h2,h3")
@click.option("--days", type=int, default=825, show_default=True, help="certificate lifetime")
@click.option("--task", "task_file", type=PathType, required=True,
              help="the task spec to pin (fedrx task init)")
def certs_init(out_dir: Path, hospitals: str, days: int, task_file: Path) -> None:
    """Create a CA, mutual-TLS certificates, hospital identities and federation.json
    pinning the task spec."""
    from fedrx.nodes.certs import init_certs
    from fedrx.nodes.taskspec import TaskSpec

    dep = init_certs(out_dir, hospitals.split(","), days=days,
                     task=TaskSpec.load(task_file))
    console.print(f"CA, aggregator and {len(dep.hospitals)} hospital certificates + "
                  f"identities written to {out_dir}; federation file "
                  f"{out_dir / 'federation.json'} (id {dep.federation_id[:16]})")


@app.group("task")
def task_app() -> None:
    """The federation's task specification (agreed before training, pinned)."""


@task_app.command("init")
@click.option("--out", "out_file", type=PathType, required=True, help="task.json to write")
@click.option("--config", type=PathType, help="TOML with a [task] table of task settings")
@click.option("--rounds", type=int, help="federation rounds")
@click.option("--protection", help="none, mask or ckks")
@click.option("--hidden", type=int, help="hidden width of the model")
@click.option("--seed", type=int, help="initial-weights and split seed")
@click.option("--local-epochs", type=int, help="local epochs per round")
@click.option("--mappings", type=PathType,
              help="NDC -> ATC mapping folder: its ATC-3 classes join the public labels")
@click.option("--vocabulary", "vocab_file", type=PathType,
              help="a fedrx-vocab/1 file to pin instead of the public vocabulary")
@click.option("--max-epsilon", type=float, help="bound on every hospital's own DP epsilon")
def task_init(out_file: Path, config: Path | None, mappings: Path | None,
              vocab_file: Path | None, max_epsilon: float | None, **flags) -> None:
    """Write the task spec (vocabulary, model, seed, shared settings, DP bounds)."""
    from fedrx.config import build, section
    from fedrx.medrx.vocab import Vocabulary
    from fedrx.nodes.simulate import SimulationConfig
    from fedrx.nodes.taskspec import DATA_KEYS, make_spec

    table = section(config, "task") or {}
    bad = sorted(set(table) & set(DATA_KEYS))
    if bad:
        raise ConfigError(f"[task] {', '.join(bad)}: a task spec holds no data settings")
    cfg = build(SimulationConfig, table, flags)
    cfg.validate()
    vocab = Vocabulary.load(vocab_file) if vocab_file else None
    spec = make_spec(cfg, vocabulary=vocab, mappings=mappings, max_epsilon=max_epsilon)
    spec.save(out_file)
    console.print(f"task spec {out_file} ({spec.encoding}, vocabulary "
                  f"{'/'.join(str(len(v)) for v in spec.vocabulary.values())}, sha256 "
                  f"{spec.sha256[:16]}...): pin it with `fedrx certs init --task {out_file}`")


@app.group("aggregator")
def aggregator_app() -> None:
    """The aggregator of a gRPC deployment."""


@aggregator_app.command("serve")
@click.option("--config", type=PathType, required=True,
              help="TOML with [aggregator] (the task is pinned in federation.json)")
@click.option("--insecure", is_flag=True, help="plaintext gRPC (testing only; no TLS)")
def aggregator_serve(config: Path, insecure: bool) -> None:
    """Serve hospitals over mutual TLS and run the federation's rounds."""
    from fedrx.nodes.aggregator import AggregatorNode
    from fedrx.nodes.config import load_aggregator_config, setup_logging

    setup_logging("aggregator")
    cfg = load_aggregator_config(config)
    node = AggregatorNode(cfg, insecure=insecure)
    node.install_signals()
    doc = node.run()
    console.print(f"results: {Path(cfg.out) / 'results.json'} "
                  f"({len(doc['rounds'])} round(s))")


@app.group("node")
def node_app() -> None:
    """A hospital site of a gRPC deployment."""


@node_app.command("run")
@click.option("--config", type=PathType, required=True,
              help="TOML with [node], [data] (this hospital's own export) and [privacy]")
@click.option("--insecure", is_flag=True, help="plaintext gRPC (testing only; no TLS)")
def node_run(config: Path, insecure: bool) -> int:
    """Connect to the aggregator and answer its requests until the federation ends."""
    from fedrx.nodes.config import load_node_config, setup_logging
    from fedrx.nodes.hospital import HospitalNode

    cfg, data, privacy = load_node_config(config)
    setup_logging(cfg.hospital)
    node = HospitalNode(cfg, data, privacy, insecure=insecure)
    node.install_signals()
    node.build_party()
    return node.run()


@app.group("demo")
def demo_app() -> None:
    """Ready-made demonstrations."""


@demo_app.command("grpc")
@click.option("--out", "out_dir", type=PathType, default=Path("runs/grpc-demo"),
              show_default=True, help="folder for certificates, configs, logs and results")
@click.option("--data", default="auto", show_default=True,
              help="auto (MIMIC-III demo if found, else synthetic), synthetic, mimic3-demo, "
                   "mimic4-demo, omop-demo, eicu-demo, or a folder of per-hospital exports")
@click.option("--hospitals", type=int, default=3, show_default=True)
@click.option("--rounds", type=int, default=None,
              help="rounds [default: 34 with --dp distributed (10 expected passes at q 0.3), "
                   "else 3]")
@click.option("--protection", default="mask", show_default=True)
@click.option("--hidden", type=int, default=None,
              help="MLP hidden size [default: 32 with --dp distributed, else 64]")
@click.option("--local-epochs", type=int, default=2, show_default=True)
@click.option("--dp", "dp", type=click.Choice(["distributed", "on", "local", "off"]),
              default="distributed", show_default=True,
              help="distributed: one patient-level DP-SGD step of the whole federation per "
                   "round, noise shared under the secure sum; on/local: DP-SGD at every "
                   "hospital on its own (each hospital's own policy); off")
@click.option("--dp-k", type=int, default=1, show_default=True,
              help="distributed DP: hospitals that may collude with the aggregator or drop")
@click.option("--epsilon", type=float, default=8.0, show_default=True,
              help="DP: each hospital's target epsilon for the whole run")
@click.option("--timeout", type=float, default=900.0, show_default=True,
              help="give up after this many seconds")
def demo_grpc(out_dir: Path, data: str, hospitals: int, rounds: int | None, protection: str,
              hidden: int | None, local_epochs: int, dp: str, dp_k: int, epsilon: float,
              timeout: float) -> None:
    """Certificates + an aggregator and hospital processes on loopback, then the table."""
    from fedrx.medrx.task import DP_DEFAULTS
    from fedrx.nodes.launcher import DemoSpec, print_round_table, run_demo

    if not epsilon > 0:
        raise ConfigError(f"--epsilon must be > 0, got {epsilon}")
    dist = dp == "distributed"
    if rounds is None:
        rounds = 34 if dist else 3
    if hidden is None:
        hidden = int(DP_DEFAULTS["hidden"]) if dist else 64
    spec = DemoSpec(out=out_dir, data=data, hospitals=hospitals, rounds=rounds,
                    protection=protection, hidden=hidden, local_epochs=local_epochs,
                    dp=dp != "off", epsilon=epsilon, timeout=timeout,
                    dp_mode="distributed" if dist else "local", dp_k=dp_k if dist else 0)
    doc = run_demo(spec, echo=lambda m: console.print(m))
    print_round_table(doc, out)
    console.print(f"results: {out_dir / 'aggregator' / 'results.json'}, summary: "
                  f"{out_dir / 'aggregator' / 'summary.md'}, node state and receipts: "
                  f"{out_dir / 'nodes'}/<hospital>/state.json, logs: {out_dir / 'logs'}")
