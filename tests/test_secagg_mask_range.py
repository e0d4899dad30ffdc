"""The aggregator range-checks every decoded sum (issue 14 item 7).

With exactly t unmask answers a wrong self-mask share cannot be detected by share
consistency (t points always lie on a polynomial of degree t - 1): the seed reconstructs
wrong, the self-mask is not removed and the sum decodes to garbage. The decoded count,
clipped-coordinate count and norm are bounded by what |U3| honest encodings can produce.
"""

from __future__ import annotations

import numpy as np
import pytest
from secagg_mask_round import Round, unmask_replies, with_wrong_self_mask_shares

from fedrx.errors import ProtocolAbort
from fedrx.secagg import quantize

CFG = quantize.QuantConfig(clip_norm=1.0, frac_bits=16, max_count=1000)
D = 40  # model parameters


def _inputs(n: int, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)  # test data only
    m = quantize.modulus_bits(CFG, n, D)
    out = {}
    for i in range(n):
        c = int(rng.integers(1, CFG.max_count + 1))
        delta = rng.normal(size=D) * 0.3
        enc, _ = quantize.encode(np.concatenate([c * delta, [c]]), CFG, m)
        out[f"h{i:02d}"] = enc
    return out


def _round(n: int, t: int) -> Round:
    m = quantize.modulus_bits(CFG, n, D)
    return Round(n, t, d=D + 2, m=m, inputs=_inputs(n))


@pytest.mark.parametrize("victim", ["h00", "h02"])
def test_wrong_self_mask_share_at_exactly_t_answers_is_refused(victim):
    """h00 reveals a wrong self-mask share; only t = 3 of 5 holders answer unmask, so the
    share-consistency check has nothing to compare and the round completes with a corrupt
    sum. Decoding with the contributor count refuses it; without the bound (the old
    behaviour) the same sum decodes to a count no configuration allows."""
    r = _round(5, 3)
    replies = unmask_replies(r, drop={"h03", "h04"})  # exactly t answers
    assert len(replies) == 3
    replies["h00"] = with_wrong_self_mask_shares(replies["h00"], {victim})
    r.server.collect("unmask", replies)  # undetectable here (documented)
    total, who = r.server.result()
    assert len(who) == 5
    m = r.params.modulus_bits
    with pytest.raises(ProtocolAbort, match="the unmasked sum is corrupt"):
        quantize.decode(total, CFG, m, contributors=len(who))
    garbage, _ = quantize.decode(total, CFG, m)  # no bound: garbage accepted as an update
    assert not 0 <= garbage[-1] <= len(who) * CFG.max_count or \
        np.linalg.norm(garbage[:-1]) > garbage[-1] * CFG.clip_norm + 1


def test_honest_sum_passes_the_bound():
    r = _round(5, 3)
    total, who = r.run({"unmask": {"h03", "h04"}})
    values, clipped = quantize.decode(total, CFG, r.params.modulus_bits, contributors=len(who))
    want, _ = quantize.decode(r.expected(who), CFG, r.params.modulus_bits)
    assert np.array_equal(values, want) and clipped >= 0


def _sum(weighted: np.ndarray, count: int, clipped: int = 0) -> np.ndarray:
    return np.concatenate([weighted, [count, clipped]]).astype(np.int64)


def test_bounds_on_count_clipped_and_norm():
    scale = 2.0**CFG.frac_bits
    ok = _sum(np.full(D, 0.1 * scale, dtype=np.int64), 10)
    quantize.check_sum(ok, CFG, 2)
    # the largest honest weighted sum: every hospital at max_count with a delta of norm B
    e = np.zeros(D, dtype=np.int64)
    e[0] = int(2 * CFG.max_count * scale)
    quantize.check_sum(_sum(e, 2 * CFG.max_count), CFG, 2)
    bad = {
        "count -1": _sum(np.zeros(D, dtype=np.int64), -1),
        "count above |U3| * max_count": _sum(np.zeros(D, dtype=np.int64),
                                              2 * CFG.max_count + 1),
        "negative clipped": _sum(np.zeros(D, dtype=np.int64), 5, -1),
        "clipped above |U3| * d": _sum(np.zeros(D, dtype=np.int64), 5, 2 * D + 1),
        "norm above count * B": _sum(np.full(D, int(2 * scale), dtype=np.int64), 10),
    }
    for name, s in bad.items():
        with pytest.raises(ProtocolAbort, match="corrupt"):
            quantize.check_sum(s, CFG, 2)
        assert name
    with pytest.raises(ProtocolAbort):
        quantize.check_sum(ok, CFG, 0)


def test_protection_result_refuses_a_corrupt_sum_end_to_end():
    """Through MaskProtection as the round machine drives it: 7 hospitals, exactly t = 5
    answer unmask, one reveals a wrong self-mask share. The aggregator's result() raises
    ProtocolAbort instead of returning a garbage update."""
    import os

    from fedrx.protocol.protection import RoundContext
    from fedrx.protocol.protections.mask import MaskConfig, MaskProtection
    from fedrx.secagg.identity import Federation, Identity

    ids = [Identity.generate(f"hosp-{i}") for i in range(7)]
    fed = Federation.of(ids)
    cfg = MaskConfig(clip_norm=1.0, frac_bits=16, max_count=1000)
    d = 30
    ctx = RoundContext(os.urandom(32), 1, tuple(sorted(i.hospital for i in ids)), d + 1)
    server = MaskProtection(None, fed, cfg).new_server(ctx)
    rng = np.random.default_rng(3)  # test data only
    clients = {}
    for i in ids:
        c = MaskProtection(i, fed, cfg).new_client(ctx, i.hospital)
        c.set_input(np.append(10 * rng.normal(0, 0.01, d), 10.0))
        clients[i.hospital] = c
    t = server.params.threshold
    alive = sorted(clients)
    for stage in server.stages:
        if stage == "unmask":
            alive = alive[:t]  # exactly t answers: share consistency cannot be checked
        replies = {h: clients[h].handle(stage, q)
                   for h, q in server.requests(stage, alive).items()}
        if stage == "unmask":
            first = alive[0]
            replies[first] = with_wrong_self_mask_shares(replies[first], {alive[1]})
        server.collect(stage, replies)
    with pytest.raises(ProtocolAbort, match="the unmasked sum is corrupt"):
        server.result()


def test_prequantised_sums_skip_only_the_norm_bound():
    """Distributed DP's pre-quantised shares carry noise that is not norm-bounded: with
    ``clip_bounded=False`` a noisy but in-range sum passes; the count and per-entry bounds
    still refuse garbage."""
    scale = 2.0**CFG.frac_bits
    noisy = _sum(np.full(D, int(2 * scale), dtype=np.int64), 10)  # norm above count * B
    with pytest.raises(ProtocolAbort, match="L2 norm"):
        quantize.check_sum(noisy, CFG, 2)
    quantize.check_sum(noisy, CFG, 2, clip_bounded=False)
    limit = 2 * quantize.per_hospital_bound(CFG, D)
    for bad in (_sum(np.full(D, limit + 1, dtype=np.int64), 10),
                _sum(np.zeros(D, dtype=np.int64), -3)):
        with pytest.raises(ProtocolAbort, match="corrupt"):
            quantize.check_sum(bad, CFG, 2, clip_bounded=False)
