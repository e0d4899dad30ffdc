"""Patient-level DP-SGD for one hospital's local training.

The privacy unit is the PATIENT (all of a patient's visits). One step:

1. **Poisson sampling of patients**: every patient is included independently with
   probability ``q = expected_batch_patients / n_patients`` (recorded exactly as this
   float). Coins come from the :class:`~fedrx.dp.noise.NoiseSource` (CSPRNG in deployment).
2. **Per-patient gradients**: a patient's loss is the SUM over their visit rows of the
   per-visit loss (binary cross-entropy averaged over the ``L`` labels, the same per-visit
   loss as non-private training); its gradient is taken over the whole model.
3. **Clip** each patient's gradient to L2 norm ``C = max_grad_norm`` (all parameters
   together): ``g_p * min(1, C / (||g_p|| + 1e-6))``.
4. **Sum** the clipped gradients, add Gaussian noise ``N(0, (sigma C)^2)`` per coordinate
   (float64, then :func:`~fedrx.dp.noise.snap_to_grid`), and **divide by the EXPECTED
   batch size** ``B = q * n_patients`` (not the realised one, which would leak it).
5. Optimizer step (``torch.optim.SGD`` by default) with the noised gradient.

Adding or removing one patient changes the pre-noise sum by at most ``C`` (tested in
tests/test_dp_dpsgd.py), so each step is the Poisson-subsampled Gaussian mechanism with
sensitivity ``C`` that :mod:`fedrx.dp.accountant` accounts for.

Per-patient gradients, two interchangeable implementations (``DPConfig.method``):

* ``"opacus"``: Opacus' :class:`~opacus.GradSampleModule` (``loss_reduction="sum"``)
  computes per-VISIT gradients; they are summed per patient with ``index_add_`` before
  clipping. Works for every layer type Opacus supports; memory ``rows x params``.
* ``"ghost"`` (used by ``"auto"`` when every parametrised module is ``nn.Linear``):
  patient-grouped ghost clipping. For a linear layer the per-visit gradient is
  ``g_i a_i^T`` (output-gradient times input), so a patient's squared norm is
  ``sum_{i,j in p} (g_i.g_j)(a_i.a_j + 1)`` (the ``+1`` for the bias) and the clipped sum is
  ``G^T diag(c) A`` with per-row factors ``c``; no per-visit gradient is materialised.
  Tested to give the same clipped sum as the Opacus path. Each linear layer must be
  called once per forward pass on 2-D input.

The model passed in is trained IN PLACE: after :meth:`PatientDPTrainer.train_steps` no
hooks and no ``grad_sample`` attributes remain, and its parameters hold the trained
weights.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fedrx.dp.accountant import (
    ACCOUNTANTS,
    Budget,
    BudgetExceeded,
    Mechanism,
    PrivacyAccountant,
    default_delta,
)
from fedrx.dp.noise import NoiseSource, make_noise_source, snap_to_grid
from fedrx.errors import ConfigError, DataError
from fedrx.medrx.features import VisitTensors

METHODS = ("auto", "ghost", "opacus")
OptimizerFactory = Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]


@dataclass
class DPConfig:
    """A hospital's local DP policy (never taken from the server).

    ``target_epsilon``: epsilon the planned schedule is calibrated to; ``delta``: None means
    :func:`~fedrx.dp.accountant.default_delta` of the hospital's patient count;
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
    accountant: str = "prv"
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


def _param_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules()
            if any(p.requires_grad for p in m.parameters(recurse=False))]


def _per_visit_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """BCE averaged over labels, one value per visit row (shape ``(rows,)``)."""
    return F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(dim=1)


