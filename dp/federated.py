"""DP-SGD inside a federation round: one :class:`HospitalDP` per hospital.

The hospital's policy (target epsilon, delta, clipping norm, expected batch, budget) is its
own and never taken from the aggregator. Per round, :meth:`HospitalDP.begin_round` runs
BEFORE any training: it computes the round's mechanism and, if the accountant says the
budget would be exceeded, appends a signed ``refused`` ledger entry and refuses (no noise
drawn, no training). Otherwise :meth:`train` appends the signed ledger entry for the round
(epsilon recomputed from the WHOLE history) and only then samples, clips and noises.

The noise multiplier is calibrated once, at enrollment, to the hospital's whole planned
schedule: ``rounds x steps_per_round`` steps at sampling rate ``q = B / n_patients``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedrx.dp.accountants.accountant import PrivacyAccountant
from fedrx.dp.accountants.calibrate import calibrate_noise_multiplier
from fedrx.dp.accountants.mechanism import Mechanism
from fedrx.dp.budget_store import check_delta
from fedrx.dp.dpsgd import DPConfig, OptimizerFactory, PatientDPTrainer
from fedrx.dp.examples import GroupedExamples, PerExampleLoss
from fedrx.dp.ledger import PrivacyLedger
from fedrx.errors import ConfigError
from fedrx.secagg.identity import Identity


@dataclass(frozen=True)
class DPPlan:
    """A hospital's schedule: ``rounds`` rounds of ``steps_per_round`` DP-SGD steps."""

    rounds: int
    local_epochs: int = 1


class HospitalDP:
    """Patient-level DP for one hospital across the federation, with its signed ledger."""

    def __init__(self, hospital: str, identity: Identity, config: DPConfig, plan: DPPlan,
                 n_patients: int, run_dir: Path):
        config.validate()
        if n_patients < 2:
            raise ConfigError(f"hospital {hospital}: DP needs at least 2 training patients")
        self.hospital = hospital
        # small hospitals: expected batch at most half their patients (q <= 0.5)
        batch = min(config.expected_batch_patients, max(1, n_patients // 2))
        self.config = DPConfig(**{**asdict(config), "expected_batch_patients": batch})
        self.n_patients = n_patients
        self.sample_rate = batch / n_patients
        self.delta = self.config.resolved_delta(n_patients)
        check_delta(self.delta, n_patients, hospital)  # every node, not only simulate
        self.budget = self.config.budget(n_patients)
        self.steps_per_round = max(1, math.ceil(plan.local_epochs * n_patients / batch))
        self.ledger = PrivacyLedger.in_run_dir(run_dir, identity)
        self.accountant = PrivacyAccountant(self.config.accountant, self.ledger.history())
        self.noise_multiplier = calibrate_noise_multiplier(
            self.config.target_epsilon, self.delta, self.sample_rate,
            plan.rounds * self.steps_per_round, self.config.accountant,
            history=self.accountant.history)
        self._round = 0
        self._model_hash = ""

    def describe(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "noise_multiplier": self.noise_multiplier,
                "max_grad_norm": self.config.max_grad_norm, "delta": self.delta,
                "steps_per_round": self.steps_per_round, "budget_epsilon": self.budget.epsilon,
                "expected_batch_patients": self.config.expected_batch_patients,
                "accountant": self.config.accountant, "secure_noise": self.config.secure_noise}

    # -- hooks called by the hospital party and the task --------------------------------
    def begin_round(self, rnd: int, model_hash: str) -> str:
        """'' to go ahead, else the refusal reason (a refused entry is already in the ledger)."""
        self._round, self._model_hash = rnd, model_hash
        mech = Mechanism(self.sample_rate, self.noise_multiplier, self.steps_per_round)
        if self.accountant.would_exceed(mech, self.budget):
            eps = self.accountant.epsilon_after(mech, self.budget.delta)
            self.ledger.append(round=rnd, mechanism=None, max_grad_norm=self.config.max_grad_norm,
                               delta=self.delta, accountant=self.config.accountant,
                               model_hash=model_hash, budget_epsilon=self.budget.epsilon,
                               status="refused")
            return (f"privacy budget: this round would reach epsilon {eps:.3f} > budget "
                    f"{self.budget.epsilon:g}")
        return ""

    def ledger_head(self) -> str:
        return self.ledger.head().head_hash

    def epsilon(self) -> float:
        return self.accountant.epsilon(self.delta)

    def train(self, model: torch.nn.Module, loss_fn: PerExampleLoss, inputs: torch.Tensor,
              targets: torch.Tensor, groups: np.ndarray, *, n_groups: int, lr: float,
              optimizer_factory: OptimizerFactory,
              input_dtype: torch.dtype | None = None) -> dict[str, Any]:
        """DP-SGD of ``model`` (in place) on the hospital's training examples; the ledger
        entry is written first. Returns the round's DP record (mechanism, epsilon, delta).

        The task hands over its model, its per-example loss and its examples as tensors
        with the patient (``groups``, ``n_groups`` patients) of every row; see
        :class:`~fedrx.dp.examples.GroupedExamples`.
        """
        examples = GroupedExamples(inputs, targets, groups, n_groups, input_dtype)
        trainer = PatientDPTrainer(model, loss_fn, examples, self.config, self.noise_multiplier,
                                   optimizer_factory=optimizer_factory,
                                   accountant=self.accountant)

        def commit(mech: Mechanism, eps: float) -> None:
            self.ledger.append(round=self._round, mechanism=mech,
                               max_grad_norm=self.config.max_grad_norm, delta=self.delta,
                               accountant=self.config.accountant, model_hash=self._model_hash,
                               budget_epsilon=self.budget.epsilon)

        rec = trainer.train_steps(self.steps_per_round, lr, commit=commit)
        return asdict(rec) | {"epsilon": self.epsilon(), "delta": self.delta}
