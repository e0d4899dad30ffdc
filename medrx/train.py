"""Centralized training and evaluation of the medication recommenders and baselines.

The building blocks here (:func:`train_epochs`, :func:`predict_proba`,
:func:`evaluate_model`) are the same ones a hospital uses for local training inside a
federation round, so centralized and federated numbers are comparable.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from fedrx.errors import ConfigError, DataError
from fedrx.medrx.features import VisitTensors, encode, input_width
from fedrx.medrx.metrics import Metrics, MetricSums, evaluate_sums
from fedrx.medrx.model import build_model
from fedrx.medrx.records import Cohort
from fedrx.medrx.split import Split, split_patients
from fedrx.medrx.vocab import Vocabulary, build_vocabulary


@dataclass
class TrainConfig:
    """Centralized training settings. ``lr`` is Adam's step size; epochs are full passes."""

    model: str = "mlp"
    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    hidden: int = 128
    patience: int = 6
    seed: int = 0

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.hidden < 1:
            raise ConfigError(f"hidden must be >= 1, got {self.hidden}")
        if self.model not in ("mlp", "logreg"):
            raise ConfigError(f"unknown model {self.model!r} (expected mlp or logreg)")


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def run_minibatches(
    model: nn.Module,
    data: VisitTensors,
    *,
    steps: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> float:
    """``steps`` minibatch steps of plain (non-private) BCE training, walking fresh
    ``generator`` permutations of the visits; returns the mean loss per visit over all steps.

    Shared by centralized training, a hospital's local training and personalisation.
    """
    if len(data) == 0:
        raise DataError("no training visits")
    x = torch.from_numpy(data.x)
    y = torch.from_numpy(data.y)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    n = len(data)
    total, count, done = 0.0, 0, 0
    while done < steps:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            if done >= steps:
                break
            idx = perm[i : i + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x[idx].float()), y[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            count += len(idx)
            done += 1
    return total / max(count, 1)


def steps_per_epoch(n_visits: int, batch_size: int) -> int:
    return -(-n_visits // batch_size)


def train_epochs(
    model: nn.Module,
    data: VisitTensors,
    *,
    epochs: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> float:
    """``epochs`` full passes of :func:`run_minibatches`; returns the mean loss."""
    return run_minibatches(model, data, steps=epochs * steps_per_epoch(len(data), batch_size),
                           batch_size=batch_size, optimizer=optimizer, generator=generator)


@torch.no_grad()
def predict_proba(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        out.append(torch.sigmoid(model(torch.from_numpy(x[i : i + batch_size]).float())).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def probs_sums(data: VisitTensors, probs: np.ndarray, ddi: np.ndarray | None) -> MetricSums:
    """Additive metric sums of predicted probabilities against ``data``'s labels."""
    return evaluate_sums(((data.y[r], probs[r]) for r in data.patient_rows() if len(r)), ddi)


def evaluate_probs(data: VisitTensors, probs: np.ndarray, ddi: np.ndarray | None) -> Metrics:
    return probs_sums(data, probs, ddi).metrics()


def evaluate_model(model: nn.Module, data: VisitTensors, ddi: np.ndarray | None) -> Metrics:
    return evaluate_probs(data, predict_proba(model, data.x), ddi)


@dataclass
class TrainResult:
    """Test metrics per method, plus what is needed to reproduce them."""

    dataset: str
    config: dict
    sizes: dict[str, int]
    test: dict[str, dict] = field(default_factory=dict)
    val: dict[str, dict] = field(default_factory=dict)
    epochs_run: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def fit_with_early_stopping(
    cfg: TrainConfig,
    kind: str,
    train: VisitTensors,
    val: VisitTensors,
    n_inputs: int,
    n_labels: int,
    ddi: np.ndarray | None,
    progress: Callable[[str, int, float, float], None] | None = None,
) -> tuple[nn.Module, int]:
    """Train ``kind`` for up to ``cfg.epochs``; keep the weights with the best val Jaccard."""
    gen = seed_everything(cfg.seed)
    model = build_model(kind, n_inputs, n_labels, hidden=cfg.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_state, best_epoch, bad = -1.0, copy.deepcopy(model.state_dict()), 0, 0
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        loss = train_epochs(model, train, epochs=1, batch_size=cfg.batch_size, optimizer=opt,
                            generator=gen)
        score = evaluate_model(model, val, ddi).jaccard if len(val) else -loss
        if progress:
            progress(kind, epoch, loss, score)
        if score > best:
            best, best_state, best_epoch, bad = score, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    model.load_state_dict(best_state)
    return model, best_epoch


def train_centralized(
    cohort: Cohort,
    cfg: TrainConfig,
    ddi_pairs: set[frozenset[str]] | None = None,
    progress: Callable[[str, int, float, float], None] | None = None,
    split: Split | None = None,
    vocab: Vocabulary | None = None,
) -> tuple[TrainResult, Vocabulary, nn.Module]:
    """Train the model and the logistic-regression baseline; evaluate them and copy-last-visit.

    The vocabulary is built from the TRAINING patients only unless given. Returns the
    results, the vocabulary and the trained recommender (best validation epoch).
    """
    from fedrx.medrx.metrics import ddi_matrix

    cfg.validate()
    split = split or split_patients(cohort.patients, seed=cfg.seed)
    if not split.train or not split.test:
        raise DataError(
            f"{cohort.name}: too few patients to split ({len(cohort.patients)}); need >= 3"
        )
    vocab = vocab or build_vocabulary(split.train)
    tr, va, te = (encode(s, vocab) for s in (split.train, split.val, split.test))
    ddi = ddi_matrix(vocab.labels, ddi_pairs) if ddi_pairs else None
    n_in, n_lab = input_width(vocab), len(vocab.labels)
    result = TrainResult(
        dataset=cohort.name,
        config=asdict(cfg),
        sizes={
            "train_patients": len(split.train), "val_patients": len(split.val),
            "test_patients": len(split.test), "train_visits": len(tr),
            "test_visits": len(te), "diagnoses": len(vocab.diagnoses),
            "procedures": len(vocab.procedures), "labels": n_lab,
            "hospitals": len(cohort.hospitals),
        },
    )
    best: nn.Module | None = None
    for kind, name in ((cfg.model, "model"), ("logreg", "logreg")):
        model, ep = fit_with_early_stopping(cfg, kind, tr, va, n_in, n_lab, ddi, progress)
        if name == "model":
            best = model
        result.test[name] = evaluate_model(model, te, ddi).as_dict()
        if len(va):
            result.val[name] = evaluate_model(model, va, ddi).as_dict()
        result.epochs_run[name] = ep
    result.test["copy_last_visit"] = evaluate_probs(te, te.prev, ddi).as_dict()
    assert best is not None
    return result, vocab, best