class PatientDPTrainer:
    """Patient-level DP-SGD on ``data`` for ``model`` (trained in place).

    ``noise_multiplier`` is sigma (noise std / C), usually from
    :func:`~fedrx.dp.accountant.calibrate_noise_multiplier` over the federation's whole
    planned schedule. ``accountant``, when given, is checked against the config's budget
    before every :meth:`train_steps` call and charged before any sampling or noise.
    """

    def __init__(
        self,
        model: nn.Module,
        data: VisitTensors,
        config: DPConfig,
        noise_multiplier: float,
        *,
        optimizer_factory: OptimizerFactory | None = None,
        noise: NoiseSource | None = None,
        accountant: PrivacyAccountant | None = None,
    ) -> None:
        config.validate()
        if data.n_patients < 1 or len(data) == 0:
            raise DataError("DP training needs at least one patient with a visit")
        if config.expected_batch_patients > data.n_patients:
            raise ConfigError(f"expected_batch_patients {config.expected_batch_patients} > "
                              f"patients {data.n_patients}")
        if not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
            raise ConfigError(f"noise_multiplier must be > 0, got {noise_multiplier}")
        self.model = model
        self.data = data
        self.config = config
        self.noise_multiplier = float(noise_multiplier)
        self.sample_rate = config.expected_batch_patients / data.n_patients
        self.expected_batch = self.sample_rate * data.n_patients
        self.delta = config.resolved_delta(data.n_patients)
        self.optimizer_factory = optimizer_factory or _sgd
        if noise is None:
            noise = make_noise_source(config.secure_noise, config.seed)
        elif config.secure_noise and not noise.secure:
            raise ConfigError("secure_noise=True but an insecure noise source was given")
        self.noise = noise
        self.accountant = accountant
        self.method = self._choose_method(config.method)
        self._x = torch.from_numpy(data.x)
        self._y = torch.from_numpy(data.y)
        bounds = np.searchsorted(data.patient, np.arange(data.n_patients + 1))
        self._starts, self._ends = bounds[:-1], bounds[1:]

    def _choose_method(self, method: str) -> str:
        linear_only = all(isinstance(m, nn.Linear) for m in _param_modules(self.model))
        if method == "auto":
            return "ghost" if linear_only else "opacus"
        if method == "ghost" and not linear_only:
            raise ConfigError("method='ghost' needs a model whose parametrised modules are "
                              "all nn.Linear; use method='opacus'")
        return method

    # -- sampling ---------------------------------------------------------------------

    def sample_patients(self) -> np.ndarray:
        """Poisson sample: each patient independently with probability ``sample_rate``."""
        coins = self.noise.uniform(self.data.n_patients)
        return np.flatnonzero(coins < self.sample_rate)

    def _rows(self, patients: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices of ``patients`` and, per row, the position of its patient (0..k-1)."""
        counts = self._ends[patients] - self._starts[patients]
        rows = np.concatenate([np.arange(s, e) for s, e in
                               zip(self._starts[patients], self._ends[patients], strict=True)])
        local = np.repeat(np.arange(len(patients)), counts)
        return torch.from_numpy(rows), torch.from_numpy(local)

    # -- per-patient clipped sums -----------------------------------------------------

    def clipped_patient_sum(
        self, patients: np.ndarray
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Sum over ``patients`` of their clipped gradients, BEFORE noise.

        Returns ``(sums by parameter name, pre-clip per-patient L2 norms)``. Puts the
        model in train mode (dropout active; Opacus only captures activations then).
        """
        self.model.train()
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        patients = np.asarray(patients, dtype=np.int64)
        if len(patients) == 0:
            return {n: torch.zeros_like(p) for n, p in params.items()}, torch.zeros(0)
        rows, local = self._rows(patients)
        x = self._x[rows].float()
        y = self._y[rows]
        if self.method == "ghost":
            return self._ghost(x, y, local, len(patients), params)
        return self._opacus(x, y, local, len(patients), params)

    def _factors(self, norms: torch.Tensor) -> torch.Tensor:
        c = self.config.max_grad_norm
        return (c / (norms + 1e-6)).clamp(max=1.0)

    def _opacus(self, x: torch.Tensor, y: torch.Tensor, local: torch.Tensor, k: int,
                params: dict[str, nn.Parameter]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        from opacus import GradSampleModule

        gsm = GradSampleModule(self.model, batch_first=True, loss_reduction="sum")
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                _per_visit_loss(gsm(x), y).sum().backward()
            per_patient = {}
            for n, p in params.items():
                gs = p.grad_sample
                per_patient[n] = torch.zeros((k, *p.shape), dtype=gs.dtype).index_add_(
                    0, local, gs)
        finally:
            gsm._close()
            for p in params.values():
                p.grad = None
        norms = torch.sqrt(sum(g.reshape(k, -1).pow(2).sum(1) for g in per_patient.values()))
        f = self._factors(norms)
        return {n: torch.einsum("p,p...->...", f, g) for n, g in per_patient.items()}, norms

    @staticmethod
    def _group_sq_norms(g: torch.Tensor, a: torch.Tensor | None, bias: bool,
                        local: torch.Tensor, k: int) -> torch.Tensor:
        """Per-patient ``||sum_{i in p} [g_i a_i^T, g_i]||^2`` for one linear layer,
        ``= sum_{i,j in p} (g_i.g_j)(a_i.a_j + bias)``, from same-patient row pairs only.

        Rows of a patient are contiguous (``local`` non-decreasing). Patients are padded to
        the largest visit count and Gram blocks computed with ``bmm``; if padding would more
        than quadruple the rows, the full masked ``rows x rows`` Gram is used instead.
        """
        rows = len(local)
        counts = torch.bincount(local, minlength=k)
        vmax = int(counts.max())
        if k * vmax <= 4 * rows + 64:
            starts = torch.cumsum(counts, 0) - counts
            pos = torch.arange(rows) - starts[local]
            pg = g.new_zeros((k, vmax, g.shape[1]))
            pg[local, pos] = g
            kern = torch.bmm(pg, pg.transpose(1, 2))
            if a is not None:
                pa = a.new_zeros((k, vmax, a.shape[1]))
                pa[local, pos] = a
                # padded g rows are zero, so the "+ bias" term only counts real pairs
                kern = kern * (torch.bmm(pa, pa.transpose(1, 2)) + float(bias))
            elif not bias:
                return torch.zeros(k, dtype=torch.float64)
            return kern.sum((1, 2)).double()
        same = local[:, None] == local[None, :]
        kern = g @ g.T
        if a is not None:
            kern = kern * (a @ a.T + float(bias))
        elif not bias:
            return torch.zeros(k, dtype=torch.float64)
        return torch.zeros(k, dtype=torch.float64).index_add_(
            0, local, (kern * same).sum(1).double())

    def _ghost(self, x: torch.Tensor, y: torch.Tensor, local: torch.Tensor, k: int,
               params: dict[str, nn.Parameter]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        layers = [m for m in _param_modules(self.model) if isinstance(m, nn.Linear)]
        acts: dict[nn.Module, torch.Tensor] = {}
        outs: dict[nn.Module, torch.Tensor] = {}

        def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            if mod in outs:
                raise ConfigError("method='ghost': a linear layer ran twice in one forward "
                                  "pass (weight sharing); use method='opacus'")
            if inp[0].dim() != 2:
                raise ConfigError("method='ghost' needs 2-D inputs to every linear layer")
            acts[mod] = inp[0].detach()
            outs[mod] = out

        handles = [m.register_forward_hook(hook) for m in layers]
        try:
            loss = _per_visit_loss(self.model(x), y).sum()
        finally:
            for h in handles:
                h.remove()
        grads = torch.autograd.grad(loss, [outs[m] for m in layers])
        sq = torch.zeros(k, dtype=torch.float64)
        for m, g in zip(layers, grads, strict=True):
            bias = m.bias is not None and m.bias.requires_grad
            sq += self._group_sq_norms(g, acts[m] if m.weight.requires_grad else None, bias,
                                       local, k)
        norms = sq.clamp(min=0.0).sqrt().float()
        c_row = self._factors(norms)[local]
        names = {id(p): n for n, p in params.items()}
        sums: dict[str, torch.Tensor] = {}
        for m, g in zip(layers, grads, strict=True):
            gc = g * c_row[:, None]
            if m.weight.requires_grad:
                sums[names[id(m.weight)]] = gc.T @ acts[m]
            if m.bias is not None and m.bias.requires_grad:
                sums[names[id(m.bias)]] = gc.sum(0)
        return sums, norms

    # -- training ---------------------------------------------------------------------

    def check_budget(self, steps: int) -> Mechanism:
        """The mechanism of ``steps`` more steps; raises :class:`BudgetExceeded` if the
        accountant's history plus it would pass the budget. Draws no randomness."""
        mech = Mechanism(self.sample_rate, self.noise_multiplier, steps)
        if self.accountant is not None:
            budget = self.config.budget(self.data.n_patients)
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
