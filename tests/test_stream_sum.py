"""Streaming aggregation (:mod:`fedrx.secagg.absorb`): each protected input is folded into
the running sum as it arrives, the aggregator keeps a stand-in, and nothing about the sum
changes: the same total in any arrival order, a stand-in it did not issue is refused, and a
repeated reply is not added twice."""

from __future__ import annotations

import dataclasses
import gc
import random
import weakref

import numpy as np
import pytest
from secagg_mask_round import Round

from fedrx.nodes import codec
from fedrx.protocol.aggregator import RoundMachine
from fedrx.protocol.protection import NoProtection, PlainUpload, RoundContext
from fedrx.protocol.transport import InProcessTransport, Transport
from fedrx.secagg.absorb import Absorbed
from fedrx.secagg.mask.params import MASKED_INPUT


def _round_until(r: Round, stage: str) -> dict:
    """Run ``r`` up to ``stage``; the honest replies of ``stage`` (not yet collected)."""
    for s in r.params.stages:
        if s == stage:
            break
        r.step(s)
    reqs = r.server.requests(stage, sorted(r.alive))
    return {h: r.clients[h].handle(stage, q) for h, q in reqs.items()}


def _finish(r: Round, after: str):
    stages = r.params.stages
    for s in stages[stages.index(after) + 1:]:
        r.step(s)
    return r.server.result()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masked_inputs_absorbed_in_any_order_give_the_exact_sum(seed):
    r = Round(6, 4, d=40, m=24)
    replies = _round_until(r, MASKED_INPUT)
    order = sorted(replies)
    random.Random(seed).shuffle(order)  # arrival order of some transport
    kept = {h: r.server.absorb(MASKED_INPUT, h, replies[h]) for h in order}
    assert all(isinstance(v, Absorbed) and v.hospital == h for h, v in kept.items())
    r.server.collect(MASKED_INPUT, kept)
    total, contributors = _finish(r, MASKED_INPUT)
    assert contributors == tuple(sorted(replies))
    assert np.array_equal(total, r.expected(contributors))


def test_a_stand_in_the_server_did_not_issue_is_rejected():
    """Whoever builds the replies mapping (a faulty or hostile transport) cannot make the
    aggregator count a hospital whose masked input was never added: the forged stand-in is
    an invalid masked input, and the hospital is treated as dropped."""
    r = Round(5, 3, d=16, m=24)
    replies = _round_until(r, MASKED_INPUT)
    victim = "h02"
    kept = {h: r.server.absorb(MASKED_INPUT, h, m) for h, m in replies.items() if h != victim}
    kept[victim] = Absorbed(victim, MASKED_INPUT)  # forged: never absorbed
    r.server.collect(MASKED_INPUT, kept)
    assert r.server.view.rejected[victim] == "invalid masked input"
    total, contributors = _finish(r, MASKED_INPUT)
    assert victim not in contributors
    assert np.array_equal(total, r.expected(contributors))


def test_a_repeated_masked_input_is_added_once():
    r = Round(5, 3, d=16, m=24)
    replies = _round_until(r, MASKED_INPUT)
    kept = {h: r.server.absorb(MASKED_INPUT, h, m) for h, m in replies.items()}
    again = r.server.absorb(MASKED_INPUT, "h01", replies["h01"])  # replayed
    assert again == Absorbed("h01", MASKED_INPUT)
    r.server.collect(MASKED_INPUT, kept | {"h01": replies["h01"]})
    total, contributors = _finish(r, MASKED_INPUT)
    assert contributors == tuple(sorted(replies))
    assert np.array_equal(total, r.expected(contributors))


def test_an_invalid_masked_input_is_not_absorbed():
    r = Round(5, 3, d=16, m=24)
    replies = _round_until(r, MASKED_INPUT)
    bad = dataclasses.replace(replies["h03"], packed=replies["h03"].packed[:-1])  # truncated
    assert r.server.absorb(MASKED_INPUT, "h03", bad) is bad
    kept = {h: r.server.absorb(MASKED_INPUT, h, m) for h, m in replies.items() if h != "h03"}
    r.server.collect(MASKED_INPUT, kept | {"h03": bad})
    assert r.server.view.rejected["h03"] == "malformed packed vector"
    total, contributors = _finish(r, MASKED_INPUT)
    assert "h03" not in contributors
    assert np.array_equal(total, r.expected(contributors))


