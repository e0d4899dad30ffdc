"""The default ``pld`` accountant: incremental composition, its caches, fast calibration."""

from __future__ import annotations

import pytest
from dp_accounting.pld import privacy_loss_distribution as pl
from scipy import signal

from fedrx.dp.accountants import pld
from fedrx.dp.accountants.accountant import PrivacyAccountant
from fedrx.dp.accountants.calibrate import calibrate_noise_multiplier
from fedrx.dp.accountants.independent import pld_epsilon, reference_pld_epsilon
from fedrx.dp.accountants.mechanism import Mechanism
from fedrx.dp.accountants.registry import compute_epsilon
from fedrx.errors import ConfigError

DELTA = 1e-5
ROUND = Mechanism(0.05, 1.1, 25)


class _Spy:
    """Counts dp_accounting's PLD constructions, self-compositions and the convolutions of
    PMFs (one per PMF, remove and add, in a composition of two PLDs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = {"create": 0, "self_compose": 0, "convolve": 0}
        cls = pl.PrivacyLossDistribution
        orig_create, orig_self, orig_conv = (pl.from_gaussian_mechanism, cls.self_compose,
                                             signal.fftconvolve)

        def create(*a, **k):
            self.calls["create"] += 1
            return orig_create(*a, **k)

        def self_compose(obj, *a, **k):
            self.calls["self_compose"] += 1
            return orig_self(obj, *a, **k)

        def convolve(*a, **k):
            self.calls["convolve"] += 1
            return orig_conv(*a, **k)

        monkeypatch.setattr(pl, "from_gaussian_mechanism", create)
        monkeypatch.setattr(cls, "self_compose", self_compose)
        monkeypatch.setattr(signal, "fftconvolve", convolve)

    def take(self) -> dict[str, int]:
        out, self.calls = self.calls, dict.fromkeys(self.calls, 0)
        return out


def test_a_round_costs_one_convolution_not_a_rebuild(monkeypatch):
    pld.clear_caches()
    spy = _Spy(monkeypatch)
    acc = PrivacyAccountant("pld")
    acc.record(ROUND)
    acc.epsilon(DELTA)
    assert spy.take() == {"create": 1, "self_compose": 1, "convolve": 0}
    for _ in range(5):
        # what a hospital does per round: budget check, charge, epsilon, ledger recomputation
        acc.epsilon_after(ROUND, DELTA)
        acc.record(ROUND)
        acc.epsilon(DELTA)
        compute_epsilon(acc.history, DELTA, "pld")
        assert spy.take() == {"create": 0, "self_compose": 0, "convolve": 2}


def test_incremental_equals_from_scratch_and_replays():
    pld.clear_caches()
    acc = PrivacyAccountant("pld")
    hist = [ROUND] * 8 + [Mechanism(0.1, 2.0, 10)] * 3 + [ROUND] * 2
    for m in hist:
        acc.record(m)
        acc.epsilon(DELTA)
    inc = acc.epsilon(DELTA)
    pld.clear_caches()
    scratch = compute_epsilon([Mechanism(0.05, 1.1, 250), Mechanism(0.1, 2.0, 30)], DELTA, "pld")
    assert inc == pytest.approx(scratch, rel=1e-9)
    pld.clear_caches()
    assert PrivacyAccountant("pld", list(reversed(hist))).epsilon(DELTA) == pytest.approx(
        inc, rel=1e-9)  # a replayed ledger history restores it, in any order


def test_pld_is_an_upper_bound_close_to_prv_and_below_rdp():
    hist = [ROUND] * 20
    p = compute_epsilon(hist, DELTA, "pld")
    ref = reference_pld_epsilon([(0.05, 1.1, 500)], DELTA)
    assert ref <= p <= ref * 1.001
    assert abs(p - compute_epsilon(hist, DELTA, "prv")) <= 0.02 * p
    assert p < compute_epsilon(hist, DELTA, "rdp")


def test_audit_reference_incremental_equals_from_scratch():
    hist: list[tuple[float, float, int]] = []
    for _ in range(6):
        hist.append((0.05, 1.1, 25))
        inc = pld_epsilon(hist, DELTA)
    assert inc == pytest.approx(reference_pld_epsilon([(0.05, 1.1, 150)], DELTA,
                                                      discretization=5e-4), rel=1e-9)
    assert inc == pytest.approx(reference_pld_epsilon([(0.05, 1.1, 150)], DELTA), rel=1e-3)


@pytest.mark.parametrize(("target", "q", "steps"), [(8.0, 0.5, 4), (3.0, 0.05, 1000),
                                                    (1.0, 0.01, 1000)])
def test_calibration_meets_target_on_the_recording_accountant(target, q, steps):
    pld.clear_caches()
    sigma = calibrate_noise_multiplier(target, DELTA, q, steps)
    # charged round by round afterwards, the final epsilon still meets the target
    per_round = max(1, steps // 10)
    acc = PrivacyAccountant("pld")
    for _ in range(steps // per_round):
        acc.record(Mechanism(q, sigma, per_round))
        acc.epsilon(DELTA)
    eps = acc.epsilon(DELTA)
    assert target - 0.01 < eps <= target
    assert reference_pld_epsilon([(q, sigma, steps)], DELTA) <= target


def test_calibration_with_history_and_refusals():
    prior = [Mechanism(0.05, 2.0, 100)]
    s0 = calibrate_noise_multiplier(4.0, DELTA, 0.05, 200)
    s1 = calibrate_noise_multiplier(4.0, DELTA, 0.05, 200, history=prior)
    assert s1 > s0
    eps = compute_epsilon([*prior, Mechanism(0.05, s1, 200)], DELTA, "pld")
    assert 4.0 - 0.01 < eps <= 4.0
    with pytest.raises(ConfigError, match="already reaches"):
        calibrate_noise_multiplier(0.5, DELTA, 0.05, 200, history=prior)
    with pytest.raises(ConfigError, match="unreachable"):
        calibrate_noise_multiplier(1e-3, DELTA, 0.5, 1000, max_sigma=50.0)
    with pytest.raises(ConfigError):
        calibrate_noise_multiplier(3.0, DELTA, 0.0, 10)


@pytest.mark.parametrize(("q", "sigma", "steps"), [(0.01, 0.7, 1), (0.1, 1.0, 30),
                                                   (0.5, 0.9, 3), (1.0, 2.0, 10),
                                                   (0.5, 20.0, 1), (0.05, 1.1, 500)])
@pytest.mark.parametrize("delta", [1e-5, 1e-9, 0.2])
def test_vectorised_epsilon_equals_dp_accounting(q, sigma, steps, delta):
    p = pl.from_gaussian_mechanism(sigma, sampling_prob=q, value_discretization_interval=1e-2)
    if steps > 1:
        p = p.self_compose(steps)
    assert pld.pld_epsilon_for_delta(p, delta) == pytest.approx(p.get_epsilon_for_delta(delta),
                                                                rel=1e-9, abs=1e-12)


def test_vectorised_epsilon_falls_back_to_the_library_for_other_layouts():
    class Odd:  # a PMF without the dense layout
        def get_epsilon_for_delta(self, delta):
            return 1.5

    class Pld:
        _pmf_remove = Odd()
        _symmetric = True

        def get_epsilon_for_delta(self, delta):
            return 2.5

    assert pld.pld_epsilon_for_delta(Pld(), 1e-5) == 2.5


def test_vectorised_composition_is_bitwise_dp_accountings():
    a = pl.from_gaussian_mechanism(0.9, sampling_prob=0.5,
                                   value_discretization_interval=1e-2).self_compose(3)
    b = pl.from_gaussian_mechanism(5.0, sampling_prob=0.01,
                                   value_discretization_interval=1e-2).self_compose(7)
    ours, lib = pld._compose(a, b), a.compose(b)
    for x, y in [(ours._pmf_remove, lib._pmf_remove), (ours._pmf_add, lib._pmf_add)]:
        assert x._lower_loss == y._lower_loss and x._infinity_mass == y._infinity_mass
        assert (x._probs == y._probs).all()
    assert ours._symmetric == lib._symmetric
