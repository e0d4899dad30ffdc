"""The medication-recommendation task as a :class:`~fedrx.protocol.task.FederatedTask`.

Weights travel as ONE flat float32 vector in the order of ``model.state_dict()``; the
:class:`ModelSpec` records names and shapes. A hospital's private data is a
:class:`HospitalData` (train / val / test :class:`VisitTensors`), which never leaves it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fedrx.errors import ConfigError, DataError, ProtocolError
from fedrx.medrx.features import VisitTensors, encode, input_width
from fedrx.medrx.metrics import MetricSums
from fedrx.medrx.model import build_model
from fedrx.medrx.records import Patient
from fedrx.medrx.train import predict_proba, probs_sums, run_minibatches, steps_per_epoch
from fedrx.medrx.vocab import Vocabulary
from fedrx.protocol.task import ClientOptimizer, FederatedTask, LocalResult, derive_seed

DP_DEFAULTS: dict[str, Any] = {
    "hidden": 32, "dp_sample_rate": 0.3, "max_grad_norm": 0.1, "server_optimizer": "fedadam",
    "server_lr": 0.03, "eval_every": 5,
}
"""DP-aware defaults of the medication task for distributed DP (``--dp distributed``): a
smaller MLP (hidden 32: a quarter of the parameters, so less noise in total), a large
sampling rate (q = 0.3: the noise of a step is divided by the expected batch qN), a clipping
norm near the median per-patient gradient norm at initialisation (0.13 on the synthetic
federation: C = 0.1 clips about half, C = 1 would be 8x noise for the same signal), and an
adaptive server step (FedAdam, lr 0.03) on the noisy average gradient; evaluation every 5
steps. Measured in bench/dp_utility.py (docs/benchmarks.md)."""

METRIC_NAMES = ("jaccard", "prauc", "f1", "precision", "recall", "ddi_rate", "avg_meds")
"""SafeDrug's metrics, in display order (:meth:`MedicationTask.pool_metrics` returns them)."""


@dataclass
class HospitalData:
    """One hospital's encoded private data. Never serialised, never sent."""

    hospital: str
    train: VisitTensors
    val: VisitTensors
    test: VisitTensors

    def part(self, name: str) -> VisitTensors:
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown data part {name!r}")
        return getattr(self, name)


def make_hospital_data(hospital: str, train: list[Patient], val: list[Patient],
                       test: list[Patient], vocab: Vocabulary) -> HospitalData:
    return HospitalData(hospital, encode(train, vocab), encode(val, vocab), encode(test, vocab))


@dataclass(frozen=True)
class ModelSpec:
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def size(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))