def test_stand_ins_never_cross_the_wire():
    with pytest.raises(codec.CodecError):
        codec.to_bytes(Absorbed("h1", MASKED_INPUT))


def test_plain_sum_is_bit_identical_in_any_arrival_order():
    """Float64 addition depends on order: the plaintext server adds in hospital order
    whatever order updates arrive in, so every transport gives the same bits."""
    rng = np.random.default_rng(5)
    hs = [f"h{i}" for i in range(7)]
    vecs = {h: rng.normal(size=33) * 10.0 ** rng.integers(-8, 8, size=33) for h in hs}
    ctx = RoundContext(b"s" * 32, 1, tuple(hs), 33)

    def total(order, absorb=True, drop=()):
        server = NoProtection().new_server(ctx)
        server.requests("upload", hs)
        kept = {h: server.absorb("upload", h, PlainUpload(vecs[h])) if absorb
                else PlainUpload(vecs[h]) for h in order if h not in drop}
        server.collect("upload", kept)
        return server.result()

    ref = total(hs, absorb=False)
    expect = np.zeros(33)
    for h in hs:
        expect += vecs[h]
    assert np.array_equal(ref.total, expect)
    for seed in range(4):
        order = list(hs)
        random.Random(seed).shuffle(order)
        got = total(order)
        assert got.total.tobytes() == ref.total.tobytes() and got.contributors == ref.contributors
        dropped = total(order, drop=("h0", "h4"))  # the silent ones never arrive
        assert dropped.contributors == tuple(h for h in hs if h not in ("h0", "h4"))


class _ReversedTransport(Transport):
    """Delivers to in-process parties, replies arriving in REVERSE hospital order, and
    records how many masked inputs are alive in this process when each new one arrives."""

    def __init__(self, parties):
        self.inner = InProcessTransport(parties)
        self.alive_at_arrival: list[int] = []
        self.kept_types: set[str] = set()
        self._live: weakref.WeakSet = weakref.WeakSet()

    def exchange(self, stage, rnd, requests, absorb=None):
        replies = {}
        for h in sorted(requests, reverse=True):
            got = self.inner.exchange(stage, rnd, {h: requests[h]})
            if h not in got:
                continue
            reply = got.pop(h)
            if stage == MASKED_INPUT:
                gc.collect()
                self.alive_at_arrival.append(len(self._live))
                self._live.add(reply)
            replies[h] = reply if absorb is None else absorb(h, reply)
            del reply
            if stage == MASKED_INPUT:
                self.kept_types.add(type(replies[h]).__name__)
        return replies


def _one_round(tmp, transport_cls):
    """One masked round (rounding_seed: reproducible) over ``transport_cls`` wrapping the
    in-process parties of a 4-hospital synthetic federation."""
    from fedrx.medrx.prepare import prepare
    from fedrx.medrx.synth.config import SynthConfig
    from fedrx.medrx.synth.writer import generate
    from fedrx.nodes.simulate import SimulationConfig, start_process

    data = tmp / "data"
    if not data.exists():
        generate(SynthConfig(hospitals=4, patients=160, seed=2, catalogue="builtin"), data)
    cfg = SimulationConfig(data=str(data), rounds=1, protection="mask", seed=1,
                           out=str(tmp / transport_cls.__name__), hidden=8, min_patients=3,
                           rounding_seed=9)
    prep = prepare(cfg)
    process, state = start_process(cfg, prep, tmp / transport_cls.__name__)
    transport = transport_cls(process.transport(prep.hospitals).parties)
    machine = RoundMachine(process.server_protection, transport, prep.task.pool_metrics)
    new, out = machine.run(state, sorted(prep.hospitals))
    return transport, new, out


def test_masked_round_streams_and_matches_the_in_order_round(tmp_path):
    """A real masked round over a transport whose replies arrive out of order: the
    aggregator's mapping holds stand-ins, no earlier masked input is alive in this process
    when the next arrives (without streaming every earlier one would be), and the new model
    equals the in-order in-process round's."""
    spy, new, out = _one_round(tmp_path, _ReversedTransport)
    _, ref, ref_out = _one_round(tmp_path, InProcessTransport)
    assert out.status == "completed" and len(out.contributors) == 4
    assert spy.kept_types == {"Absorbed"}
    assert spy.alive_at_arrival == [0, 0, 0, 0]
    assert new.model_hash == ref.model_hash
    assert out.contributors == ref_out.contributors
