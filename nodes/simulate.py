"""``fedrx simulate``: a real federation of the medication task in one process.

Data -> hospitals (:mod:`partition`) -> per-hospital patient split -> shared vocabulary
(agreed once from the hospitals' training patients) -> :class:`MedicationTask` ->
:func:`build_federated_averaging_process` with the chosen protection -> rounds. Every
round runs the real protocol and cryptography over the in-process transport. Results go
to ``OUT/results.json`` and ``OUT/summary.md``; the last round's model to
``OUT/global_model.npy`` and the model of the round with the best pooled VALIDATION Jaccard
(:func:`select_round`) to ``OUT/selected_model.npy`` (all atomic writes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedrx.atomic import atomic_write_npy
from fedrx.canonical import json_default
from fedrx.errors import ConfigError
from fedrx.medrx.metrics import MetricSums, ddi_matrix
from fedrx.medrx.partition import partition
from fedrx.medrx.records import atomic_write_text
from fedrx.medrx.split import Split, split_patients
from fedrx.medrx.task import HospitalData, MedicationTask, make_hospital_data
from fedrx.medrx.vocab import build_vocabulary
from fedrx.protocol.api import build_federated_averaging_process
from fedrx.protocol.optim import ServerOptimizer
from fedrx.protocol.registry import PROTECTIONS
from fedrx.protocol.task import ClientOptimizer

METRIC_KEYS = ("jaccard", "prauc", "f1", "precision", "recall", "ddi_rate", "avg_meds")


@dataclass
class SimulationConfig:
    """``fedrx simulate`` settings (TOML table ``[simulate]``; flags override)."""

    data: str = "mimic3-demo"
    hospitals: int | None = None
    rounds: int = 10
    protection: str = "none"
    seed: int = 0
    out: str = "runs/simulate"
    model: str = "mlp"
    hidden: int = 128
    client_optimizer: str = "adam"
    lr: float = 1e-3
    local_epochs: int = 1
    batch_size: int = 64
    server_optimizer: str = "fedavg"
    server_lr: float = 1.0
    partition: str = "iid"
    min_patients: int = 20
    min_visits: int = 1
    drop: str = ""
    clip_norm: float = 10.0
    threshold: int | None = None
    rounding_seed: int | None = None
    personalize: bool = True
    centralized: bool = False
    mappings: str = ""
    dp: bool = False
    epsilon: float = 8.0
    delta: float | None = None
    max_grad_norm: float = 1.0
    dp_batch: int = 128
    accountant: str = "prv"
    secure_noise: bool = True
    budget_epsilon: float | None = None
    on_budget_exhausted: str = "continue"

    def dp_config(self):  # noqa: ANN201  (torch-free import at module level)
        from fedrx.dp.dpsgd import DPConfig

        return DPConfig(target_epsilon=self.epsilon, delta=self.delta,
                        max_grad_norm=self.max_grad_norm,
                        expected_batch_patients=self.dp_batch, accountant=self.accountant,
                        secure_noise=self.secure_noise, budget_epsilon=self.budget_epsilon,
                        seed=None if self.secure_noise else self.seed)

    def validate(self) -> None:
        if self.hospitals is not None and self.hospitals < 1:
            raise ConfigError(f"--hospitals must be >= 1, got {self.hospitals}")
        if self.rounds < 1:
            raise ConfigError(f"--rounds must be >= 1, got {self.rounds}")
        if self.protection not in PROTECTIONS:
            raise ConfigError(f"unknown protection {self.protection!r} "
                              f"(expected one of: {', '.join(PROTECTIONS)})")
        if self.local_epochs < 1 or self.batch_size < 1 or self.hidden < 1:
            raise ConfigError("local_epochs, batch_size and hidden must be >= 1")
        if not self.lr > 0 or not self.server_lr > 0:
            raise ConfigError("learning rates must be > 0")
        if self.client_optimizer not in ("adam", "sgd"):
            raise ConfigError(f"unknown client optimizer {self.client_optimizer!r}")
        if self.server_optimizer not in ("fedavg", "fedadam"):
            raise ConfigError(f"unknown server optimizer {self.server_optimizer!r}")
        if self.min_patients < 3:
            raise ConfigError("min_patients must be >= 3")
        if self.on_budget_exhausted not in ("continue", "stop"):
            raise ConfigError("on_budget_exhausted must be 'continue' or 'stop'")
        if self.dp:
            if not self.epsilon > 0:
                raise ConfigError(f"--epsilon must be > 0, got {self.epsilon}")
            self.dp_config().validate()


def protection_params(cfg: SimulationConfig) -> dict[str, Any]:
    """Protection-specific settings derived from the simulation config."""
    if cfg.protection == "mask":
        params: dict[str, Any] = {"clip_norm": cfg.clip_norm}
        if cfg.threshold is not None:
            params["threshold"] = cfg.threshold
        if cfg.rounding_seed is not None:
            params["rounding_seed"] = cfg.rounding_seed
        return params
    return {}


def dp_factory(cfg: SimulationConfig, run_dir: Path) -> Callable[..., Any]:
    """Per-hospital DP: ledger in ``run_dir/ledger``, public identity in ``run_dir/identities``."""
    from fedrx.dp.federated import DPPlan, HospitalDP

    dp_cfg = cfg.dp_config()
    plan = DPPlan(rounds=cfg.rounds, local_epochs=cfg.local_epochs)

    def make(hospital: str, identity: Any, data: HospitalData) -> HospitalDP:
        return HospitalDP(hospital, identity, dp_cfg, plan, data.train.n_patients, run_dir)

    return make


def metrics_from_sums(reports: list[dict]) -> dict[str, float]:
    """Pool hospitals' global-model metric sums into metrics (= evaluating all together)."""
    total = MetricSums()
    for r in reports:
        total = total.combine(MetricSums(**r["global"]))
    if total.patients == 0:
        return {}
    return {k: float(v) for k, v in total.metrics().as_dict().items()}


