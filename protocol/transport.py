"""Transports carry one stage's requests to hospitals and bring back the replies.

The round state machine only ever calls :meth:`Transport.exchange`; the in-process
transport calls each hospital's :meth:`HospitalParty.handle` directly (the parties may be
wrapped, e.g. by the fault plan), the gRPC transport (``fedrx.nodes``) sends them over the
network with a deadline. A hospital that raises, times out or is silent simply has no
entry in the returned mapping: to the aggregator it has dropped.

Streaming: ``exchange`` takes an optional ``absorb(hospital, reply) -> reply`` that every
transport applies to each reply AS IT ARRIVES and keeps what it returns in place of the
reply (:meth:`~fedrx.protocol.protection.ServerProtection.absorb` folds a protected input
into the running sum and returns a stand-in), so the aggregator holds the aggregate and the
reply in hand, not every hospital's input.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fedrx.errors import ProtocolError

log = logging.getLogger("fedrx.transport")

Absorb = Callable[[str, Any], Any]
"""``absorb(hospital, reply)``: what the transport keeps of a reply that just arrived."""


def payload_bytes(obj: Any) -> int:
    """Bytes of a message's payload fields (arrays, bytes, strings; 8 per number).

    An estimate of what a binary encoding puts on the wire, used for in-process accounting.
    """
    if obj is None:
        return 0
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, bytes | bytearray | memoryview):
        return len(obj)
    if isinstance(obj, str):
        return len(obj.encode())
    if isinstance(obj, bool | int | float | np.integer | np.floating):
        return 8
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(payload_bytes(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    if isinstance(obj, Mapping):
        return sum(payload_bytes(k) + payload_bytes(v) for k, v in obj.items())
    if isinstance(obj, list | tuple | set | frozenset):
        return sum(payload_bytes(v) for v in obj)
    if hasattr(obj, "wire_size"):
        return int(obj.wire_size())
    return 0


@dataclasses.dataclass
class StageStats:
    stage: str
    sent_bytes: int = 0
    received_bytes: int = 0
    seconds: float = 0.0
    asked: int = 0
    answered: int = 0
    failures: dict[str, str] = dataclasses.field(default_factory=dict)


class Transport(ABC):
    @abstractmethod
    def exchange(self, stage: str, rnd: int, requests: Mapping[str, Any],
                 absorb: Absorb | None = None) -> dict[str, Any]:
        """Deliver ``requests`` (hospital -> message); return the replies that came back,
        each passed through ``absorb`` on arrival when given (see the module doc)."""

    def take_stats(self) -> list[StageStats]:
        return []


class InProcessTransport(Transport):
    """Delivers messages by direct call. Same protocol code, same cryptography. Faults are
    injected by wrapping the parties (:class:`fedrx.protocol.faults.FaultyParty`)."""

    def __init__(self, parties: Mapping[str, Any]):
        self.parties = dict(parties)
        self._stats: list[StageStats] = []

    def exchange(self, stage: str, rnd: int, requests: Mapping[str, Any],
                 absorb: Absorb | None = None) -> dict[str, Any]:
        st = StageStats(stage, asked=len(requests))
        t0 = time.perf_counter()
        replies: dict[str, Any] = {}
        for h in sorted(requests):
            req = requests[h]
            st.sent_bytes += payload_bytes(req)
            party = self.parties.get(h)
            if party is None:
                st.failures[h] = "unknown hospital"
                continue
            try:
                reply = party.handle(stage, req)
            except ProtocolError as exc:
                st.failures[h] = str(exc)
                log.warning("hospital %s refused stage %s of round %d: %s", h, stage, rnd, exc)
                continue
            st.received_bytes += payload_bytes(reply)
            replies[h] = reply if absorb is None else absorb(h, reply)
            del reply
        st.answered = len(replies)
        st.seconds = time.perf_counter() - t0
        self._stats.append(st)
        return replies

    def take_stats(self) -> list[StageStats]:
        out, self._stats = self._stats, []
        return out
