"""Distributed DP through the real mask protection: the released sum carries the stated
discrete noise (variance within a confidence bound, integer support, no modular wrap at the
configured modulus), and a sum of too few survivors is never released."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from fedrx.dp.distributed.hospital import integer_share
from fedrx.dp.distributed.sizing import ShareSizing, modulus_bits_needed, release_allowed
from fedrx.errors import ConfigError, ProtocolAbort
from fedrx.protocol.protection import RoundContext
from fedrx.protocol.protections.mask import MaskConfig, MaskProtection
from fedrx.secagg import quantize
from fedrx.secagg.identity import Federation, Identity

N, K = 5, 1
IDS = [Identity.generate(f"h{i}") for i in range(N)]
FED = Federation.of(IDS)
PARTS = tuple(sorted(i.hospital for i in IDS))


def drive(cfg: MaskConfig, ctx: RoundContext, inputs, drops=None):
    """Every stage of a mask round in process; a hospital in ``drops[stage]`` stops answering
    from that stage on; a hospital that refuses (ProtocolAbort) stops too."""
    server = MaskProtection(None, FED, cfg).new_server(ctx)
    clients = {}
    for ident in IDS:
        c = MaskProtection(ident, FED, cfg).new_client(ctx, ident.hospital)
        c.set_input(inputs[ident.hospital])
        clients[ident.hospital] = c
    alive = set(clients)
    refused: list[str] = []
    for stage in server.stages:
        alive -= (drops or {}).get(stage, set())
        replies = {}
        for h, req in server.requests(stage, sorted(alive)).items():
            try:
                replies[h] = clients[h].handle(stage, req)
            except ProtocolAbort:
                refused.append(h)
                alive.discard(h)
        server.collect(stage, replies)
    return server.result(), refused


def _ctx(d: int) -> RoundContext:
    return RoundContext(os.urandom(32), 1, PARTS, d + 1)


def _sizing(d: int, sigma: float = 1.0) -> ShareSizing:
    return ShareSizing(N, K, sigma, 1.0, d, "discrete", 16)


def test_released_sum_has_the_stated_discrete_noise():
    d = 20_000
    sz = _sizing(d)
    # clip_norm only sizes the modulus (and the decoded sum's range check): shares are
    # pre-quantised and never clipped by the protection
    cfg = MaskConfig(noisy_shares=True, clip_norm=100.0, frac_bits=16, max_count=1000,
                     min_contributors=sz.min_survivors)
    rng = np.random.default_rng(0)
    sums = {h: rng.normal(0, 0.01, d) for h in PARTS}  # each a clipped-gradient sum
    inputs = {h: integer_share(sums[h], 7, sz, n_patients=100) for h in PARTS}
    res, refused = drive(cfg, _ctx(d), inputs)
    assert refused == [] and res.contributors == PARTS
    released = res.total[:-1] * 2.0**16  # back to ring units
    assert np.array_equal(released, np.round(released))  # discrete support: integers
    assert res.total[-1] == 7 * N  # the count entry is exact
    exact = -sum(sums.values()) * 2.0**16
    noise = released - exact  # rounding error per coordinate is < N ring units
    v_total = N * sz.share_variance
    ratio = float(np.var(noise)) / v_total
    assert abs(ratio - 1) < 5 * math.sqrt(2 / d), ratio  # 5-sigma confidence bound
    assert abs(float(np.mean(noise))) < 5 * math.sqrt(v_total / d)
    # the n - k honest shares alone already give the calibrated sigma
    assert sz.honest * sz.share_variance >= (sz.noise_multiplier * sz.sensitivity) ** 2
    assert sz.charged_noise_multiplier() >= sz.noise_multiplier


def test_worst_case_shares_do_not_wrap_at_the_configured_modulus():
    """Every hospital's share at its bound, all the same sign, on a modulus sized exactly for
    that bound: the released sum is the exact integer sum (a wrap would flip its sign)."""
    d = 64
    sz = _sizing(d, sigma=0.5)
    n_patients = 3
    bound = sz.share_bound(n_patients)
    clip = bound / 2.0**16 / 10  # the mask's per-hospital bound covers the share bound
    cfg = MaskConfig(noisy_shares=True, clip_norm=clip, frac_bits=16, max_count=10)
    m = quantize.modulus_bits(cfg.quant, N, d)
    assert m <= 64 and m >= modulus_bits_needed(N, bound)
    worst = np.zeros(d)
    worst[0] = n_patients * 1.0  # a hospital's whole clipped sum on one coordinate
    inputs = {h: integer_share(worst, 1, sz, n_patients) for h in PARTS}
    res, _ = drive(cfg, _ctx(d), inputs)
    direct = sum(int(v) for v in (inp.values[0] for inp in inputs.values()))
    assert res.total[0] * 2.0**16 == direct
    assert direct < -N * (n_patients * 2**16 - sz.noise_bound() - 1)  # far from 0, no wrap
    total_int = sum(inp.values.astype(object) for inp in inputs.values())
    assert np.array_equal(res.total[:-1] * 2.0**16, np.array(total_int, dtype=np.float64))


def test_a_share_beyond_the_modulus_bound_is_refused():
    d = 16
    sz = _sizing(d)
    # a modulus too small for the share
    cfg = MaskConfig(noisy_shares=True, clip_norm=1e-3, frac_bits=16, max_count=2)
    share = integer_share(np.zeros(d), 1, sz, n_patients=50)
    with pytest.raises(ConfigError, match="per-hospital bound"):
        quantize.encode_prequantised(share, cfg.quant, 40)
    client = MaskProtection(IDS[0], FED, cfg).new_client(_ctx(d), IDS[0].hospital)
    with pytest.raises(ProtocolAbort, match="per-hospital bound"):
        client.set_input(share)


@pytest.mark.parametrize(("dropped", "released"), [(1, True), (2, False)])
def test_too_few_survivors_is_never_released(dropped, released):
    """k = 1 of 5: shares are sized for 4 honest survivors. One dropout is released; with two
    dropped after their keys were shared, every survivor refuses to unmask (|U3| = 3 < 4), so
    the aggregator gets no sum at all. Shamir t = 3 here, so the refusal is the floor's."""
    d = 200
    sz = _sizing(d)
    cfg = MaskConfig(noisy_shares=True, clip_norm=1.0, frac_bits=16, max_count=1000,
                     threshold=3, max_corrupt=0, min_contributors=sz.min_survivors)
    inputs = {h: integer_share(np.zeros(d), 1, sz, 10) for h in PARTS}
    drops = {"masked_input": set(PARTS[:dropped])}
    assert release_allowed(sz, N - dropped) is released
    if released:
        res, refused = drive(cfg, _ctx(d), inputs, drops)
        assert len(res.contributors) == N - dropped and refused == []
    else:
        with pytest.raises(ProtocolAbort):
            drive(cfg, _ctx(d), inputs, drops)


