"""Patient-level DP-SGD: per-patient clipping bound, noise scale, budget refusal, no leaks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedrx.dp.accountants.accountant import PrivacyAccountant
from fedrx.dp.accountants.mechanism import Mechanism
from fedrx.dp.accountants.registry import compute_epsilon
from fedrx.dp.dpsgd import DPConfig, PatientDPTrainer
from fedrx.dp.examples import GroupedExamples
from fedrx.dp.noise import SecureNoise, SeededNoise
from fedrx.errors import BudgetExceeded, ConfigError, DataError
from fedrx.medrx.features import VisitTensors
from fedrx.medrx.model import MedRecMLP
from fedrx.medrx.task import per_visit_loss

D, L = 40, 6


def make_data(n_patients: int = 30, big_patient_visits: int = 25, seed: int = 0) -> VisitTensors:
    """Patient 0 has ``big_patient_visits`` visits, others 1-3; rows sorted by patient."""
    rng = np.random.default_rng(seed)
    counts = [big_patient_visits] + list(rng.integers(1, 4, n_patients - 1))
    n = int(sum(counts))
    x = (rng.random((n, D)) < 0.2).astype(np.uint8)
    y = (rng.random((n, L)) < 0.3).astype(np.float32)
    pid = np.repeat(np.arange(n_patients), counts).astype(np.int64)
    return VisitTensors(x, y, np.zeros_like(y), pid, n_patients)


def examples(data: VisitTensors) -> GroupedExamples:
    """The task's hand-over to DP: visits as tensors, the patient of each visit."""
    return GroupedExamples(torch.from_numpy(data.x), torch.from_numpy(data.y), data.patient,
                           data.n_patients, input_dtype=torch.float32)


def trainer(m: nn.Module, data: VisitTensors, config: DPConfig, sigma: float,
            cls: type[PatientDPTrainer] = PatientDPTrainer, **kw) -> PatientDPTrainer:
    return cls(m, per_visit_loss, examples(data), config, sigma, **kw)


def model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MedRecMLP(D, L, hidden=16, dropout=0.0)


def cfg(**kw) -> DPConfig:
    base = dict(target_epsilon=3.0, delta=1e-5, max_grad_norm=0.05, expected_batch_patients=6,
                secure_noise=False, seed=0)
    base.update(kw)
    return DPConfig(**base)


def flat(sums: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for _, v in sorted(sums.items())])


@pytest.mark.parametrize("method", ["ghost", "opacus"])
def test_one_patient_moves_clipped_sum_by_at_most_C(method):
    data = make_data()
    tr = trainer(model(), data, cfg(method=method), 1.0)
    with_p, norms = tr.clipped_patient_sum(np.arange(0, 12))
    without_p, _ = tr.clipped_patient_sum(np.arange(1, 12))
    C = tr.config.max_grad_norm
    # the 25-visit patient's raw gradient is far above C, so clipping is active ...
    assert norms[0] > 3 * C
    # ... and adding/removing the whole patient (all 25 visits) moves the sum by <= C
    diff = (flat(with_p) - flat(without_p)).norm().item()
    assert diff <= C * (1 + 1e-4)
    assert diff == pytest.approx(C, rel=1e-3)
    # visit-level clipping would NOT bound it: each visit clipped to C separately
    single_rows = [trainer(model(), VisitTensors(
        data.x[i:i + 1], data.y[i:i + 1], data.prev[i:i + 1], np.zeros(1, np.int64), 1),
        cfg(expected_batch_patients=1, method=method), 1.0).clipped_patient_sum(np.array([0]))[0]
        for i in range(25)]
    visit_level = sum(flat(s) for s in single_rows).norm().item()
    assert visit_level > 2 * C


def test_every_patient_clipped_to_C():
    data = make_data()
    tr = trainer(model(), data, cfg(), 1.0)
    for p in range(data.n_patients):
        s, norm = tr.clipped_patient_sum(np.array([p]))
        assert flat(s).norm().item() <= tr.config.max_grad_norm * (1 + 1e-4)
        assert flat(s).norm().item() == pytest.approx(
            min(norm.item(), tr.config.max_grad_norm), rel=1e-3)


@pytest.mark.parametrize("patients", [np.arange(0, 20, 2), np.arange(1, 21)],
                         ids=["with-25-visit-patient(full-gram)", "short-patients(padded)"])
def test_ghost_matches_opacus_per_sample_path(patients):
    data = make_data()
    a, na = trainer(model(), data, cfg(method="ghost"), 1.0).clipped_patient_sum(
        patients)
    b, nb = trainer(model(), data, cfg(method="opacus"), 1.0).clipped_patient_sum(
        patients)
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(na, nb, rtol=1e-4, atol=1e-6)


class _NoPatients(PatientDPTrainer):
    def sample_patients(self) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)


def test_noise_std_is_sigma_C_and_divided_by_expected_batch():
    data = make_data()
    m = MedRecMLP(D, L, hidden=256, dropout=0.0)  # ~13k parameters -> tight std estimate
    sigma, C = 1.7, 0.05
    tr = trainer(m, data, cfg(max_grad_norm=C), sigma, _NoPatients, noise=SeededNoise(1))
    before = [p.detach().clone() for p in m.parameters()]
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    tr.noisy_step(opt)
    # lr = 1: parameter change = -(0 + noise) / B with B the EXPECTED batch size
    delta = torch.cat([(b - p.detach()).reshape(-1) for b, p in zip(before, m.parameters(),
                                                                      strict=True)])
    noise = delta.double() * tr.expected_batch
    assert tr.expected_batch == 6
    assert noise.std().item() == pytest.approx(sigma * C, rel=0.03)
    assert abs(noise.mean().item()) < 5 * sigma * C / noise.numel() ** 0.5


