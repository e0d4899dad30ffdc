"""Start a whole gRPC federation on loopback: ``fedrx demo grpc``, the tests, the benchmark.

Layout under ``OUT``: ``certs/`` (``fedrx certs init``), ``aggregator.toml`` and
``nodes/<h>.toml`` configs, ``aggregator/`` (results, checkpoint), ``nodes/<h>/`` (node
state and receipts), ``logs/<name>.log``. Every process is a separate OS process
(``python -m fedrx.cli ...``); the aggregator listens on an ephemeral 127.0.0.1 port and
writes it to ``aggregator.addr``, which the nodes read at every (re)connect.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedrx.atomic import atomic_write_text
from fedrx.errors import ConfigError, FedrxError, ProtocolError


def write_toml(path: Path, tables: Mapping[str, Mapping[str, Any]]) -> None:
    """Write ``{table: {key: value}}`` as TOML (tomli-w); None values are left out, paths
    become strings. Atomic: a reader never sees half a file."""
    import tomli_w

    doc = {name: {k: str(v) if isinstance(v, Path) else v for k, v in tab.items()
                  if v is not None} for name, tab in tables.items()}
    try:
        text = tomli_w.dumps(doc)
    except TypeError as exc:
        raise ConfigError(f"cannot write {path} as TOML: {exc}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


@dataclass
class DemoSpec:
    """One loopback federation. ``data``: ``auto`` (the MIMIC-III demo if found, else a
    synthetic federation), ``synthetic``, a named demo (``mimic3-demo``, ``mimic4-demo``,
    ``omop-demo``: split by patient; ``eicu-demo``: by site) or a folder of per-hospital
    exports. Each hospital node gets ONLY its own export folder; the aggregator none.
    ``task`` overrides task settings (:data:`~fedrx.nodes.taskspec.SHARED` keys),
    ``aggregator`` ``[aggregator]`` keys, ``node_extra[h]`` that hospital's ``[node]`` keys.

    ``dp`` and ``epsilon``: every hospital's own DP policy, written into its node config's
    ``[privacy]`` only; ``dp_task`` adds further policy keys (delta, max_grad_norm, dp_batch,
    accountant, budget_epsilon, ...). ``dp`` defaults to off here (library callers: tests,
    benchmarks); ``fedrx demo grpc`` turns it on. With DP, :func:`run_demo` also writes the
    budget report and audits every node folder."""

    out: Path
    data: str = "auto"
    hospitals: int = 3
    rounds: int = 3
    protection: str = "mask"
    hidden: int = 64
    local_epochs: int = 1
    seed: int = 0
    timeout: float = 900.0
    insecure: bool = False
    patients: int = 300
    task: dict[str, Any] = field(default_factory=dict)
    aggregator: dict[str, Any] = field(default_factory=dict)
    node_extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    dp: bool = False
    epsilon: float = 8.0
    dp_task: dict[str, Any] = field(default_factory=dict)
    dp_mode: str = "local"
    """With ``dp``: ``local`` (each hospital's own DP-SGD) or ``distributed`` (one federation
    DP-SGD step per round, noise shared under the secure sum; :mod:`fedrx.nodes.demo_dp`)."""
    dp_k: int = 0
    """Distributed DP: hospitals that may collude with the aggregator or drop, together."""

    @property
    def distributed(self) -> bool:
        return self.dp and self.dp_mode == "distributed"

    def privacy_table(self) -> dict[str, Any]:
        """A hospital's ``[privacy]``: its own DP policy."""
        if not self.dp:
            return {}
        extra: dict[str, Any] = {}
        if self.distributed:
            from fedrx.nodes.demo_dp import privacy_settings

            extra = privacy_settings()
        return {"dp": True, "epsilon": self.epsilon, **extra, **self.dp_task}

    def check(self) -> None:
        """Every argument, before anything is written: the task settings and the DP policy
        validate, and ``out`` is a folder this process can write into."""
        from fedrx.nodes.checkpoint import check_writable
        from fedrx.nodes.simulate import SimulationConfig

        SimulationConfig(**self.task_table(), hospitals=self.hospitals, dp=self.dp,
                         epsilon=self.epsilon).validate()
        if self.dp and self.dp_mode not in ("local", "distributed"):
            raise ConfigError(f"dp mode must be 'local' or 'distributed', got {self.dp_mode!r}")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise ConfigError(f"--out {self.out} is a file; give a folder")
        check_writable(Path(self.out), "--out")

    def task_table(self) -> dict[str, Any]:
        """The shared task settings (:data:`~fedrx.nodes.taskspec.SHARED`)."""
        from fedrx.nodes.simulate import SimulationConfig
        from fedrx.nodes.taskspec import SHARED

        cfg = SimulationConfig(rounds=self.rounds, protection=self.protection, seed=self.seed,
                               hidden=self.hidden, local_epochs=self.local_epochs)
        bad = sorted(set(self.task) - set(SHARED) - {"dp_sample_rate"})
        if bad:
            raise ConfigError(f"not task settings: {', '.join(bad)} (known: {', '.join(SHARED)})")
        table = {k: getattr(cfg, k) for k in SHARED}
        if self.distributed:
            from fedrx.nodes.demo_dp import task_settings

            table |= task_settings(self.dp_k, dict(self.task))
        return table | dict(self.task)