def test_without_the_floor_the_same_round_would_release():
    """Control for the test above: with min_contributors 0 the 3-survivor sum comes out, so
    the refusal is the floor's doing."""
    d = 200
    sz = _sizing(d)
    cfg = MaskConfig(noisy_shares=True, clip_norm=1.0, frac_bits=16, max_count=1000,
                     threshold=3, max_corrupt=0)
    inputs = {h: integer_share(np.zeros(d), 1, sz, 10) for h in PARTS}
    res, _ = drive(cfg, _ctx(d), inputs, {"masked_input": set(PARTS[:2])})
    assert len(res.contributors) == 3


def test_sizing_rules():
    with pytest.raises(ConfigError):
        ShareSizing(3, 3, 1.0, 1.0, 10)
    g = ShareSizing(5, 2, 1.3, 2.0, 10, "gaussian")
    assert math.isclose(g.share_std**2 * g.honest, (1.3 * 2.0) ** 2)
    assert g.charged_noise_multiplier() == 1.3
    sz = ShareSizing(5, 2, 1.3, 1.0, 10_000, "discrete", 16)
    assert sz.tau() == 0.0  # V ~ 1e9: tau underflows (< 1e-8000)
    assert 1.3 <= sz.charged_noise_multiplier() < 1.3 * (1 + 1e-6)
    assert sz.sensitivity == 2**16 + 100
    small = ShareSizing(3, 0, 0.1, 1.0, 4, "discrete", 0)  # tiny V: tau counts
    assert small.tau() > 0 and small.charged_noise_multiplier() < 0.1 * math.sqrt(
        small.honest * small.share_variance) / small.sensitivity * 10