def per_visit_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits averaged over the labels: one value per visit
    (shape ``(rows,)``), the per-visit loss of non-private training."""
    return F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(dim=1)


class MedicationTask(FederatedTask):
    """MLP (or logistic regression) medication recommender over a shared vocabulary."""

    def __init__(self, vocab: Vocabulary, ddi: np.ndarray | None = None, model: str = "mlp",
                 hidden: int = 128, head_prefix: str = "head."):
        self.vocab = vocab
        self.ddi = ddi
        self.kind = model
        self.hidden = hidden
        self.n_inputs = input_width(vocab)
        self.n_labels = len(vocab.labels)
        probe = self.new_model()
        sd = probe.state_dict()
        self.spec = ModelSpec(tuple(sd), tuple(tuple(v.shape) for v in sd.values()))
        self.head_prefix = head_prefix if model == "mlp" else "linear."

    # -- weights <-> torch ---------------------------------------------------------
    def new_model(self) -> nn.Module:
        return build_model(self.kind, self.n_inputs, self.n_labels, hidden=self.hidden)

    def flatten(self, model: nn.Module) -> np.ndarray:
        return np.concatenate([v.detach().cpu().numpy().astype(np.float32).ravel()
                               for v in model.state_dict().values()])

    def load(self, model: nn.Module, weights: np.ndarray) -> nn.Module:
        if weights.shape != (self.spec.size,):
            raise ConfigError(f"weight vector has {weights.size} values, model needs "
                              f"{self.spec.size}")
        sd, off = {}, 0
        for name, shape in zip(self.spec.names, self.spec.shapes, strict=True):
            n = int(np.prod(shape))
            sd[name] = torch.from_numpy(np.array(weights[off:off + n], dtype=np.float32)
                                        .reshape(shape))
            off += n
        model.load_state_dict(sd)
        return model

    def model_from(self, weights: np.ndarray) -> nn.Module:
        return self.load(self.new_model(), weights)

    # -- FederatedTask ---------------------------------------------------------------
    def initial_weights(self, seed: int) -> np.ndarray:
        torch.manual_seed(derive_seed("init", seed))
        return self.flatten(self.new_model())

    def n_train_examples(self, data: HospitalData) -> int:
        return len(data.train)

    def _optimizer(self, params: Any, opt: ClientOptimizer) -> torch.optim.Optimizer:
        if opt.name == "adam":
            return torch.optim.Adam(params, lr=opt.lr, weight_decay=opt.weight_decay)
        if opt.name == "sgd":
            return torch.optim.SGD(params, lr=opt.lr, weight_decay=opt.weight_decay)
        raise ConfigError(f"unknown client optimizer {opt.name!r} (expected adam or sgd)")

    def local_train(self, weights: np.ndarray, data: HospitalData, opt: ClientOptimizer,
                    seed: int, dp: Any = None) -> LocalResult:
        torch.manual_seed(derive_seed("train", seed))
        model = self.model_from(weights)
        if dp is not None and getattr(dp, "mode", "local") == "distributed":
            return self._dp_share(model, data.train, dp)
        if dp is not None:
            return self._dp_train(model, data.train, opt, dp)
        if len(data.train) == 0:
            raise DataError(f"hospital {data.hospital} has no training visits")
        gen = torch.Generator()
        gen.manual_seed(derive_seed("batches", seed))
        steps = (opt.steps if opt.steps is not None
                 else opt.epochs * steps_per_epoch(len(data.train), opt.batch_size))
        loss = run_minibatches(model, data.train, steps=steps, batch_size=opt.batch_size,
                               optimizer=self._optimizer(model.parameters(), opt),
                               generator=gen)
        return LocalResult(self.flatten(model), len(data.train), loss, extra={"steps": steps})

    metric_names = METRIC_NAMES

    def check_weights(self, weights: np.ndarray) -> None:
        if weights.dtype != np.float32 or weights.shape != (self.spec.size,):
            raise ProtocolError(f"received model has {weights.size} {weights.dtype} values, "
                                f"this task's model has {self.spec.size} float32 parameters")

    def pool_metrics(self, reports: list[dict[str, Any]]) -> dict[str, float]:
        """Hospitals' ``global`` metric sums pooled (= evaluating all patients together);
        ``{}`` when no hospital reported a patient (no division by a zero count)."""
        total = MetricSums()
        for r in reports:
            total = total.combine(MetricSums(**r["global"]))
        if total.patients == 0:
            return {}
        return {k: float(v) for k, v in total.metrics().as_dict().items()}

    def _dp_train(self, model: nn.Module, t: VisitTensors, opt: ClientOptimizer,
                  dp: Any) -> LocalResult:
        """Patient-level DP-SGD by ``dp`` (the hospital's DP wrapper): the task hands it the
        model, the per-visit loss, the visits as tensors and the patient of each visit."""
        def factory(params: Any, lr: float) -> torch.optim.Optimizer:
            return self._optimizer(params, replace(opt, lr=lr))

        record = dp.train(model, per_visit_loss, torch.from_numpy(t.x), torch.from_numpy(t.y),
                          t.patient, n_groups=t.n_patients, lr=opt.lr,
                          optimizer_factory=factory, input_dtype=torch.float32)
        return LocalResult(self.flatten(model), len(t), float("nan"), dp=record)

    def _dp_share(self, model: nn.Module, t: VisitTensors, dp: Any) -> LocalResult:
        """Distributed DP: ONE step's noisy share of the federation's gradient sum at the
        global model (``model`` is not trained here; the aggregator takes the step). The
        protected input travels in ``extra["protected_input"]``; ``weights`` stay global."""
        if len(t) == 0:
            raise DataError("distributed DP needs training visits at every hospital")
        weights = self.flatten(model)
        vector, record = dp.share(model, per_visit_loss, torch.from_numpy(t.x),
                                  torch.from_numpy(t.y), t.patient, n_groups=t.n_patients,
                                  input_dtype=torch.float32)
        return LocalResult(weights, len(t), float("nan"), dp=record,
                           extra={"protected_input": vector})

    def evaluate(self, weights: np.ndarray, data: HospitalData, part: str = "test") -> MetricSums:
        """Metric sums of ``weights`` on ``part``. An empty part (a hospital of 1 or 2
        patients has no validation or test patient) gives all-zero sums, count 0: they add
        nothing to :meth:`pool_metrics` and are never divided by."""
        t = data.part(part)
        if len(t) == 0:
            return MetricSums()
        return probs_sums(t, predict_proba(self.model_from(weights), t.x), self.ddi)

    def personalize(self, weights: np.ndarray, data: HospitalData, opt: ClientOptimizer,
                    seed: int) -> np.ndarray:
        """Fine-tune only the output head (parameters named ``head.*``) on local data."""
        torch.manual_seed(derive_seed("personalize", seed))
        model = self.model_from(weights)
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(self.head_prefix))
        head = [p for p in model.parameters() if p.requires_grad]
        if len(data.train) == 0:
            return weights
        gen = torch.Generator()
        gen.manual_seed(derive_seed("pbatches", seed))
        run_minibatches(model, data.train,
                        steps=opt.epochs * steps_per_epoch(len(data.train), opt.batch_size),
                        batch_size=opt.batch_size, optimizer=self._optimizer(head, opt),
                        generator=gen)
        return self.flatten(model)