@dataclass
class Exports:
    """Per-hospital export folders ``root/<hospital>/`` and the drug-mapping folder."""

    root: Path
    hospitals: list[str]
    mappings: Path | None
    note: str


def prepare_exports(spec: DemoSpec, root: Path) -> Exports:
    """One export folder per hospital under ``root`` (reused if already there)."""
    from fedrx.medrx.datasets import named_dataset_path, shared_data_root

    data = spec.data
    if data == "auto":
        found = shared_data_root()
        data = "mimic3-demo" if found and (found / "mimic3-demo").is_dir() else "synthetic"
    shared = shared_data_root()
    demo_maps = shared / "mimic3-demo" / "mappings" if shared else None
    demo_maps = demo_maps if demo_maps is not None and demo_maps.is_dir() else None
    if data == "synthetic":
        if not root.is_dir():
            from fedrx.medrx.synth.config import SynthConfig
            from fedrx.medrx.synth.writer import generate

            summary = generate(SynthConfig(hospitals=spec.hospitals, patients=spec.patients,
                                           seed=spec.seed), root)
            cat = getattr(summary, "catalogue", "")
            # hospitals h1..hN, as in a split of a demo (folder name = hospital id)
            for i, name in enumerate(summary.hospitals, start=1):
                (root / name).rename(root / f"h{i}")
        else:
            cat = "reused"
        note = (f"no demo data found: generated a synthetic federation with `fedrx data synth` "
                f"({spec.hospitals} hospitals, {spec.patients} patients, {cat} codes), each "
                "hospital its own export folder")
        maps: Path | None = root / "mappings"
    elif data in ("mimic3-demo", "mimic4-demo", "omop-demo", "eicu-demo"):
        if not root.is_dir():
            from fedrx.medrx.export_split import split_export

            eicu = data == "eicu-demo"
            split_export(named_dataset_path(data), root, by="site" if eicu else "random",
                         hospitals=spec.hospitals, seed=spec.seed)
        note = (f"{data} split with `fedrx data split` into {spec.hospitals} hospital "
                "exports, each node reads only its own")
        maps = None if data == "eicu-demo" else demo_maps
    else:
        root = Path(data).expanduser().resolve()
        if not root.is_dir():
            raise ConfigError(f"--data {data}: not a folder of per-hospital exports")
        note = f"per-hospital exports in {root}"
        maps = root / "mappings" if (root / "mappings").is_dir() else demo_maps
    from fedrx.medrx.exports import detect_format

    hs = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "mappings"):
        try:
            detect_format(sub)
        except FedrxError:
            continue
        hs.append(sub.name)
    if not hs:
        raise ConfigError(f"{root}: no hospital export folders")
    return Exports(root, hs, maps, note)


@dataclass
class Setup:
    out: Path
    hospitals: list[str]
    aggregator_config: Path
    node_configs: dict[str, Path]
    address_file: Path
    insecure: bool
    exports: Exports | None = None