@dataclass
class Prepared:
    cohort_name: str
    hospitals: dict[str, HospitalData]
    splits: dict[str, Split]
    task: MedicationTask
    pairs: Any


def prepare(cfg: SimulationConfig) -> Prepared:
    """Load, partition, split and encode the data; build the task."""
    from fedrx.medrx.datasets import find_ddi_pairs, load_dataset

    mappings = Path(cfg.mappings) if cfg.mappings else None
    cohort = load_dataset(cfg.data, mappings_dir=mappings, min_visits=cfg.min_visits)
    parts = partition(cohort, cfg.hospitals, seed=cfg.seed, scheme=cfg.partition,
                      min_patients=cfg.min_patients)
    splits = {h: split_patients(p, seed=cfg.seed) for h, p in parts.items()}
    for h, s in splits.items():
        if not s.train:
            raise ConfigError(f"hospital {h} has no training patients")
    vocab = build_vocabulary([p for s in splits.values() for p in s.train])
    pairs, _ = find_ddi_pairs(cfg.data, mappings)
    if pairs is None:
        import logging

        logging.getLogger("fedrx.simulate").warning(
            "no DDI graph found; DDI rate is reported as 0")
    ddi = ddi_matrix(vocab.labels, pairs) if pairs else None
    task = MedicationTask(vocab, ddi, model=cfg.model, hidden=cfg.hidden)
    data = {h: make_hospital_data(h, s.train, s.val, s.test, vocab) for h, s in splits.items()}
    return Prepared(cohort.name, data, splits, task, pairs)


def centralized_baseline(prep: Prepared, cfg: SimulationConfig) -> dict[str, Any]:
    """Centralized training on the pooled training patients of the SAME split and vocabulary."""
    from fedrx.medrx.records import Cohort
    from fedrx.medrx.train import TrainConfig, train_centralized

    train = [p for s in prep.splits.values() for p in s.train]
    val = [p for s in prep.splits.values() for p in s.val]
    test = [p for s in prep.splits.values() for p in s.test]
    tc = TrainConfig(model=cfg.model, hidden=cfg.hidden, lr=cfg.lr, batch_size=cfg.batch_size,
                     seed=cfg.seed)
    res, _, _ = train_centralized(Cohort(prep.cohort_name, train + val + test), tc, prep.pairs,
                                  split=Split(train, val, test), vocab=prep.task.vocab)
    return res.test


