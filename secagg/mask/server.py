"""The aggregator's side of one masking round (honest behaviour): a driver around the
current state.

Transitions follow ``params.stages``: for each stage ``requests`` then ``collect``::

    ServerAdvertise -> ServerShareKeys -> ServerMaskedInput [-> ServerConsistency]
    -> ServerUnmask -> ServerCompleted (done)

Any failure raises :class:`fedrx.errors.ProtocolAbort` and moves to :class:`ServerAborted`.
Deadlines are the transport's job: ``collect`` only sees the replies that arrived.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedrx.errors import ProtocolAbort
from fedrx.secagg import bitpack
from fedrx.secagg.identity import Federation
from fedrx.secagg.mask.params import MaskingParams
from fedrx.secagg.mask.server_keys import ServerAdvertise
from fedrx.secagg.mask.server_state import (
    ServerAborted,
    ServerCompleted,
    ServerContext,
    ServerState,
)
from fedrx.secagg.mask.server_status import ServerView


class MaskingServer:
    """Drives the aggregator's states; ``view`` holds one status per participant."""

    def __init__(self, params: MaskingParams, federation: Federation):
        self.params = params
        self.view = ServerView.invite(params.participants)
        self._ctx = ServerContext(params, federation, self.view)
        acc = bitpack.SumAccumulator(params.modulus_bits, params.length)
        self.state: ServerState = ServerAdvertise(self._ctx, acc)

    def __repr__(self) -> str:
        return f"MaskingServer(round={self.params.round}, state={self.state.name})"

    @property
    def abort_reason(self) -> str | None:
        return self.state.reason if isinstance(self.state, ServerAborted) else None

    def _enter(self, stage: str) -> None:
        if isinstance(self.state, ServerAborted):
            raise ProtocolAbort(f"round already aborted ({self.state.reason})", stage)
        if self.state.name != stage:
            reason = f"stage {stage} not allowed in state {self.state.name}"
            self.state = ServerAborted(self._ctx, reason)
            raise ProtocolAbort(reason, stage)

    def requests(self, stage: str, alive: Sequence[str]) -> dict[str, Any]:
        self._enter(stage)
        return self.state.requests(set(alive))

    def absorb(self, stage: str, hospital: str, reply: Any) -> Any:
        """One reply on arrival: folded into the running sum where the current state sums
        (masked inputs; :mod:`fedrx.secagg.absorb`), else returned unchanged."""
        if isinstance(self.state, ServerAborted) or self.state.name != stage:
            return reply
        return self.state.absorb(hospital, reply)

    def collect(self, stage: str, replies: Mapping[str, Any]) -> None:
        self._enter(stage)
        try:
            self.state = self.state.collect(replies)
        except ProtocolAbort as exc:
            self.state = ServerAborted(self._ctx, exc.reason)
            raise

    def result(self) -> tuple[np.ndarray, tuple[str, ...]]:
        """(sum of U3's encoded inputs mod 2**m as uint64, contributors U3)."""
        if not isinstance(self.state, ServerCompleted):
            raise ProtocolAbort(f"no result in state {self.state.name}")
        return self.state.total.copy(), self.state.contributors