def write_setup(spec: DemoSpec, hospitals: list[str] | None = None) -> Setup:
    """Exports, the pinned task spec, certificates and configs for ``spec`` (each reused if
    present). ``hospitals``: use only these export folders."""
    from fedrx.nodes.certs import init_certs
    from fedrx.nodes.taskspec import make_spec

    spec.check()
    out = Path(spec.out).resolve()
    ex = prepare_exports(spec, out / "exports")
    hs = hospitals or ex.hospitals
    missing = sorted(set(hs) - set(ex.hospitals))
    if missing:
        raise ConfigError(f"no export for {', '.join(missing)} in {ex.root}")
    certs = out / "certs"
    if not (certs / "federation.json").exists():
        settings = spec.task_table()
        if spec.distributed:  # the federation's training patients N, agreed beforehand
            from fedrx.nodes.demo_dp import train_patients

            settings["dp_patients"] = sum(
                train_patients(ex.root / h, ex.mappings, seed=spec.seed,
                               min_visits=settings["min_visits"], hospital=h) for h in hs)
        init_certs(certs, hs, task=make_spec(settings, mappings=ex.mappings))
    addr = out / "aggregator.addr"
    agg = {"listen": "127.0.0.1:0", "address_file": str(addr), "ca": str(certs / "ca.pem"),
           "cert": str(certs / "aggregator.pem"), "key": str(certs / "aggregator.key"),
           "federation": str(certs / "federation.json"), "out": str(out / "aggregator"),
           "wait_seconds": 120.0, "train_deadline": 300.0, "stage_deadline": 60.0,
           "eval_deadline": 300.0}
    if spec.distributed:
        from fedrx.nodes.demo_dp import aggregator_settings

        agg.update(aggregator_settings())
    agg.update(spec.aggregator)
    write_toml(out / "aggregator.toml", {"aggregator": agg})
    nodes = {}
    for h in hs:
        d = certs / "hospitals" / h
        node = {"hospital": h, "aggregator_file": str(addr), "server_name": "",
                "ca": str(certs / "ca.pem"), "cert": str(d / "tls.pem"),
                "key": str(d / "tls.key"), "identity": str(d / "identity.json"),
                "federation": str(certs / "federation.json"), "out": str(out / "nodes" / h),
                "give_up_seconds": 120.0, "task": str(certs / "task.json")}
        node.update(spec.node_extra.get(h, {}))
        data = {"path": str(ex.root / h), "format": "auto",
                "mappings": str(ex.mappings) if ex.mappings else ""}
        tables: dict[str, Any] = {"node": node, "data": data}
        if spec.dp:
            tables["privacy"] = spec.privacy_table()
        nodes[h] = out / "nodes" / f"{h}.toml"
        write_toml(nodes[h], tables)
    return Setup(out, hs, out / "aggregator.toml", nodes, addr, spec.insecure, ex)


def simulation_twin(setup: Setup, spec: DemoSpec, out: Path) -> Any:
    """The ``fedrx simulate`` settings of the same federation in one process: the same
    exports (one hospital per folder), the same pinned task, the same DP policy."""
    from fedrx.nodes.simulate import SimulationConfig

    assert setup.exports is not None
    return SimulationConfig(**spec.task_table(), **spec.privacy_table(),
                            data=str(setup.exports.root), vocabulary="public",
                            mappings=str(setup.exports.mappings or ""), min_patients=3,
                            out=str(out))


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "fedrx.cli", *args],  # noqa: S603
                            stdout=fh, stderr=subprocess.STDOUT, env=env)


def start_aggregator(setup: Setup, *, remove_address: bool = True) -> subprocess.Popen:
    if remove_address and setup.address_file.exists():
        setup.address_file.unlink()
    args = ["aggregator", "serve", "--config", str(setup.aggregator_config)]
    return _spawn(args + (["--insecure"] if setup.insecure else []),
                  setup.out / "logs" / "aggregator.log")


def start_node(setup: Setup, h: str) -> subprocess.Popen:
    args = ["node", "run", "--config", str(setup.node_configs[h])]
    return _spawn(args + (["--insecure"] if setup.insecure else []),
                  setup.out / "logs" / f"{h}.log")


