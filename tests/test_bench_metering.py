"""MeteredTransport: CPU per hospital and round, and the SAME round statistics and replies
as the transport it wraps."""

from __future__ import annotations

import time

from fedrx.bench.metering import CpuMeter, MeteredTransport
from fedrx.errors import ProtocolError
from fedrx.protocol.transport import InProcessTransport


class Busy:
    """A party that burns ``seconds`` of CPU per call and answers with its request doubled;
    ``refuse`` makes it raise a ProtocolError (a drop)."""

    def __init__(self, seconds: float, refuse: bool = False):
        self.seconds, self.refuse, self.calls = seconds, refuse, []

    def handle(self, stage: str, request: bytes) -> bytes:
        self.calls.append(stage)
        t0 = time.process_time()
        while time.process_time() - t0 < self.seconds:
            pass
        if self.refuse:
            raise ProtocolError("refused")
        return request * 2


def parties() -> dict[str, Busy]:
    return {"a": Busy(0.02), "b": Busy(0.06), "c": Busy(0.0, refuse=True)}


def round_of(transport) -> tuple[list[dict], list]:
    replies = [transport.exchange("train", 1, {h: b"xy" for h in ("a", "b", "c")}),
               transport.exchange("evaluate", 1, {"b": b"z"}),
               transport.exchange("empty", 1, {})]
    stats = transport.take_stats()
    return replies, [(s.stage, s.sent_bytes, s.received_bytes, s.asked, s.answered,
                      s.failures) for s in stats]


def test_same_replies_and_stats_as_unwrapped():
    plain = round_of(InProcessTransport(parties()))
    meter = CpuMeter()
    metered = round_of(MeteredTransport(InProcessTransport(parties()), meter))
    assert metered == plain
    assert plain[1][0] == ("train", 6, 8, 3, 2, {"c": "refused"})


def test_cpu_per_hospital_stage_and_round():
    ps = parties()
    meter = CpuMeter()
    t = MeteredTransport(InProcessTransport(ps), meter)
    round_of(t)
    cpu, round_cpu = meter.take()
    assert cpu[("a", "train")] >= 0.02 and cpu[("b", "train")] >= 0.06
    assert cpu[("b", "evaluate")] >= 0.06 and ("a", "evaluate") not in cpu
    assert cpu[("b", "train")] > cpu[("a", "train")]
    assert round_cpu >= sum(cpu.values())
    assert ps["a"].calls == ["train"] and ps["b"].calls == ["train", "evaluate"]
    # take() resets; the next round is measured on its own
    assert meter.take() == ({}, 0.0)
    round_of(t)
    _, second = meter.take()
    assert 0.14 <= second < round_cpu + 1.0