def run_simulation(cfg: SimulationConfig,
                   progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the federation; write and return the results document."""
    cfg.validate()
    out_dir = Path(cfg.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a folder")
    if cfg.dp and (out_dir / "ledger").is_dir() and any((out_dir / "ledger").iterdir()):
        raise ConfigError(f"{out_dir / 'ledger'} already holds privacy ledgers; ledgers are "
                          "never overwritten: choose a new --out")
    t_start = time.perf_counter()
    prep = prepare(cfg)
    opt = ClientOptimizer(cfg.client_optimizer, cfg.lr, epochs=cfg.local_epochs,
                          batch_size=cfg.batch_size)
    process = build_federated_averaging_process(
        prep.task, client_optimizer=opt,
        server_optimizer=ServerOptimizer(cfg.server_optimizer, lr=cfg.server_lr),
        protection=cfg.protection, protection_params=protection_params(cfg),
        seed=cfg.seed, drops=cfg.drop or None,
        metrics_from_sums=metrics_from_sums)
    if cfg.dp:
        process.dp = dp_factory(cfg, out_dir)
    state = process.initialize()
    initial_hash = state.model_hash
    process.enroll(prep.hospitals)
    process.validate_drops(cfg.rounds)
    rounds: list[dict[str, Any]] = []
    selected_weights: np.ndarray | None = None
    stopped = ""
    for r in range(1, cfg.rounds + 1):
        last = r == cfg.rounds
        state, outcome = process.next(state, prep.hospitals, personalize=last and cfg.personalize)
        rec = asdict(outcome)
        if select_round([*rounds, rec]) is rec:
            selected_weights = state.weights.copy()
        if cfg.dp:
            rec["privacy"] = {h: {"epsilon": p.dp.epsilon(), "delta": p.dp.delta,
                                  "refused": h in outcome.refused}
                              for h, p in process.parties.items()}
        rounds.append(rec)
        if progress:
            progress(rec)
        if outcome.refused and (cfg.on_budget_exhausted == "stop"
                                or len(outcome.refused) == len(outcome.participants)):
            stopped = (f"stopped after round {r}: privacy budget exhausted at "
                       f"{', '.join(sorted(outcome.refused))}")
            break
    doc = results_document(cfg, prep, rounds, 0.0)
    doc["initial_model_hash"] = initial_hash
    doc["stopped"] = stopped
    doc["dp"] = ({h: p.dp.describe() | {"epsilon": p.dp.epsilon()}
                  for h, p in process.parties.items()} if cfg.dp else None)
    if cfg.centralized:
        doc["centralized"] = centralized_baseline(prep, cfg)
    doc["seconds"] = time.perf_counter() - t_start
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.json",
                      json.dumps(doc, indent=1, sort_keys=True, default=json_default) + "\n")
    atomic_write_text(out_dir / "summary.md", summary_markdown(doc))
    atomic_write_npy(out_dir / "global_model.npy", state.weights)
    if selected_weights is not None:
        atomic_write_npy(out_dir / "selected_model.npy", selected_weights)
    return doc


SELECT_METRIC = "jaccard"


def select_round(rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The round record whose global model has the highest pooled VALIDATION Jaccard (the
    earliest on ties), or None if no round reported validation metrics.

    Model selection on the hospitals' validation patients, never on their test patients:
    the test metrics of the selected round remain an unbiased estimate. (Federated training
    on small sites overfits after a few rounds; the last round is not the best one.)
    """
    best: dict[str, Any] | None = None
    for r in rounds:
        v = (r.get("val_metrics") or {}).get(SELECT_METRIC)
        if v is None:
            continue
        if best is None or v > best["val_metrics"][SELECT_METRIC]:
            best = r
    return best


def selection_summary(rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``results.json``'s ``selected`` entry (see :func:`select_round`)."""
    best = select_round(rounds)
    if best is None:
        return None
    return {"round": best["round"], "criterion": f"pooled validation {SELECT_METRIC}",
            "val": best["val_metrics"], "global": best["metrics"],
            "model_hash": best["model_hash"], "file": "selected_model.npy"}


def results_document(cfg: SimulationConfig, prep: Prepared, rounds: list[dict[str, Any]],
                     seconds: float) -> dict[str, Any]:
    """The ``fedrx-simulation/1`` results document (``fedrx simulate`` and the gRPC
    aggregator write the same format)."""
    final = rounds[-1] if rounds else {"metrics": {}, "hospital_metrics": {}, "model_hash": ""}
    per_hospital: dict[str, Any] = {}
    for h, sums in final["hospital_metrics"].items():
        entry = {"global": _metrics(sums["global"])}
        if "personal" in sums:
            entry["personalized"] = _metrics(sums["personal"])
        per_hospital[h] = entry
    return {
        "format": "fedrx-simulation/1",
        "config": asdict(cfg),
        "dataset": prep.cohort_name,
        "hospitals": {h: {"train_patients": len(s.train), "val_patients": len(s.val),
                          "test_patients": len(s.test),
                          "train_visits": len(prep.hospitals[h].train),
                          "test_visits": len(prep.hospitals[h].test)}
                      for h, s in prep.splits.items()},
        "vocabulary": dict(zip(("diagnoses", "procedures", "labels"),
                               prep.task.vocab.sizes, strict=True)),
        "parameters": prep.task.spec.size,
        "rounds": rounds,
        "final": {"global": final.get("metrics", {}), "per_hospital": per_hospital,
                  "model_hash": final.get("model_hash", "")},
        "selected": selection_summary(rounds),
        "seconds": seconds,
    }


def _metrics(sums: dict) -> dict[str, float]:
    s = MetricSums(**sums)
    return {k: float(v) for k, v in s.metrics().as_dict().items()} if s.patients else {}


def summary_markdown(doc: dict[str, Any]) -> str:
    cfg = doc["config"]
    lines = [
        f"# fedrx simulation: {doc['dataset']}",
        "",
        f"protection **{cfg['protection']}**, {len(doc['hospitals'])} hospitals, "
        f"{cfg['rounds']} rounds, seed {cfg['seed']}, {doc['parameters']} parameters, "
        f"{doc['seconds']:.1f} s",
        "",
        "## Rounds (global model, pooled test patients; validation Jaccard for selection)",
        "",
        "| round | status | contributors | dropped | " + " | ".join(METRIC_KEYS)
        + " | val jaccard | s |",
        "|---" * (len(METRIC_KEYS) + 6) + "|",
    ]
    for r in doc["rounds"]:
        m = r["metrics"]
        vals = " | ".join(f"{m[k]:.4f}" if k in m else "-" for k in METRIC_KEYS)
        dropped = ", ".join(f"{h}@{why.split(':')[0]}" for h, why in r["dropped"].items())
        status = r["status"] + (f" ({r['reason']})" if r["reason"] else "")
        vj = (r.get("val_metrics") or {}).get(SELECT_METRIC)
        lines.append(f"| {r['round']} | {status} | {len(r['contributors'])} | "
                     f"{dropped or '-'} | {vals} | {'-' if vj is None else f'{vj:.4f}'} | "
                     f"{r['seconds']:.1f} |")
    sel = doc.get("selected")
    if sel:
        final_j = doc["final"]["global"].get(SELECT_METRIC)
        lines += ["", f"**Selected model** (highest pooled validation {SELECT_METRIC}; "
                  f"`selected_model.npy`): round {sel['round']}, validation "
                  f"{sel['val'][SELECT_METRIC]:.4f}, test "
                  + (f"{sel['global'][SELECT_METRIC]:.4f}" if SELECT_METRIC in sel["global"]
                     else "-")
                  + (f" (final round: test {final_j:.4f})" if final_j is not None else "")
                  + "."]
    lines += ["", "## Final model per hospital (own test patients)", "",
              "| hospital | model | " + " | ".join(METRIC_KEYS) + " |",
              "|---" * (len(METRIC_KEYS) + 2) + "|"]
    for h, entry in doc["final"]["per_hospital"].items():
        for kind, m in entry.items():
            if m:
                lines.append(f"| {h} | {kind} | " +
                             " | ".join(f"{m[k]:.4f}" for k in METRIC_KEYS) + " |")
    if doc.get("dp"):
        lines += ["", "## Differential privacy (patient level, per hospital)", "",
                  "| hospital | epsilon spent | budget | delta | noise multiplier | "
                  "sample rate | steps/round | clip C |", "|---" * 8 + "|"]
        for h, d in doc["dp"].items():
            lines.append(f"| {h} | {d['epsilon']:.3f} | {d['budget_epsilon']:g} | "
                         f"{d['delta']:.1e} | {d['noise_multiplier']:.3f} | "
                         f"{d['sample_rate']:.3f} | {d['steps_per_round']} | "
                         f"{d['max_grad_norm']:g} |")
        lines += ["", "Ledgers: `ledger/<hospital>.jsonl`; verify with `fedrx audit DIR`."]
    if doc.get("stopped"):
        lines += ["", f"**{doc['stopped']}**"]
    if "centralized" in doc:
        lines += ["", "## Centralized training on the same split", "",
                  "| method | " + " | ".join(METRIC_KEYS) + " |",
                  "|---" * (len(METRIC_KEYS) + 1) + "|"]
        for name, m in doc["centralized"].items():
            lines.append(f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in METRIC_KEYS) + " |")
    return "\n".join(lines) + "\n"