def wait_for_file(path: Path, timeout: float, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        if proc is not None and proc.poll() is not None:
            raise ProtocolError(f"process exited with {proc.returncode} before {path.name}")
        if time.monotonic() > end:
            raise ProtocolError(f"{path} did not appear within {timeout:.0f}s")
        time.sleep(0.05)


def stop_all(procs: Mapping[str, subprocess.Popen], timeout: float = 10.0) -> None:
    """SIGTERM, wait (bounded), then SIGKILL whatever is left."""
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    end = time.monotonic() + timeout
    for p in procs.values():
        try:
            p.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def start_federation(setup: Setup, procs: dict[str, subprocess.Popen]) -> None:
    """Start the aggregator, wait (bounded) for its address file, then every hospital node;
    the processes go into ``procs`` (``"aggregator"`` and each hospital id) as they start,
    so the caller's :func:`stop_all` reaches them even if a later start fails."""
    procs["aggregator"] = start_aggregator(setup)
    wait_for_file(setup.address_file, 120, procs["aggregator"])
    for h in setup.hospitals:
        procs[h] = start_node(setup, h)


def run_demo(spec: DemoSpec, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole federation; return the aggregator's results document."""
    t0 = time.monotonic()
    setup = write_setup(spec)
    if setup.exports is not None:
        echo(setup.exports.note)
    echo(f"certificates and the pinned task spec in {setup.out / 'certs'}; hospitals "
         f"{', '.join(setup.hospitals)}")
    procs: dict[str, subprocess.Popen] = {}
    try:
        start_federation(setup, procs)
        echo(f"aggregator listening on {setup.address_file.read_text().strip()} (mutual TLS); "
             f"{len(setup.hospitals)} hospital processes started; running "
             f"{spec.rounds} round(s) with protection {spec.protection}")
        agg = procs["aggregator"]
        try:
            rc = agg.wait(max(1.0, spec.timeout - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            raise ProtocolError(f"federation did not finish within {spec.timeout:.0f}s "
                                f"(logs: {setup.out / 'logs'})") from None
        if rc != 0:
            raise ProtocolError(f"aggregator exited with {rc} (log: "
                                f"{setup.out / 'logs' / 'aggregator.log'})")
        for h in setup.hospitals:
            try:
                procs[h].wait(15)
            except subprocess.TimeoutExpired:
                pass
    finally:
        stop_all(procs)
    doc = json.loads((setup.out / "aggregator" / "results.json").read_text())
    if spec.dp:
        privacy_outputs(setup, echo)
    return doc


def privacy_outputs(setup: Setup, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """After a DP run: the budget report over every hospital's ledger into
    ``OUT/budget-report``, and an audit of each node folder anchored to the aggregator's
    receipts (``aggregator/anchors/<h>.json``). Echoes the paths and one audit line per node;
    returns ``{"report": [paths], "audit": {hospital: [findings]}, "ledgers": {h: path}}``."""
    from fedrx.dp.audit import audit, find_aggregator_key, load_anchor_receipts, load_anchors
    from fedrx.dp.ledger import ledger_path, read_entries
    from fedrx.dp.report import budget_report

    node_dirs = {h: setup.out / "nodes" / h for h in setup.hospitals}
    ledgers = {h: ledger_path(d, h) for h, d in node_dirs.items()}
    have = [node_dirs[h] for h in setup.hospitals if ledgers[h].is_file()]
    report = budget_report(have, setup.out / "budget-report") if have else []
    anchors_dir = setup.out / "aggregator" / "anchors"
    results: dict[str, list[Any]] = {}
    key = find_aggregator_key(None, setup.out / "certs" / "federation.json")
    for h, d in node_dirs.items():
        a = anchors_dir / f"{h}.json"
        anchors = load_anchors(a) if a.is_file() else None
        receipts = load_anchor_receipts(a) if a.is_file() else None
        results[h] = findings = audit(d, anchors, receipts=receipts, aggregator_public=key)
        n = len(read_entries(ledgers[h])) if ledgers[h].is_file() else 0
        if findings:
            echo(f"audit {h}: FAILED ({len(findings)} finding(s)): "
                 + "; ".join(str(f) for f in findings[:3]))
        else:
            echo(f"audit {h}: OK: {n} signed ledger entries, hash chain and epsilon verified"
                 + (", anchored to the aggregator's signed round receipt" if anchors
                    else "")
                 + f" (fedrx audit {d}" + (f" --anchors {a})" if anchors else ")"))
    echo("ledgers: " + ", ".join(str(p) for p in ledgers.values()))
    if report:
        echo(f"budget report: {report[2]} (also {report[0].name}, {report[1].name}); "
             f"receipts: {setup.out / 'aggregator' / 'receipts.json'}")
    return {"report": report, "audit": results, "ledgers": ledgers}


def print_round_table(doc: Mapping[str, Any], console: Any) -> None:
    from rich.table import Table

    t = Table(title=f"fedrx over gRPC (mutual TLS): {doc['dataset']}, protection "
                    f"{doc['config']['protection']}, {len(doc['hospitals'])} hospitals")
    for col in ("round", "status", "contrib.", "dropped", "jaccard", "prauc", "f1", "ddi",
                "bytes/hospital", "s"):
        t.add_column(col, justify="right")
    for r in doc["rounds"]:
        m = r["metrics"]
        n = max(1, len(r["participants"]))
        wire = sum(s["sent_bytes"] + s["received_bytes"] for s in r["stages"]) / n
        t.add_row(str(r["round"]), r["status"], f"{len(r['contributors'])}/{n}",
                  ",".join(sorted(r["dropped"])) or "-",
                  *(f"{m[k]:.4f}" if k in m else "-" for k in ("jaccard", "prauc", "f1",
                                                              "ddi_rate")),
                  f"{wire / 1e6:.2f} MB", f"{r['seconds']:.1f}")
    console.print(t)
