"""The medication-recommendation task as a :class:`~fedrx.protocol.task.FederatedTask`.

Weights travel as ONE flat float32 vector in the order of ``model.state_dict()``; the
:class:`ModelSpec` records names and shapes. A hospital's private data is a
:class:`HospitalData` (train / val / test :class:`VisitTensors`), which never leaves it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fedrx.errors import ConfigError, DataError
from fedrx.medrx.features import VisitTensors, encode, input_width
from fedrx.medrx.metrics import MetricSums, evaluate_sums
from fedrx.medrx.model import build_model
from fedrx.medrx.records import Patient
from fedrx.medrx.vocab import Vocabulary
from fedrx.protocol.task import ClientOptimizer, FederatedTask, LocalResult


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


def _seed(*parts: object) -> int:
    h = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


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
        torch.manual_seed(_seed("init", seed))
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
        torch.manual_seed(_seed("train", seed))
        model = self.model_from(weights)
        if dp is not None:
            return dp.train(self, model, data, opt, seed)
        train = data.train
        if len(train) == 0:
            raise DataError(f"hospital {data.hospital} has no training visits")
        gen = torch.Generator()
        gen.manual_seed(_seed("batches", seed))
        optim = self._optimizer(model.parameters(), opt)
        x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
        loss_fn = nn.BCEWithLogitsLoss()
        model.train()
        n = len(train)
        steps = opt.steps if opt.steps is not None else opt.epochs * -(-n // opt.batch_size)
        total, count, done = 0.0, 0, 0
        while done < steps:
            perm = torch.randperm(n, generator=gen)
            for i in range(0, n, opt.batch_size):
                if done >= steps:
                    break
                idx = perm[i:i + opt.batch_size]
                optim.zero_grad()
                loss = loss_fn(model(x[idx].float()), y[idx])
                loss.backward()
                optim.step()
                total += loss.item() * len(idx)
                count += len(idx)
                done += 1
        return LocalResult(self.flatten(model), n, total / max(count, 1),
                           extra={"steps": done})

    @torch.no_grad()
    def predict(self, weights: np.ndarray, x: np.ndarray) -> np.ndarray:
        model = self.model_from(weights).eval()
        out = [torch.sigmoid(model(torch.from_numpy(x[i:i + 4096]).float())).numpy()
               for i in range(0, len(x), 4096)]
        return np.concatenate(out) if out else np.zeros((0, self.n_labels), np.float32)

    def evaluate(self, weights: np.ndarray, data: HospitalData, part: str = "test") -> MetricSums:
        t = data.part(part)
        if len(t) == 0:
            return MetricSums()
        probs = self.predict(weights, t.x)
        return evaluate_sums(((t.y[r], probs[r]) for r in t.patient_rows() if len(r)), self.ddi)

    def personalize(self, weights: np.ndarray, data: HospitalData, opt: ClientOptimizer,
                    seed: int) -> np.ndarray:
        """Fine-tune only the output head (parameters named ``head.*``) on local data."""
        torch.manual_seed(_seed("personalize", seed))
        model = self.model_from(weights)
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(self.head_prefix))
        head = [p for p in model.parameters() if p.requires_grad]
        optim = self._optimizer(head, opt)
        train = data.train
        if len(train) == 0:
            return weights
        gen = torch.Generator()
        gen.manual_seed(_seed("pbatches", seed))
        x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
        loss_fn = nn.BCEWithLogitsLoss()
        model.train()
        for _ in range(opt.epochs):
            perm = torch.randperm(len(train), generator=gen)
            for i in range(0, len(train), opt.batch_size):
                idx = perm[i:i + opt.batch_size]
                optim.zero_grad()
                loss_fn(model(x[idx].float()), y[idx]).backward()
                optim.step()
        return self.flatten(model)
