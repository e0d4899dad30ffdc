"""Fault injection: make a named hospital drop out at a named stage of a named round.

Syntax (``--drop``): ``HOSPITAL@STAGE:ROUND``, e.g. ``h2@share_keys:1``; several specs
are comma-separated. A dropped hospital sends nothing from that stage to the end of the
round; it is back for the next round.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from fedrx.errors import ConfigError

_SPEC = re.compile(r"^(?P<h>[^@\s,]+)@(?P<stage>[a-z_]+):(?P<round>\d+)$")


@dataclass(frozen=True)
class DropSpec:
    hospital: str
    stage: str
    round: int


def parse_drops(text: str | Iterable[str] | None) -> list[DropSpec]:
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
        out.append(DropSpec(m["h"], m["stage"], int(m["round"])))
    return out


def validate_drops(drops: list[DropSpec], hospitals: Iterable[str], stages: Iterable[str],
                   rounds: int) -> None:
    hs, st = set(hospitals), list(stages)
    for d in drops:
        if d.hospital not in hs:
            raise ConfigError(f"--drop names unknown hospital {d.hospital!r} "
                              f"(known: {', '.join(sorted(hs))})")
        if d.stage not in st:
            raise ConfigError(f"--drop names unknown stage {d.stage!r} "
                              f"(stages: {', '.join(st)})")
        if not 1 <= d.round <= rounds:
            raise ConfigError(f"--drop round {d.round} outside 1..{rounds}")


class FaultPlan:
    """Answers "is hospital h silent at stage s of round r?"."""

    def __init__(self, drops: list[DropSpec], stages: tuple[str, ...]):
        self.drops = drops
        self.order = {s: i for i, s in enumerate(stages)}

    def silent(self, hospital: str, stage: str, rnd: int) -> bool:
        for d in self.drops:
            if d.hospital == hospital and d.round == rnd:
                if stage == d.stage:
                    return True
                if stage in self.order and d.stage in self.order:
                    if self.order[stage] >= self.order[d.stage]:
                        return True
        return False
