"""CSPRNG-backed Gaussian sampler statistics and hygiene."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from fedrx.dp.noise import SecureNoise, SeededNoise, make_noise_source, snap_to_grid
from fedrx.errors import ConfigError


def test_secure_gaussian_statistics():
    src = SecureNoise()
    n, std = 400_000, 2.5
    z = src.normal((n,), std).numpy()
    assert z.dtype == np.float32 and src.draws == n  # float32 values, added to float64 sums
    assert abs(z.mean()) < 5 * std / np.sqrt(n)
    assert z.std() == pytest.approx(std, rel=0.01)
    assert stats.kurtosis(z, fisher=False) == pytest.approx(3.0, abs=0.05)
    assert abs(stats.skew(z)) < 0.02
    assert stats.kstest(z[:50_000] / std, "norm").pvalue > 1e-4
    # tails: P(|Z| > 3) = 0.0027
    assert np.mean(np.abs(z) > 3 * std) == pytest.approx(0.0027, rel=0.15)


def test_secure_uniform_open_interval_and_independent_instances():
    a, b = SecureNoise(), SecureNoise()
    u = a.uniform(100_000)
    assert 0 < u.min() and u.max() < 1
    assert stats.kstest(u, "uniform").pvalue > 1e-4
    assert not np.array_equal(u[:100], b.uniform(100))  # fresh OS-random key each
    assert "key hidden" in repr(a)


def test_shape_and_odd_sizes():
    z = SecureNoise().normal((3, 5, 7), 1.0)
    assert z.shape == (3, 5, 7) and torch.isfinite(z).all()
    assert SecureNoise().normal((1,), 1.0).shape == (1,)


def test_seeded_is_reproducible_and_flagged_insecure():
    a, b = SeededNoise(7), SeededNoise(7)
    assert torch.equal(a.normal((10,), 1.0), b.normal((10,), 1.0))
    assert not a.secure and SecureNoise.secure
    assert isinstance(make_noise_source(True), SecureNoise)
    with pytest.raises(ConfigError):
        make_noise_source(True, seed=1)


def test_snap_to_grid_spacing():
    x = torch.tensor([0.1234567891234, -3.3333333333], dtype=torch.float64)
    y = snap_to_grid(x, noise_std=0.05, bits=10)
    step = 2.0 ** (-5 - 10)  # floor(log2 0.05) = -5
    assert torch.all(torch.abs(y - x) <= step / 2)
    assert torch.all(torch.remainder(y / step, 1.0) == 0)


def test_secure_noise_is_the_os_keyed_csprng_stream(monkeypatch):
    from fedrx import csprng

    key = bytes(range(32))
    monkeypatch.setattr(csprng.os, "urandom", lambda n: key[:n])
    src = SecureNoise()
    z = src.normal((3, 5), 2.0)
    u = src.uniform(9)
    ref = csprng.KeyStream(key)
    assert np.array_equal(z.numpy().ravel(), ref.normal_f32(15, 2.0))
    assert np.array_equal(u, ref.uniform(9))
