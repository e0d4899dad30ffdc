"""MaskProtection driven exactly like a transport would drive any Protection."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fedrx.errors import ConfigError, ProtocolAbort
from fedrx.protocol.protection import NoProtection, RoundContext
from fedrx.protocol.protections.mask import MaskConfig, MaskProtection
from fedrx.secagg.identity import Federation, Identity

IDS = [Identity.generate(f"hosp-{i}") for i in range(7)]
FED = Federation.of(IDS)


def drive(protection_for, ctx: RoundContext, vectors, drops=None):
    """requests -> handle -> collect per stage; a hospital in drops[stage] stops answering."""
    server_p = protection_for(None)
    server = server_p.new_server(ctx)
    clients = {}
    for ident in IDS:
        if ident.hospital in ctx.participants:
            c = protection_for(ident).new_client(ctx, ident.hospital)
            c.set_input(vectors[ident.hospital])
            clients[ident.hospital] = c
    alive = set(clients)
    for stage in server.stages:
        alive -= (drops or {}).get(stage, set())
        replies = {}
        for h, req in server.requests(stage, sorted(alive)).items():
            try:
                replies[h] = clients[h].handle(stage, req)
            except ProtocolAbort:
                alive.discard(h)
        server.collect(stage, replies)
    return server.result(), clients


def _inputs(d: int, rng: np.random.Generator, scale: float = 0.01):
    out = {}
    for ident in IDS:
        c = int(rng.integers(1, 500))
        out[ident.hospital] = np.append(c * rng.normal(0, scale, d), float(c))
    return out


@pytest.mark.parametrize("drop_stage", ["share_keys", "masked_input", "unmask"])
def test_mask_protection_matches_plain_sum_with_a_dropout(drop_stage):
    cfg = MaskConfig(clip_norm=1.0, frac_bits=20, max_count=1000)
    d = 50
    ctx = RoundContext(os.urandom(32), 3, tuple(sorted(i.hospital for i in IDS)), d + 1)
    vectors = _inputs(d, np.random.default_rng(7))
    res, clients = drive(lambda ident: MaskProtection(ident, FED, cfg), ctx, vectors,
                         {drop_stage: {"hosp-4"}})
    plain, _ = drive(lambda ident: NoProtection(), ctx, vectors,
                     {"upload": {"hosp-4"}} if drop_stage != "unmask" else None)
    if drop_stage == "unmask":  # hosp-4's masked input was in: it still contributes
        assert "hosp-4" in res.contributors
    else:
        assert "hosp-4" not in res.contributors
    expect = sum(vectors[h] for h in res.contributors)
    assert res.total.dtype == np.float64 and res.total.shape == (d + 1,)
    assert res.total[-1] == expect[-1]  # the example count is exact
    bound = len(res.contributors) * 2.0**-20  # < 1 grid step per contributor
    assert np.max(np.abs(res.total[:-1] - expect[:-1])) <= bound
    assert plain.contributors == res.contributors
    assert np.allclose(res.total, plain.total, atol=bound, rtol=0)
    assert res.stats["clipped_coordinates"] == 0 and res.stats["threshold"] == 5
    assert all(c.clip_stats is not None for c in clients.values())


def test_clipped_coordinates_reported_in_aggregate():
    cfg = MaskConfig(clip_norm=0.1, frac_bits=16, max_count=1000)
    d = 20
    ctx = RoundContext(os.urandom(32), 1, tuple(sorted(i.hospital for i in IDS)), d + 1)
    vectors = _inputs(d, np.random.default_rng(1), scale=1.0)  # norms ~4.5 >> 0.1
    res, clients = drive(lambda ident: MaskProtection(ident, FED, cfg), ctx, vectors)
    assert res.stats["clipped_coordinates"] == 7 * d
    for h in res.contributors:
        c = vectors[h][-1]
        assert np.linalg.norm(vectors[h][:-1] / c) > 0.1
    # the aggregate is the sum of the CLIPPED weighted deltas: each has L2 norm c * 0.1
    assert np.linalg.norm(res.total[:-1]) <= sum(vectors[h][-1] for h in res.contributors) * 0.1 \
        + 1e-3


def test_passive_mode_and_stage_names():
    p = MaskProtection(None, FED, MaskConfig(active=False))
    assert p.name == "mask"
    assert p.stages == ("advertise_keys", "share_keys", "masked_input", "unmask")
    assert MaskProtection(None, FED).stages == ("advertise_keys", "share_keys",
                                                "masked_input", "consistency_check", "unmask")


def test_below_threshold_aborts_through_interface():
    ctx = RoundContext(os.urandom(32), 1, tuple(sorted(i.hospital for i in IDS)), 5)
    vectors = {i.hospital: np.array([0.1, 0, 0, 0, 1.0]) for i in IDS}
    with pytest.raises(ProtocolAbort, match="need t=5"):
        drive(lambda ident: MaskProtection(ident, FED), ctx, vectors,
              {"masked_input": {"hosp-0", "hosp-1", "hosp-2"}})


def test_min_survivors_and_validate_rules():
    p = MaskProtection(None, FED)
    assert p.min_survivors(7) == 5 and p.min_survivors(10) == 7
    # n_C comes from the pinned federation (7 members: n_C = 2), not from the round: a
    # round of 3 would need t - n_C >= 2, i.e. t = 4 > 3 holders (issue 14 item 2)
    with pytest.raises(ConfigError, match="exceeds the 3 share holders"):
        p.min_survivors(3)
    p.validate(7, 1001)
    with pytest.raises(ConfigError, match="exceeds"):
        MaskProtection(None, FED, MaskConfig(threshold=8)).validate(7, 10)
    with pytest.raises(ConfigError, match="raise t"):
        MaskProtection(None, FED, MaskConfig(threshold=3)).validate(7, 10)
    with pytest.raises(ConfigError, match="lower frac_bits"):
        MaskProtection(None, FED, MaskConfig(frac_bits=45, max_count=10**6)).validate(7, 10)
    with pytest.raises(ConfigError, match="even k"):
        MaskProtection(None, FED, MaskConfig(graph="harary", k=3)).validate(7, 10)
    with pytest.raises(ConfigError, match="unknown graph"):
        MaskProtection(None, FED, MaskConfig(graph="ring"))
    hp = MaskProtection(None, FED, MaskConfig(graph="harary"))
    hp.validate(100, 10)
    assert hp.min_survivors(100) == 2 * (hp.config.degree(100) + 1) // 3 + 1


def test_client_needs_its_own_identity():
    ctx = RoundContext(os.urandom(32), 1, tuple(sorted(i.hospital for i in IDS)), 5)
    with pytest.raises(ConfigError):
        MaskProtection(None, FED).new_client(ctx, "hosp-0")
    with pytest.raises(ConfigError):
        MaskProtection(IDS[1], FED).new_client(ctx, "hosp-0")


def test_bad_input_rejected():
    ctx = RoundContext(os.urandom(32), 1, tuple(sorted(i.hospital for i in IDS)), 5)
    c = MaskProtection(IDS[0], FED).new_client(ctx, "hosp-0")
    with pytest.raises(ProtocolAbort):
        c.set_input(np.zeros(3))
    with pytest.raises(ConfigError, match="max_count"):
        c.set_input(np.array([0.0, 0, 0, 0, 10.0**9]))
