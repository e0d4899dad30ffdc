"""Fault injection, one mechanism for every place a fault can be injected.

A :class:`Fault` names a party, a stage and a round, and what happens there:

* ``drop``: the hospital is silent from that stage to the end of the round (it is back
  for the next round). ``fedrx simulate --drop HOSPITAL@STAGE:ROUND[,...]``.
* ``crash``: the process exits abruptly (exit code 137, no clean-up) when that point is
  reached: a hospital node when it is asked for STAGE of ROUND (``[node] fault =
  "STAGE:ROUND"``), the aggregator right after the exchange of STAGE of ROUND
  (``[aggregator] crash_at``) or right after round ROUND is checkpointed
  (``[aggregator] crash_after_round``, stage :data:`CHECKPOINTED`).

A :class:`FaultPlan` answers "is this party silent / crashing here?"; the plan is applied
by wrappers, never by the parties or transports themselves: :class:`FaultyParty` around a
hospital party and :class:`FaultyTransport` around the aggregator's transport.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from fedrx.errors import ConfigError, ProtocolError
from fedrx.protocol.transport import Absorb, StageStats, Transport

log = logging.getLogger("fedrx.faults")

DROP, CRASH = "drop", "crash"
AGGREGATOR = "aggregator"
CHECKPOINTED = "checkpointed"
"""The pseudo-stage after a round's checkpoint and receipts (``crash_after_round``)."""
DROPPED = "dropped (fault injection)"

_SPEC = re.compile(r"^(?P<h>[^@\s,]+)@(?P<stage>[a-z_]+):(?P<round>\d+)$")


@dataclass(frozen=True)
class Fault:
    """``party`` does ``action`` at ``stage`` of ``round`` (round >= 1)."""

    party: str
    stage: str
    round: int
    action: str = DROP


def parse_drops(text: str | Iterable[str] | None) -> list[Fault]:
    """``HOSPITAL@STAGE:ROUND[,...]`` -> drop faults (ConfigError names a bad item)."""
    if not text:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        m = _SPEC.match(item)
        if not m:
            raise ConfigError(f"bad --drop spec {item!r} (expected HOSPITAL@STAGE:ROUND, "
                              "e.g. h2@share_keys:1)")
        out.append(Fault(m["h"], m["stage"], int(m["round"])))
    return out


def stage_round(spec: str, what: str) -> tuple[str, int] | None:
    """A fault point ``STAGE:ROUND`` as (stage, round >= 1); None for ""."""
    if not spec:
        return None
    stage, _, rnd = spec.partition(":")
    if not stage or not rnd.isdigit() or int(rnd) < 1:
        raise ConfigError(f"{what} must be STAGE:ROUND (round >= 1)")
    return stage, int(rnd)


def crash_fault(party: str, spec: str, what: str) -> Fault | None:
    """``STAGE:ROUND`` -> a crash fault of ``party`` (None for "")."""
    point = stage_round(spec, what)
    return None if point is None else Fault(party, point[0], point[1], CRASH)


def validate_drops(drops: list[Fault], hospitals: Iterable[str], stages: Iterable[str],
                   rounds: int) -> None:
    hs, st = set(hospitals), list(stages)
    for d in drops:
        if d.party not in hs:
            raise ConfigError(f"--drop names unknown hospital {d.party!r} "
                              f"(known: {', '.join(sorted(hs))})")
        if d.stage not in st:
            raise ConfigError(f"--drop names unknown stage {d.stage!r} "
                              f"(stages: {', '.join(st)})")
        if not 1 <= d.round <= rounds:
            raise ConfigError(f"--drop round {d.round} outside 1..{rounds}")


class FaultPlan:
    """Answers "is hospital h silent at stage s of round r?" and "does party p crash
    there?". ``stages``: the round's stages in order (a drop lasts to the round's end)."""

    def __init__(self, faults: list[Fault], stages: tuple[str, ...] = ()):
        self.faults = list(faults)
        self.order = {s: i for i, s in enumerate(stages)}

    def silent(self, hospital: str, stage: str, rnd: int) -> bool:
        for d in self.faults:
            if d.action != DROP or d.party != hospital or d.round != rnd:
                continue
            if stage == d.stage:
                return True
            if stage in self.order and d.stage in self.order \
                    and self.order[stage] >= self.order[d.stage]:
                return True
        return False

    def crashes(self, party: str, stage: str, rnd: int) -> bool:
        return any(d.action == CRASH and (d.party, d.stage, d.round) == (party, stage, rnd)
                   for d in self.faults)

    def crash_here(self, party: str, stage: str, rnd: int) -> None:
        """Exit the process now if ``party`` crashes at (stage, round)."""
        if self.crashes(party, stage, rnd):
            crash(party, stage, rnd)


def crash(party: str, stage: str, rnd: int) -> NoReturn:
    """Exit abruptly (137, as kill -9 would), for fault-injection tests only."""
    when = "" if stage == CHECKPOINTED else " mid-round"
    log.warning("fault injection: exiting abruptly%s", when,
                extra={"fields": {"party": party, "stage": stage, "round": rnd}})
    logging.shutdown()
    os._exit(137)


class InjectedDrop(ProtocolError):
    """The fault plan silenced this hospital (the transport records it as dropped)."""

    def __init__(self) -> None:
        super().__init__(DROPPED)


class FaultyParty:
    """A hospital party with the plan applied in front of ``handle``: silent (raises
    :class:`InjectedDrop`) or crashing before the request reaches the party."""

    def __init__(self, party: Any, plan: FaultPlan):
        self.party = party
        self.plan = plan

    def __getattr__(self, name: str) -> Any:  # the wrapped party's state (dp, log, ...)
        return getattr(self.party, name)

    def handle(self, stage: str, request: Any) -> Any:
        rnd = int(getattr(request, "round", 0))
        h = self.party.hospital
        self.plan.crash_here(h, stage, rnd)
        if self.plan.silent(h, stage, rnd):
            raise InjectedDrop()
        return self.party.handle(stage, request)


class FaultyTransport(Transport):
    """The aggregator's transport with its crash points applied after each exchange."""

    def __init__(self, inner: Transport, plan: FaultPlan, party: str = AGGREGATOR):
        self.inner = inner
        self.plan = plan
        self.party = party

    def exchange(self, stage: str, rnd: int, requests: Mapping[str, Any],
                 absorb: Absorb | None = None) -> dict[str, Any]:
        replies = self.inner.exchange(stage, rnd, requests, absorb)
        self.plan.crash_here(self.party, stage, rnd)
        return replies

    def take_stats(self) -> list[StageStats]:
        return self.inner.take_stats()
