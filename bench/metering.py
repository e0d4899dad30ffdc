"""CPU metering as a wrapper around the transport (nothing is patched).

:class:`MeteredTransport` wraps any :class:`~fedrx.protocol.transport.Transport` and
records, in a :class:`CpuMeter`, the CPU time (``time.process_time``: every thread of this
process, in seconds) of

* each hospital's handling of each stage: the wrapper hands the inner transport one
  hospital's request at a time (in sorted order, as the in-process transport does anyway)
  and times that call; with the in-process transport this is the hospital's own work
  plus the transport's payload accounting of its request and reply;
* each round: from the round's first exchange to the end of the round, which the round
  state machine marks by collecting the transport's per-stage statistics
  (:meth:`Transport.take_stats`).

The inner transport's per-stage statistics of one hospital at a time are merged back
into ONE :class:`~fedrx.protocol.transport.StageStats` per exchange, so the round
records are the same as without the wrapper. Per-hospital delivery serialises
hospitals: meter only a transport whose hospitals share this process.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedrx.protocol.transport import Absorb, StageStats, Transport


@dataclass
class CpuMeter:
    """CPU seconds per (hospital, stage) and per round, since the last :meth:`take`."""

    hospital: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    round_cpu: float = 0.0

    def take(self) -> tuple[dict[tuple[str, str], float], float]:
        """(per (hospital, stage) CPU s, round CPU s) since the last call; resets both."""
        out = (dict(self.hospital), self.round_cpu)
        self.hospital = defaultdict(float)
        self.round_cpu = 0.0
        return out


def merge_stats(stage: str, parts: list[StageStats]) -> StageStats:
    """One stage's statistics from those of several partial exchanges of it (bytes,
    seconds and counts add; failures are united)."""
    out = StageStats(stage)
    for p in parts:
        out.sent_bytes += p.sent_bytes
        out.received_bytes += p.received_bytes
        out.seconds += p.seconds
        out.asked += p.asked
        out.answered += p.answered
        out.failures.update(p.failures)
    return out


class MeteredTransport(Transport):
    """``inner`` with CPU metering into ``meter`` (see the module docstring)."""

    def __init__(self, inner: Transport, meter: CpuMeter):
        self.inner = inner
        self.meter = meter
        self._stats: list[StageStats] = []
        self._round_t0: float | None = None

    def exchange(self, stage: str, rnd: int, requests: Mapping[str, Any],
                 absorb: Absorb | None = None) -> dict[str, Any]:
        if self._round_t0 is None:
            self._round_t0 = time.process_time()
        replies: dict[str, Any] = {}
        parts: list[StageStats] = []
        if not requests:
            replies.update(self.inner.exchange(stage, rnd, {}, absorb))
            parts += self.inner.take_stats()
        for h in sorted(requests):
            t0 = time.process_time()
            replies.update(self.inner.exchange(stage, rnd, {h: requests[h]}, absorb))
            parts += self.inner.take_stats()
            self.meter.hospital[(h, stage)] += time.process_time() - t0
        self._stats.append(merge_stats(stage, parts))
        return replies

    def take_stats(self) -> list[StageStats]:
        """The round's statistics; closes the round's CPU measurement."""
        if self._round_t0 is not None:
            self.meter.round_cpu += time.process_time() - self._round_t0
            self._round_t0 = None
        out, self._stats = self._stats, []
        return out