def test_poisson_sampling_rate_recorded_exactly():
    data = make_data(n_patients=30)
    tr = trainer(model(), data, cfg(expected_batch_patients=6), 1.0,
                          noise=SeededNoise(3))
    assert tr.sample_rate == 6 / 30
    sizes = [len(tr.sample_patients()) for _ in range(2000)]
    assert np.mean(sizes) == pytest.approx(6, rel=0.05)
    assert np.var(sizes) == pytest.approx(30 * 0.2 * 0.8, rel=0.15)  # binomial, not fixed
    rec = tr.train_steps(2, lr=0.1)
    assert rec.mechanism == Mechanism(0.2, 1.0, 2)


@pytest.mark.parametrize("method", ["ghost", "opacus"])
def test_trains_in_place_and_leaves_no_hooks(method):
    m = model()
    data = make_data()
    before = [p.detach().clone() for p in m.parameters()]
    tr = trainer(m, data, cfg(method=method, secure_noise=True, seed=None), 0.8)
    assert isinstance(tr.noise, SecureNoise)
    tr.train_steps(3, lr=0.5)
    assert any(not torch.equal(b, p) for b, p in zip(before, m.parameters(), strict=True))
    for mod in m.modules():
        assert not mod._forward_hooks and not mod._backward_hooks
        assert not mod._forward_pre_hooks and not getattr(mod, "_backward_pre_hooks", {})
    for p in m.parameters():
        assert not hasattr(p, "grad_sample") and p.grad is None
    assert type(m) is MedRecMLP
    assert tr.noise.draws > 0


def test_budget_refusal_before_any_noise_or_sampling():
    data = make_data()
    m = model()
    before = [p.detach().clone() for p in m.parameters()]
    acc = PrivacyAccountant("prv", [Mechanism(6 / 30, 1.0, 40)])
    spent = acc.epsilon(1e-5)
    noise = SeededNoise(0)
    commits = []
    tr = trainer(m, data, cfg(budget_epsilon=spent + 0.05), 1.0, noise=noise,
                          accountant=acc)
    with pytest.raises(BudgetExceeded, match="refusing before any noise"):
        tr.train_steps(40, lr=0.5, commit=lambda mech, eps: commits.append(eps))
    assert noise.draws == 0 and commits == []
    assert len(acc.history) == 1
    assert all(torch.equal(b, p) for b, p in zip(before, m.parameters(), strict=True))
    # a round that fits is charged (before noise) and committed
    tr.config.budget_epsilon = spent + 10
    tr.train_steps(5, lr=0.5, commit=lambda mech, eps: commits.append((mech, eps, noise.draws)))
    mech, eps, draws_at_commit = commits[0]
    assert draws_at_commit == 0 and mech == Mechanism(0.2, 1.0, 5)
    assert eps == pytest.approx(compute_epsilon(acc.history, 1e-5))


def test_config_guards():
    data = make_data()
    with pytest.raises(ConfigError):
        trainer(model(), data, cfg(secure_noise=True, seed=1), 1.0)
    with pytest.raises(ConfigError):
        trainer(model(), data, cfg(secure_noise=True, seed=None), 1.0,
                         noise=SeededNoise(0))
    with pytest.raises(ConfigError):
        trainer(model(), data, cfg(expected_batch_patients=31), 1.0)

    class Emb(nn.Module):
        def __init__(self):
            super().__init__()
            self.e = nn.Embedding(D, L)

        def forward(self, x):
            return x.float() @ self.e.weight

    with pytest.raises(ConfigError):
        trainer(Emb(), data, cfg(method="ghost"), 1.0)
    assert trainer(Emb(), data, cfg(), 1.0).method == "opacus"


def test_examples_are_checked():
    x, y = torch.zeros((4, D)), torch.zeros((4, L))
    with pytest.raises(DataError, match="sorted by group"):
        GroupedExamples(x, y, np.array([0, 1, 0, 1]), 2)
    with pytest.raises(DataError, match="sorted by group"):
        GroupedExamples(x, y, np.array([0, 0, 1, 2]), 2)
    with pytest.raises(DataError, match="equal in number"):
        GroupedExamples(x, y[:3], np.array([0, 0, 1, 1]), 2)
    with pytest.raises(DataError, match="at least one patient"):
        GroupedExamples(x[:0], y[:0], np.zeros(0, np.int64), 2)
    ex = GroupedExamples(x, y, np.array([0, 0, 2, 2]), 4)  # units 1 and 3 have no rows
    starts, ends = ex.bounds()
    assert list(starts) == [0, 2, 2, 4] and list(ends) == [2, 2, 4, 4]


def test_trainer_is_blind_to_the_task_any_model_loss_and_grouping():
    # a regression task with a per-example squared error; groups of 1..4 rows
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(20), rng.integers(1, 5, 20))
    x = torch.from_numpy(rng.normal(size=(len(groups), 5)))
    y = x @ torch.arange(1.0, 6.0, dtype=torch.float64)[:, None]
    torch.manual_seed(0)
    m = nn.Linear(5, 1).double()

    def mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((out - target) ** 2).sum(dim=1)

    ex = GroupedExamples(x, y, groups, 20)
    for method in ("ghost", "opacus"):
        tr = PatientDPTrainer(m, mse, ex, cfg(method=method, max_grad_norm=0.5), 1.0)
        for p in range(20):
            s, _ = tr.clipped_patient_sum(np.array([p]))
            assert flat(s).norm().item() <= 0.5 * (1 + 1e-4)
    before = mse(m(x), y).mean().item()
    PatientDPTrainer(m, mse, ex, cfg(max_grad_norm=5.0, expected_batch_patients=10),
                     0.3).train_steps(60, lr=0.2)
    assert mse(m(x), y).mean().item() < 0.5 * before
