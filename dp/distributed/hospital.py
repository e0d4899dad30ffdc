"""A hospital's side of distributed DP: one DP-SGD step on the whole federation per round.

Per round (:meth:`DistributedDP.begin_round`, then :meth:`DistributedDP.share`):

1. Budget check of the charged mechanism ``(q, sigma_eff, 1 step)``; a refusal is a signed
   ``refused`` ledger entry and no sampling or noise.
2. The signed ledger entry of the step is appended BEFORE any sampling or noise.
3. Poisson sampling of the hospital's patients at the FEDERATION's common rate ``q``;
   per-patient clipped gradients (clip ``C``, all of a patient's visits together) at the
   round's global model, summed: ``S_i`` (:mod:`fedrx.dp.clipping`).
4. The noise share (:mod:`fedrx.dp.distributed.sizing`): ``discrete`` for ``mask``
   (randomised rounding at ``2**scale_bits``, exact N_Z(0, V) noise from OS randomness,
   :class:`~fedrx.secagg.quantize.PreQuantised` input of the integer ring), ``gaussian``
   for ``ckks`` (float64 ``N(0, (sigma C)^2/(n-k))`` from the CSPRNG, snapped to a grid).
5. The protected input is ``[-(S_i + Z_i), c]`` with the public per-hospital count
   ``c = max(1, round(q N / n))``: the aggregator's average ``-(sum S_i + Z_i) / (s c)`` is
   the noisy gradient divided by the expected batch ``q N`` (up to dropouts and the rounding
   of ``c``), and its server optimizer takes the step. Nothing else leaves the hospital:
   not its realised batch, not its sum alone.

The noise multiplier is calibrated once, to the planned number of steps at ``q``, so that
the CHARGED sigma (the noise of ``n - k`` honest shares, slightly above the calibrated one
for discrete shares) keeps the planned epsilon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedrx.dp.accountants.accountant import PrivacyAccountant
from fedrx.dp.accountants.calibrate import calibrate_noise_multiplier
from fedrx.dp.accountants.mechanism import Budget, Mechanism
from fedrx.dp.accountants.registry import DEFAULT_ACCOUNTANT
from fedrx.dp.clipping import CLIPPED_SUMS, choose_method
from fedrx.dp.distributed.discrete import discrete_gaussian, os_source
from fedrx.dp.distributed.sizing import ShareSizing
from fedrx.dp.examples import GroupedExamples, PerExampleLoss
from fedrx.dp.ledger import PrivacyLedger
from fedrx.dp.noise import make_noise_source, snap_to_grid
from fedrx.errors import ConfigError, ProtocolAbort
from fedrx.secagg.identity import Identity
from fedrx.secagg.quantize import PreQuantised


@dataclass(frozen=True)
class DistributedPolicy:
    """The federation's distributed-DP settings (every hospital holds the same values).

    ``target_epsilon``/``delta``: the planned guarantee per patient; ``steps``: planned DP-SGD
    steps (one per round); ``sample_rate``: the common Poisson rate ``q`` (the federation's
    expected batch over its training patients); ``federation_patients``: ``N`` (public, sets
    the count entry); ``n_hospitals``: shares ``n``; ``k``: hospitals that may collude with
    the aggregator or be missing, together; ``max_grad_norm``: ``C``; ``share_kind``:
    ``"discrete"`` (mask) or ``"gaussian"`` (ckks); ``scale_bits``: the ring's fixed-point
    bits; ``budget_epsilon``: hard cap (None: ``target_epsilon``); ``secure_noise``: False
    only for seeded research runs of the GAUSSIAN share (discrete shares always use OS
    randomness).
    """

    target_epsilon: float
    delta: float
    steps: int
    sample_rate: float
    federation_patients: int
    n_hospitals: int
    k: int = 0
    max_grad_norm: float = 1.0
    share_kind: str = "discrete"
    scale_bits: int = 16
    accountant: str = DEFAULT_ACCOUNTANT
    budget_epsilon: float | None = None
    secure_noise: bool = True
    seed: int | None = None
    method: str = "auto"

    def validate(self) -> None:
        if not self.target_epsilon > 0:
            raise ConfigError(f"target_epsilon must be > 0, got {self.target_epsilon}")
        if not 0.0 < self.delta < 1.0:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}")
        if self.steps < 1:
            raise ConfigError("distributed DP needs at least one planned step")
        if not 0.0 < self.sample_rate <= 1.0:
            raise ConfigError(f"sample rate q must be in (0, 1], got {self.sample_rate}")
        if self.federation_patients < 2:
            raise ConfigError("distributed DP needs at least 2 training patients")

    @property
    def count(self) -> int:
        """Public per-hospital count entry ``max(1, round(q N / n))``."""
        return max(1, round(self.sample_rate * self.federation_patients / self.n_hospitals))


class DistributedDP:
    """One hospital's distributed-DP state across the federation, with its signed ledger."""

    mode = "distributed"

    def __init__(self, hospital: str, identity: Identity, policy: DistributedPolicy,
                 n_patients: int, dim: int, run_dir: Path):
        policy.validate()
        if n_patients < 1:
            raise ConfigError(f"hospital {hospital}: distributed DP needs training patients")
        self.hospital = hospital
        self.policy = policy
        self.n_patients = n_patients
        self.sample_rate = policy.sample_rate
        self.delta = policy.delta
        self.budget = Budget(policy.budget_epsilon or policy.target_epsilon, policy.delta)
        self.ledger = PrivacyLedger.in_run_dir(run_dir, identity)
        self.accountant = PrivacyAccountant(policy.accountant, self.ledger.history())
        self.noise_multiplier = calibrate_noise_multiplier(
            policy.target_epsilon, policy.delta, policy.sample_rate, policy.steps,
            policy.accountant, history=self.accountant.history)
        self.sizing = ShareSizing(policy.n_hospitals, policy.k, self.noise_multiplier,
                                  policy.max_grad_norm, dim, policy.share_kind,
                                  policy.scale_bits)
        self.charged_sigma = self.sizing.charged_noise_multiplier()
        self._noise = (make_noise_source(policy.secure_noise, policy.seed)
                       if policy.share_kind == "gaussian" else None)
        self._round = 0
        self._model_hash = ""

    @property
    def mechanism(self) -> Mechanism:
        """What one step charges: the subsampled Gaussian with the honest shares' sigma."""
        return Mechanism(self.sample_rate, self.charged_sigma, 1)

    def describe(self) -> dict[str, Any]:
        return self.sizing.describe() | {
            "sample_rate": self.sample_rate, "max_grad_norm": self.policy.max_grad_norm,
            "delta": self.delta, "steps_per_round": 1, "planned_steps": self.policy.steps,
            "budget_epsilon": self.budget.epsilon, "accountant": self.policy.accountant,
            "count": self.policy.count, "secure_noise": self.policy.secure_noise}

    def min_survivors(self) -> int:
        return self.sizing.min_survivors

    def begin_round(self, rnd: int, model_hash: str) -> str:
        """'' to go ahead, else the refusal reason (a refused entry is already written)."""
        self._round, self._model_hash = rnd, model_hash
        if self.accountant.would_exceed(self.mechanism, self.budget):
            eps = self.accountant.epsilon_after(self.mechanism, self.budget.delta)
            self.ledger.append(round=rnd, mechanism=None,
                               max_grad_norm=self.policy.max_grad_norm, delta=self.delta,
                               accountant=self.policy.accountant, model_hash=model_hash,
                               budget_epsilon=self.budget.epsilon, status="refused")
            return (f"privacy budget: this step would reach epsilon {eps:.3f} > budget "
                    f"{self.budget.epsilon:g}")
        return ""

    def ledger_head(self) -> str:
        return self.ledger.head().head_hash

    def epsilon(self) -> float:
        return self.accountant.epsilon(self.delta)

    # -- the step ----------------------------------------------------------------------
    def _clipped_sum(self, model: torch.nn.Module, loss_fn: PerExampleLoss,
                     examples: GroupedExamples) -> np.ndarray:
        """Poisson sample at ``q`` (OS coins), clipped per-patient gradient sum, float64."""
        coins = (self._noise.uniform(examples.n_groups) if self._noise is not None
                 else make_noise_source(True).uniform(examples.n_groups))
        patients = np.flatnonzero(coins < self.sample_rate)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if len(patients) == 0:
            return np.zeros(sum(p.numel() for _, p in named), dtype=np.float64)
        starts, ends = examples.bounds()
        counts = ends[patients] - starts[patients]
        rows = np.concatenate([np.arange(s, e) for s, e in
                               zip(starts[patients], ends[patients], strict=True)])
        local = np.repeat(np.arange(len(patients)), counts)
        x, y = examples.batch(torch.from_numpy(rows))
        model.train()
        method = choose_method(model, self.policy.method)
        sums, _ = CLIPPED_SUMS[method](model, loss_fn, x, y, torch.from_numpy(local),
                                       len(patients), self.policy.max_grad_norm)
        return torch.cat([sums[n].detach().reshape(-1) for n, _ in named]).double().numpy()

    def share(self, model: torch.nn.Module, loss_fn: PerExampleLoss, inputs: torch.Tensor,
              targets: torch.Tensor, groups: np.ndarray, *, n_groups: int,
              input_dtype: torch.dtype | None = None) -> tuple[Any, dict[str, Any]]:
        """The protected input of this step and its DP record; the ledger entry first.

        ``model`` holds the round's global weights (not changed). Returns a
        :class:`~fedrx.secagg.quantize.PreQuantised` (discrete) or a float64 vector
        ``[-(S + Z), count]`` (gaussian).
        """
        examples = GroupedExamples(inputs, targets, groups, n_groups, input_dtype)
        n_model = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if n_model != self.sizing.dim:
            raise ConfigError(f"model has {n_model} parameters, shares were sized for "
                              f"{self.sizing.dim}")
        mech = self.mechanism
        if self.accountant.would_exceed(mech, self.budget):
            raise ProtocolAbort("privacy budget exhausted (begin_round was skipped)")
        self.accountant.record(mech)
        self.ledger.append(round=self._round, mechanism=mech,
                           max_grad_norm=self.policy.max_grad_norm, delta=self.delta,
                           accountant=self.policy.accountant, model_hash=self._model_hash,
                           budget_epsilon=self.budget.epsilon,
                           distributed=self.sizing.describe())
        total = self._clipped_sum(model, loss_fn, examples)
        count = self.policy.count
        if self.sizing.kind == "gaussian":
            assert self._noise is not None
            std = self.sizing.share_std
            noisy = total + self._noise.normal((total.size,), std).numpy()
            noisy = snap_to_grid(torch.from_numpy(noisy), std).numpy()
            vector: Any = np.concatenate([-noisy, [float(count)]])
        else:
            vector = self.integer_share(total, count)
        record = self.describe() | {"epsilon": self.epsilon(), "round": self._round,
                                    "noise_multiplier": self.charged_sigma,
                                    "calibrated_noise_multiplier": self.noise_multiplier}
        return vector, record

    def integer_share(self, total: np.ndarray, count: int) -> PreQuantised:
        return integer_share(total, count, self.sizing, self.n_patients)


