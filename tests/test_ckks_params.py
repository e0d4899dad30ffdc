"""CKKS parameters: 128-bit security, additions only, the precision bound."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from fedrx.errors import ConfigError
from fedrx.secagg.ckks.params import HE_STANDARD_MAX_LOGQ_128, CkksParams


def test_params_meet_128_bit_security_additions_only():
    p = CkksParams()
    p.validate()
    assert p.poly_modulus_degree == 8192 and p.slots == 4096
    assert sum(p.coeff_mod_bit_sizes) <= HE_STANDARD_MAX_LOGQ_128[p.poly_modulus_degree]
    assert len(p.coeff_mod_bit_sizes) == 2  # one data prime + special prime: no chain
    assert p.security_bits() >= 128
    assert p.max_abs_sum() == 2.0 ** 22 - 1
    for bad in (replace(p, coeff_mod_bit_sizes=(60, 40, 40)),
                replace(p, poly_modulus_degree=2048),  # 100 bits > 54
                replace(p, poly_modulus_degree=3000),
                replace(p, scale_bits=58)):
        with pytest.raises(ConfigError):
            bad.validate()


def test_precision_bound_formula():
    p = CkksParams()
    n_poly, sigma, delta = 8192, 3.24, 2.0 ** 32
    for n in (1, 10, 50):
        expected = n * 8 * math.sqrt(n_poly * (sigma ** 2 + 1 / 12) / 2) / delta
        assert p.sum_error_bound(n) == pytest.approx(expected, rel=1e-12)
    assert p.sum_error_bound(50) < 2e-5
