"""Known-answer and property tests of the fixed-point quantiser (clip, stochastic
rounding, modulus choice, centred lift)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedrx.csprng import bernoulli
from fedrx.errors import (
    ConfigError,
)
from fedrx.secagg import quantize

KAT = json.loads((Path(__file__).parent / "vectors" / "secagg_kat.json").read_text())


def test_quantize_kat_exact_grid_values():
    v = KAT["quantize"]
    cfg = quantize.QuantConfig(v["clip_norm"], v["frac_bits"], v["max_count"])
    m = quantize.modulus_bits(cfg, v["n_hospitals"], v["model_length"])
    assert m == v["modulus_bits"]
    enc, stats = quantize.encode(np.array(v["exact_input"]), cfg, m)
    assert [int(x) for x in enc] == [int(x) for x in v["exact_encoded"]]
    assert not stats.norm_clipped and stats.clipped_coordinates == 0
    dec, clipped = quantize.decode(enc, cfg, m)
    assert np.array_equal(dec, np.array(v["exact_input"])) and clipped == 0
    for case in v["modulus_cases"]:
        c = quantize.QuantConfig(case["clip_norm"], case["frac_bits"], case["max_count"])
        assert quantize.modulus_bits(c, case["n"], case["d"]) == case["m"]


def test_modulus_refuses_configs_that_could_wrap():
    """P4: a config whose worst-case sum needs > 64 bits is refused, naming the fix."""
    cfg = quantize.QuantConfig(clip_norm=100.0, frac_bits=40, max_count=1_000_000)
    with pytest.raises(ConfigError, match="lower frac_bits"):
        quantize.modulus_bits(cfg, 10, 1000)
    # the chosen modulus really cannot wrap: n worst-case inputs decode exactly
    cfg = quantize.QuantConfig(clip_norm=1.0, frac_bits=8, max_count=50)
    n, d = 9, 4
    m = quantize.modulus_bits(cfg, n, d)
    worst = np.array([50 * 1.0, 0, 0, 0, 50.0])  # |c*delta_0| = max_count * clip
    for sign in (1, -1):
        w = worst.copy()
        w[0] *= sign
        total = np.zeros(d + 2, dtype=np.uint64)
        for _ in range(n):
            total += quantize.encode(w, cfg, m)[0]
        dec, _ = quantize.decode(total, cfg, m)
        assert dec[0] == sign * n * 50.0 and dec[-1] == n * 50
    assert (1 << m) > 2 * n * quantize.per_hospital_bound(cfg, d)
    assert (1 << (m - 1)) <= 2 * n * quantize.per_hospital_bound(cfg, d)


def test_quantize_rejects_bad_inputs():
    cfg = quantize.QuantConfig(1.0, 8, 10)
    m = quantize.modulus_bits(cfg, 3, 2)
    for bad in ([0.1, 0.2, 11.0], [0.1, 0.2, 2.5], [np.nan, 0, 1.0], [0.1, 0.0, 0.0]):
        with pytest.raises(ConfigError):
            quantize.encode(np.array(bad), cfg, m)
    with pytest.raises(ConfigError):
        quantize.QuantConfig(-1.0).check()


def test_clipping_l2_norm_of_unweighted_delta_and_clip_count():
    cfg = quantize.QuantConfig(clip_norm=1.0, frac_bits=20, max_count=100)
    m = quantize.modulus_bits(cfg, 2, 3)
    delta = np.array([3.0, 4.0, 0.0])  # norm 5
    enc, stats = quantize.encode(np.append(10 * delta, 10.0), cfg, m)
    assert stats.norm_clipped and stats.norm == pytest.approx(5.0)
    assert stats.clipped_coordinates == 2  # non-zero coordinates changed by the clip
    dec, clipped = quantize.decode(enc, cfg, m)
    assert clipped == 2 and dec[-1] == 10.0
    assert np.allclose(dec[:-1], 10 * delta / 5.0, atol=2**-20)


def test_stochastic_rounding_is_unbiased():
    """P4: mean of many CSPRNG-rounded draws is within 5 sigma of the true value."""
    vals = np.array([0.3, -1.7, 2.5, 1e-3, -0.999, 7.0])
    draws = 20000
    rounded = quantize.stochastic_round(np.tile(vals, (draws, 1)))
    assert rounded.dtype == np.int64
    assert np.all(rounded - np.floor(vals) >= 0) and np.all(rounded - np.floor(vals) <= 1)
    frac = vals - np.floor(vals)
    sigma = np.sqrt(frac * (1 - frac) / draws) + 1e-12
    assert np.all(np.abs(rounded.mean(axis=0) - vals) <= 5 * sigma + 1e-12)
    assert np.all(rounded[:, 5] == 7)  # grid values never move


def test_centred_lift_edges():
    for m in (8, 37, 64):
        R = 1 << m
        raw = np.array([0, 1, R // 2 - 1, R // 2, R - 1], dtype=np.uint64)
        assert [int(x) for x in quantize.centred_lift(raw, m)] == [0, 1, R // 2 - 1,
                                                                  -(R // 2), -1]


def test_stochastic_round_coin_rule_is_the_float_rule():
    rng = np.random.default_rng(11)
    words = rng.integers(0, 2**64 - 1, 50_000, dtype=np.uint64, endpoint=True)
    words[:4] = [0, 2**11 - 1, 2**64 - 1, 2**64 - 2**11]
    frac = rng.random(50_000)
    frac[:4] = [0.0, 5e-324, np.nextafter(1.0, 0.0), np.nextafter(1.0, 0.0)]
    u = (words >> np.uint64(11)).astype(np.float64) * 2.0**-53
    frac[4:1000] = u[4:1000]  # ties never round up
    frac[1000:2000] = np.nextafter(u[1000:2000], 2.0)
    assert np.array_equal(bernoulli(frac.copy(), words.copy()), u < frac)


def test_reproducible_rounding_coins_only_when_asked():
    import numpy as np

    from fedrx.secagg import quantize as qz

    cfg = qz.QuantConfig(clip_norm=10.0, frac_bits=16, max_count=1000)
    v = np.r_[np.linspace(-3, 3, 501) * 7.0, 7.0]
    m = qz.modulus_bits(cfg, 3, v.size - 1)
    k1 = qz.rounding_key(5, "h1", 2)
    assert len(k1) == 32 and k1 != qz.rounding_key(5, "h1", 3) != qz.rounding_key(5, "h2", 2)
    a, _ = qz.encode(v, cfg, m, coin_key=k1)
    b, _ = qz.encode(v, cfg, m, coin_key=k1)
    assert np.array_equal(a, b)
    # default: fresh OS coins each call (501 coordinates with fractional parts)
    c, _ = qz.encode(v, cfg, m)
    d, _ = qz.encode(v, cfg, m)
    assert not np.array_equal(c, d)
