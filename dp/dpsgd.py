"""Patient-level DP-SGD for one hospital's local training.

The privacy unit is the PATIENT (all of a patient's visits). One step:

1. **Poisson sampling of patients**: every patient is included independently with
   probability ``q = expected_batch_patients / n_patients`` (recorded exactly as this
   float). Coins come from the :class:`~fedrx.dp.noise.NoiseSource` (CSPRNG in deployment).
2. **Per-patient gradients**: a patient's loss is the SUM over their rows of the task's
   per-example loss; its gradient is taken over the whole model.
3. **Clip** each patient's gradient to L2 norm ``C = max_grad_norm`` (all parameters
   together): ``g_p * min(1, C / (||g_p|| + 1e-6))``.
4. **Sum** the clipped gradients, add Gaussian noise ``N(0, (sigma C)^2)`` per coordinate
   (float64, then :func:`~fedrx.dp.noise.snap_to_grid`), and **divide by the EXPECTED
   batch size** ``B = q * n_patients`` (not the realised one, which would leak it).
5. Optimizer step (``torch.optim.SGD`` by default) with the noised gradient.

Adding or removing one patient changes the pre-noise sum by at most ``C`` (tested in
tests/test_dp_dpsgd.py), so each step is the Poisson-subsampled Gaussian mechanism with
sensitivity ``C`` that :mod:`fedrx.dp.accountants` accounts for.

Per-patient gradients: :mod:`fedrx.dp.clipping` (``DPConfig.method``: ``"opacus"`` per-row
gradients summed per patient, or ``"ghost"`` patient-grouped ghost clipping, which
``"auto"`` picks when every parametrised module is ``nn.Linear``).

The trainer is blind to the task: it gets a torch model, a per-example loss and
:class:`~fedrx.dp.examples.GroupedExamples` (tensors and the patient of every row), and it
never looks inside the data beyond slicing rows.

The model passed in is trained IN PLACE: after :meth:`PatientDPTrainer.train_steps` no
hooks and no ``grad_sample`` attributes remain, and its parameters hold the trained
weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedrx.dp.accountants.accountant import PrivacyAccountant
from fedrx.dp.accountants.mechanism import Budget, Mechanism, default_delta
from fedrx.dp.accountants.registry import ACCOUNTANTS, DEFAULT_ACCOUNTANT
from fedrx.dp.clipping import CLIPPED_SUMS, METHODS, ClippedSum, choose_method
from fedrx.dp.examples import GroupedExamples, PerExampleLoss
from fedrx.dp.noise import NoiseSource, make_noise_source, snap_to_grid
from fedrx.errors import BudgetExceeded, ConfigError

OptimizerFactory = Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]


@dataclass
class DPConfig:
    """A hospital's local DP policy (never taken from the server).

    ``target_epsilon``: epsilon the planned schedule is calibrated to; ``delta``: None means
    :func:`~fedrx.dp.accountants.mechanism.default_delta` of the hospital's patient count;
    ``max_grad_norm``: per-patient clipping norm ``C`` (L2, whole model);
    ``expected_batch_patients``: ``B``, so ``q = B / n_patients``; ``budget_epsilon``: the
    hard cap enforced before each round (None means ``target_epsilon``); ``secure_noise``:
    True (deployment) draws from the ChaCha20 CSPRNG, False from a seeded torch generator
    (``seed``), NOT for deployment.
    """

    target_epsilon: float
    delta: float | None = None
    max_grad_norm: float = 1.0
    expected_batch_patients: int = 32
    accountant: str = DEFAULT_ACCOUNTANT
    secure_noise: bool = True
    budget_epsilon: float | None = None
    seed: int | None = None
    method: str = "auto"

    def validate(self) -> None:
        if not self.target_epsilon > 0:
            raise ConfigError(f"target_epsilon must be > 0, got {self.target_epsilon}")
        if self.delta is not None and not (0.0 < self.delta < 1.0):
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}")
        if not (self.max_grad_norm > 0 and math.isfinite(self.max_grad_norm)):
            raise ConfigError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.expected_batch_patients < 1:
            raise ConfigError("expected_batch_patients must be >= 1")
        if self.accountant not in ACCOUNTANTS:
            raise ConfigError(f"accountant must be one of {ACCOUNTANTS}")
        if self.budget_epsilon is not None and not self.budget_epsilon > 0:
            raise ConfigError(f"budget_epsilon must be > 0, got {self.budget_epsilon}")
        if self.secure_noise and self.seed is not None:
            raise ConfigError("secure_noise=True cannot take a seed")
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}")

    def resolved_delta(self, n_patients: int) -> float:
        return self.delta if self.delta is not None else default_delta(n_patients)

    def budget(self, n_patients: int) -> Budget:
        eps = self.budget_epsilon if self.budget_epsilon is not None else self.target_epsilon
        return Budget(eps, self.resolved_delta(n_patients))


@dataclass(frozen=True)
class DPStepRecord:
    """What one :meth:`PatientDPTrainer.train_steps` call ran (the ledger's mechanism)."""

    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float
    steps: int
    expected_batch_patients: float

    @property
    def mechanism(self) -> Mechanism:
        return Mechanism(self.sample_rate, self.noise_multiplier, self.steps)


def _sgd(params: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr)


class PatientDPTrainer:
    """Patient-level DP-SGD of ``model`` under ``loss_fn`` on ``examples`` (trained in place).

    ``loss_fn(outputs, targets)`` returns one loss per example row (e.g. binary
    cross-entropy with logits, reduced over labels only); a patient's loss is the sum over
    their rows. ``noise_multiplier`` is sigma (noise std / C), usually from
    :func:`~fedrx.dp.accountants.calibrate.calibrate_noise_multiplier` over the
    federation's whole planned schedule. ``accountant``, when given, is checked against the
    config's budget before every :meth:`train_steps` call and charged before any sampling
    or noise.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: PerExampleLoss,
        examples: GroupedExamples,
        config: DPConfig,
        noise_multiplier: float,
        *,
        optimizer_factory: OptimizerFactory | None = None,
        noise: NoiseSource | None = None,
        accountant: PrivacyAccountant | None = None,
    ) -> None:
        config.validate()
        n_patients = examples.n_groups
        if config.expected_batch_patients > n_patients:
            raise ConfigError(f"expected_batch_patients {config.expected_batch_patients} > "
                              f"patients {n_patients}")
        if not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
            raise ConfigError(f"noise_multiplier must be > 0, got {noise_multiplier}")
        self.model = model
        self.loss_fn = loss_fn
        self.examples = examples
        self.config = config
        self.noise_multiplier = float(noise_multiplier)
        self.sample_rate = config.expected_batch_patients / n_patients
        self.expected_batch = self.sample_rate * n_patients
        self.delta = config.resolved_delta(n_patients)
        self.optimizer_factory = optimizer_factory or _sgd
        if noise is None:
            noise = make_noise_source(config.secure_noise, config.seed)
        elif config.secure_noise and not noise.secure:
            raise ConfigError("secure_noise=True but an insecure noise source was given")
        self.noise = noise
        self.accountant = accountant
        self.method = choose_method(model, config.method)
        self._starts, self._ends = examples.bounds()

    # -- sampling ---------------------------------------------------------------------

    def sample_patients(self) -> np.ndarray:
        """Poisson sample: each patient independently with probability ``sample_rate``."""
        coins = self.noise.uniform(self.examples.n_groups)
        return np.flatnonzero(coins < self.sample_rate)

    def _rows(self, patients: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices of ``patients`` and, per row, the position of its patient (0..k-1)."""
        counts = self._ends[patients] - self._starts[patients]
        rows = np.concatenate([np.arange(s, e) for s, e in
                               zip(self._starts[patients], self._ends[patients], strict=True)])
        local = np.repeat(np.arange(len(patients)), counts)
        return torch.from_numpy(rows), torch.from_numpy(local)

    # -- per-patient clipped sums -----------------------------------------------------

    def clipped_patient_sum(self, patients: np.ndarray) -> ClippedSum:
        """Sum over ``patients`` of their clipped gradients, BEFORE noise.

        Returns ``(sums by parameter name, pre-clip per-patient L2 norms)``. Puts the
        model in train mode (dropout active; Opacus only captures activations then).
        """
        self.model.train()
        patients = np.asarray(patients, dtype=np.int64)
        if len(patients) == 0:
            return {n: torch.zeros_like(p) for n, p in self.model.named_parameters()
                    if p.requires_grad}, torch.zeros(0)
        rows, local = self._rows(patients)
        x, y = self.examples.batch(rows)
        return CLIPPED_SUMS[self.method](self.model, self.loss_fn, x, y, local, len(patients),
                                         self.config.max_grad_norm)

    # -- training ---------------------------------------------------------------------

    def check_budget(self, steps: int) -> Mechanism:
        """The mechanism of ``steps`` more steps; raises :class:`BudgetExceeded` if the
        accountant's history plus it would pass the budget. Draws no randomness."""
        mech = Mechanism(self.sample_rate, self.noise_multiplier, steps)
        if self.accountant is not None:
            budget = self.config.budget(self.examples.n_groups)
            if self.accountant.would_exceed(mech, budget):
                eps = self.accountant.epsilon_after(mech, budget.delta)
                raise BudgetExceeded(
                    f"{steps} more DP steps would reach epsilon {eps:.3f} > budget "
                    f"{budget.epsilon} at delta {budget.delta:g}; refusing before any noise")
        return mech

    def noisy_step(self, optimizer: torch.optim.Optimizer) -> int:
        """One DP-SGD step (sample, clip, sum, noise, divide by B, step); returns the
        number of patients sampled (for local diagnostics only; never release it)."""
        patients = self.sample_patients()
        sums, _ = self.clipped_patient_sum(patients)
        std = self.noise_multiplier * self.config.max_grad_norm
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        flat = torch.cat([sums[n].detach().reshape(-1) for n, _ in named]).double()
        flat += self.noise.normal((flat.numel(),), std)
        flat = snap_to_grid(flat, std)
        flat /= self.expected_batch
        offset = 0
        for _, p in named:
            k = p.numel()
            p.grad = flat[offset:offset + k].reshape(p.shape).to(p.dtype)
            offset += k
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return len(patients)

    def train_steps(
        self,
        steps: int,
        lr: float,
        *,
        commit: Callable[[Mechanism, float], None] | None = None,
    ) -> DPStepRecord:
        """Run ``steps`` DP-SGD steps with learning rate ``lr``; the model is trained in place.

        Order: budget check (no randomness) -> charge the accountant -> ``commit(mechanism,
        cumulative epsilon)`` (e.g. append the signed ledger entry; if it raises nothing
        is trained) -> sampling, clipping, noise.
        """
        if steps < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        mech = self.check_budget(steps)
        eps = float("nan")
        if self.accountant is not None:
            self.accountant.record(mech)
            eps = self.accountant.epsilon(self.delta)
        if commit is not None:
            commit(mech, eps)
        optimizer = self.optimizer_factory(
            [p for p in self.model.parameters() if p.requires_grad], lr)
        self.model.train()
        for _ in range(steps):
            self.noisy_step(optimizer)
        return DPStepRecord(self.sample_rate, self.noise_multiplier,
                            self.config.max_grad_norm, steps, self.expected_batch)
