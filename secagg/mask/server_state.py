"""The states of the aggregator's masking round share this base: each state is its own
class (``server_keys``, ``server_masked_input``, ``server_unmask``), holds only what it
still needs (the accepted advertisements, ``sid_r``, the share inbox, the running sum, the
consistency signatures) and returns the next state from :meth:`ServerState.collect`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedrx.errors import ProtocolAbort
from fedrx.secagg import bitpack
from fedrx.secagg.identity import Federation
from fedrx.secagg.mask.messages import AdvertiseKeys
from fedrx.secagg.mask.params import MaskingParams
from fedrx.secagg.mask.server_status import ServerView


@dataclass
class ServerContext:
    """What every state of the aggregator's round shares: parameters, pinned keys, view."""

    params: MaskingParams
    federation: Federation
    view: ServerView


class ServerState(ABC):
    """One state; ``name`` is the stage it serves, or ``done`` / ``aborted``."""

    name: str = ""

    def __init__(self, ctx: ServerContext):
        self.ctx = ctx

    def __repr__(self) -> str:
        return f"{type(self).__name__}(round={self.ctx.params.round})"

    def abort(self, reason: str) -> ProtocolAbort:
        return ProtocolAbort(reason, self.name)

    def need(self, have: Sequence[str], what: str) -> None:
        """ProtocolAbort unless at least t hospitals ``have`` done ``what``."""
        t = self.ctx.params.threshold
        if len(have) < t:
            raise self.abort(f"only {len(have)} hospitals {what}; need t={t}")

    def answered(self, h: str, reply: Any, kind: type[Any], expected: Container[str]) -> bool:
        """True if ``reply`` is a ``kind`` from ``h`` (one of ``expected``) for this round."""
        return h in expected and isinstance(reply, kind) and reply.hospital == h \
            and reply.round == self.ctx.params.round

    @abstractmethod
    def requests(self, live: set[str]) -> dict[str, Any]:
        """The request for every peer still expected in this stage that is in ``live``."""

    def absorb(self, hospital: str, reply: Any) -> Any:
        """A reply on arrival (:mod:`fedrx.secagg.absorb`); default: kept as it is."""
        return reply

    @abstractmethod
    def collect(self, replies: Mapping[str, Any]) -> ServerState:
        """Take the replies that arrived; the next state, or raise ProtocolAbort."""


class Advertised(ServerState):
    """A state after ``advertise_keys``: holds the running sum, the accepted advertisements
    (U1's) and ``sid_r``, the round's session id bound to them."""

    def __init__(self, ctx: ServerContext, acc: bitpack.SumAccumulator,
                 ads: dict[str, AdvertiseKeys], sid_r: bytes):
        super().__init__(ctx)
        self._acc = acc
        self.ads = ads
        self.sid_r = sid_r


class _Terminal(ServerState):
    """A terminal state serves no stage (the driver refuses before asking it)."""

    def requests(self, live: set[str]) -> dict[str, Any]:
        raise self.abort(f"no stage is allowed in state {self.name}")

    def collect(self, replies: Mapping[str, Any]) -> ServerState:
        raise self.abort(f"no stage is allowed in state {self.name}")


class ServerCompleted(_Terminal):
    """``total``: the sum of U3's encoded inputs mod 2**m (uint64); ``contributors``: U3."""

    name = "done"

    def __init__(self, ctx: ServerContext, total: np.ndarray, contributors: tuple[str, ...]):
        super().__init__(ctx)
        self.total = total
        self.contributors = contributors


class ServerAborted(_Terminal):
    """The round was refused for ``reason`` (safe to log)."""

    name = "aborted"

    def __init__(self, ctx: ServerContext, reason: str):
        super().__init__(ctx)
        self.reason = reason
