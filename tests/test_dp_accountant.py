"""Accountant values against published settings, cross-checked across implementations."""

from __future__ import annotations

import math
import warnings

import pytest
from opacus.accountants.utils import get_noise_multiplier

from fedrx.dp.accountants.accountant import PrivacyAccountant, would_exceed
from fedrx.dp.accountants.calibrate import calibrate_noise_multiplier
from fedrx.dp.accountants.independent import pld_epsilon, rdp_epsilon
from fedrx.dp.accountants.mechanism import Budget, Mechanism, default_delta
from fedrx.dp.accountants.registry import ACCOUNTANTS, DEFAULT_ACCOUNTANT, compute_epsilon
from fedrx.errors import ConfigError

# Abadi et al., "Deep Learning with Differential Privacy" (CCS 2016), Sec. 3.1/5: MNIST-like
# setting q = 0.01, sigma = 4, delta = 1e-5, T = 10000 steps: "epsilon ~= 1.26 using the
# moments accountant" (vs 9.34 with the strong composition theorem).
ABADI = Mechanism(sample_rate=0.01, noise_multiplier=4.0, steps=10_000)
ABADI_DELTA = 1e-5
ABADI_MOMENTS_EPS = 1.26


def test_abadi_setting_rdp_tighter_than_moments_accountant_and_matches_dp_accounting():
    rdp = compute_epsilon([ABADI], ABADI_DELTA, "rdp")
    # RDP of the subsampled Gaussian (Mironov et al. 2019) with Opacus' order grid is a
    # valid and tighter bound than the 2016 moments accountant value.
    assert 0.9 < rdp <= ABADI_MOMENTS_EPS
    assert rdp == pytest.approx(1.0355, abs=2e-3)  # Opacus 1.6 value
    # An independent implementation of the same RDP analysis (Google dp_accounting).
    ref = rdp_epsilon([(ABADI.sample_rate, ABADI.noise_multiplier, ABADI.steps)], ABADI_DELTA)
    assert rdp == pytest.approx(ref, rel=1e-3)


def test_abadi_setting_prv_agrees_with_independent_pld():
    prv = compute_epsilon([ABADI], ABADI_DELTA, "prv")
    pld = pld_epsilon([(0.01, 4.0, 10_000)], ABADI_DELTA)
    assert prv == pytest.approx(0.957, abs=0.02)
    assert abs(prv - pld) < 0.02
    assert prv < compute_epsilon([ABADI], ABADI_DELTA, "rdp")  # PRV tighter than RDP


def test_federated_schedule_prv_pld_rdp_agree_and_rdp_is_upper():
    # A hospital's schedule: 20 rounds x 25 local steps, q = 0.05, sigma = 1.1.
    hist = [Mechanism(0.05, 1.1, 25) for _ in range(20)]
    prv = compute_epsilon(hist, 1e-5, "prv")
    rdp = compute_epsilon(hist, 1e-5, "rdp")
    pld = pld_epsilon([(0.05, 1.1, 500)], 1e-5)
    assert abs(prv - pld) <= max(0.02, 0.02 * pld)
    assert pld <= rdp <= 1.25 * pld


def test_whole_history_recomputed_never_summed():
    acc = PrivacyAccountant("prv")
    per_round = []
    for _ in range(10):
        acc.record(Mechanism(0.02, 1.0, 50))
        per_round.append(compute_epsilon([Mechanism(0.02, 1.0, 50)], 1e-5))
    total = acc.epsilon(1e-5)
    assert total == pytest.approx(compute_epsilon([Mechanism(0.02, 1.0, 500)], 1e-5), rel=1e-6)
    assert sum(per_round) > 2.5 * total  # naive summation would overstate a lot
    assert acc.epsilon_after(Mechanism(0.02, 1.0, 50), 1e-5) > total


def test_heterogeneous_history_matches_pld():
    hist = [Mechanism(0.02, 1.0, 100), Mechanism(0.04, 1.5, 100), Mechanism(0.02, 1.0, 100)]
    prv = compute_epsilon(hist, 1e-5)
    pld = pld_epsilon([(0.02, 1.0, 200), (0.04, 1.5, 100)], 1e-5)
    assert abs(prv - pld) <= max(0.02, 0.02 * pld)


def test_gdp_and_bad_inputs_refused():
    with pytest.raises(ConfigError):
        compute_epsilon([ABADI], 1e-5, "gdp")
    with pytest.raises(ConfigError):
        Mechanism(0.0, 1.0, 1)
    with pytest.raises(ConfigError):
        Mechanism(0.1, 0.0, 1)
    assert compute_epsilon([], 1e-5) == 0.0


@pytest.mark.parametrize("n", [1, 94, 1000, 46520])
def test_default_delta_below_one_over_n(n):
    d = default_delta(n)
    assert d <= 1e-5 and d <= 0.1 / n
    assert math.log10(d) == int(math.log10(d))  # a power of ten


def test_calibrate_meets_target_and_matches_opacus():
    q, steps, target, delta = 0.05, 400, 3.0, 1e-5
    sigma = calibrate_noise_multiplier(target, delta, q, steps, "prv")
    eps = compute_epsilon([Mechanism(q, sigma, steps)], delta)
    assert target - 0.01 < eps <= target
    ref = get_noise_multiplier(target_epsilon=target, target_delta=delta, sample_rate=q,
                               steps=steps, accountant="prv", epsilon_tolerance=0.01)
    assert sigma == pytest.approx(ref, rel=0.02)


def test_calibrate_accounts_for_prior_history():
    prior = [Mechanism(0.05, 2.0, 100)]
    s0 = calibrate_noise_multiplier(4.0, 1e-5, 0.05, 200, "rdp")
    s1 = calibrate_noise_multiplier(4.0, 1e-5, 0.05, 200, "rdp", history=prior)
    assert s1 > s0
    assert compute_epsilon([*prior, Mechanism(0.05, s1, 200)], 1e-5, "rdp") <= 4.0
    with pytest.raises(ConfigError, match="already reaches"):
        calibrate_noise_multiplier(0.5, 1e-5, 0.05, 200, "rdp", history=prior)


def test_would_exceed():
    hist = [Mechanism(0.05, 1.0, 200)]
    eps = compute_epsilon(hist, 1e-5)
    nxt = Mechanism(0.05, 1.0, 50)
    assert would_exceed(hist, nxt, Budget(eps + 0.01, 1e-5))
    assert not would_exceed(hist, nxt, Budget(eps + 5.0, 1e-5))


def test_prv_and_rdp_are_built_by_opacus_registry():
    from opacus.accountants import PRVAccountant, RDPAccountant, create_accountant

    from fedrx.dp.accountants import prv, rdp

    assert ACCOUNTANTS == ("pld", "prv", "rdp") and DEFAULT_ACCOUNTANT == "pld"
    assert isinstance(create_accountant(prv.NAME), PRVAccountant)
    assert isinstance(create_accountant(rdp.NAME), RDPAccountant)
    hist = [Mechanism(0.05, 1.1, 25), Mechanism(0.02, 0.9, 13)]
    for mod in (prv, rdp):
        acc = create_accountant(mod.NAME)
        acc.history = [(m.noise_multiplier, m.sample_rate, m.steps) for m in hist]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # RDP's "largest alpha" notice
            ref = acc.get_epsilon(1e-5)
        assert compute_epsilon(hist, 1e-5, mod.NAME) == pytest.approx(ref, rel=1e-12)