def integer_share(total: np.ndarray, count: int, sizing: ShareSizing,
                  n_patients: int) -> PreQuantised:
    """``-(round(gamma S) + Z)`` with exact N_Z(0, V) noise from OS randomness, as ring input.

    ``total``: the hospital's float64 clipped gradient sum ``S`` (norm <= ``n_patients C``);
    randomised rounding at ``gamma = 2**scale_bits`` with OS coins. A noise draw beyond
    ``margin sqrt(V)`` refuses the round (decided on the noise alone, never on the data).
    """
    from fedrx.secagg.quantize import stochastic_round

    if sizing.kind != "discrete":
        raise ConfigError("integer shares need a discrete sizing")
    rounded = stochastic_round(np.asarray(total, dtype=np.float64) * sizing.gamma)
    noise = discrete_gaussian(os_source(), sizing.share_variance, rounded.size)
    if int(np.max(np.abs(noise), initial=0)) > sizing.noise_bound():
        raise ProtocolAbort("a noise share exceeded its bound; refusing this round")
    values = -(rounded + noise)
    bound = sizing.share_bound(n_patients)
    if int(np.max(np.abs(values), initial=0)) > bound:
        raise ProtocolAbort("integer share out of its bound (clipping failed)")
    return PreQuantised(values, count, bound, sizing.scale_bits)


def federation_count(sample_rate: float, federation_patients: int, n_hospitals: int) -> int:
    """The public count entry every hospital sends (see :class:`DistributedPolicy`)."""
    return max(1, round(sample_rate * federation_patients / max(1, n_hospitals)))


def planned_steps(epochs: float, sample_rate: float) -> int:
    """Steps that make ``epochs`` expected passes over the federation: ``ceil(epochs/q)``."""
    return max(1, math.ceil(epochs / sample_rate))
