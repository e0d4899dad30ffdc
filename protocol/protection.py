"""The pluggable protection interface: how a hospital's update is hidden from the aggregator.

A protection level (``none``, ``mask``, ``ckks``) is a :class:`Protection` factory that makes,
for ONE round, one :class:`ServerProtection` (the aggregator's state machine) and one
:class:`ClientProtection` per participating hospital. Both sides walk the same ordered list
of named ``stages``. In each stage the aggregator builds one request per live hospital
(:meth:`ServerProtection.requests`), the transport delivers them, each hospital answers
(:meth:`ClientProtection.handle`), and the aggregator collects the answers that arrived
before the stage deadline (:meth:`ServerProtection.collect`). A hospital that does not
answer has DROPPED for the rest of the round.

Invariants every implementation keeps:

* The protected input is a float64 vector of a length fixed for the round
  (:attr:`RoundContext.vector_length`). The round logic puts the hospital's example
  count in it, so weighting is protected too.
* :meth:`ServerProtection.result` returns the SUM of the inputs of exactly the hospitals
  in :attr:`AggregateResult.contributors`, and nothing about any single input.
* If too few hospitals remain for the protection to stay sound, ``collect`` raises
  :class:`ProtocolAbort` with a reason; nothing secret has been revealed at that point.
* Requests and replies are plain dataclasses (``messages``) a transport can encode; they
  carry no secret of the sender unless encrypted to its recipient.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedrx.errors import ProtocolAbort
from fedrx.protocol.context import Pinned
from fedrx.secagg.absorb import AbsorbLedger

# A protection refuses or ends a round by raising :class:`fedrx.errors.ProtocolAbort`.


@dataclass(frozen=True)
class RoundContext:
    """What both sides agree on for one round.

    ``session_id`` is the federation's derived 32-byte session
    (:func:`fedrx.protocol.context.derive_session_id`); ``round`` counts from 1;
    ``participants`` are the selected hospital ids in sorted order; ``vector_length`` is
    the protected vector's length (model parameters + 1 for the example count);
    ``model_hash`` is the hash of the round's model as THIS party computed it (a hospital:
    from the weights it received and will train; the aggregator: from the weights it sent).
    A hospital builds its context only from fields it checked itself
    (:mod:`fedrx.protocol.context`); a protection binds a digest of it into what the
    hospitals sign to each other before any protected input is sent.
    """

    session_id: bytes
    round: int
    participants: tuple[str, ...]
    vector_length: int
    params: Mapping[str, Any] = field(default_factory=dict)
    model_hash: str = ""


@dataclass(frozen=True)
class AggregateResult:
    """Sum of the contributors' input vectors (float64) and who contributed."""

    total: np.ndarray
    contributors: tuple[str, ...]
    stats: Mapping[str, Any] = field(default_factory=dict)


class ClientProtection(ABC):
    """One hospital's side of one round."""

    stages: tuple[str, ...]

    @abstractmethod
    def set_input(self, vector: np.ndarray) -> None:
        """Give the hospital's input vector (float64, length ``vector_length``)."""

    @abstractmethod
    def handle(self, stage: str, request: Any) -> Any:
        """Answer the aggregator's request for ``stage``; raise ProtocolAbort to refuse."""


class ServerProtection(ABC):
    """The aggregator's side of one round."""

    stages: tuple[str, ...]

    @abstractmethod
    def requests(self, stage: str, alive: Sequence[str]) -> dict[str, Any]:
        """Requests for ``stage``, one per live hospital that must take part in it."""

    def absorb(self, stage: str, hospital: str, reply: Any) -> Any:
        """Called by the transport with each reply AS IT ARRIVES, before ``collect``.

        A stage that sums validates the reply as ``collect`` would, adds it to its running
        aggregate and returns a small :class:`~fedrx.secagg.absorb.Absorbed` stand-in that
        ``collect`` then receives in its place (the aggregator never holds more than the
        aggregate and the reply in hand; :mod:`fedrx.secagg.absorb`). Default: the reply
        unchanged. Never raises for a bad reply: it is returned as is and ``collect``
        rejects it."""
        return reply

    @abstractmethod
    def collect(self, stage: str, replies: Mapping[str, Any]) -> None:
        """Take the replies that arrived in time (stand-ins where :meth:`absorb` folded
        one in); raise ProtocolAbort if the round fails."""

    @abstractmethod
    def result(self) -> AggregateResult:
        """The aggregate, after the last stage."""


class Protection(ABC):
    """Factory for one protection level. ``name`` is what users type (``--protection``)."""

    name: str
    stages: tuple[str, ...]
    pinned: Pinned | None = None
    """The party's pinned round policy (session, members, bounds; set by
    :func:`fedrx.protocol.registry.make_protection`); None: nothing pinned (unit tests)."""

    def validate(self, n_hospitals: int, vector_length: int) -> None:  # noqa: B027
        """Reject an unsafe or impossible configuration before any round starts."""

    @abstractmethod
    def new_server(self, ctx: RoundContext) -> ServerProtection: ...

    @abstractmethod
    def new_client(self, ctx: RoundContext, hospital: str) -> ClientProtection: ...

    def min_survivors(self, n_participants: int) -> int:
        """Fewest hospitals that must reach the end of a round for it to complete."""
        return 1

    # Long-lived state across rounds (the aggregator's node asks through these, never
    # through a protection's attributes). Defaults: nothing kept, nothing to do.

    def checkpoint(self) -> dict[str, bytes]:
        """Public state to keep with the aggregator's checkpoint: name -> bytes (no secret
        key material; restored by :meth:`restore`)."""
        return {}

    def restore(self, blobs: dict[str, bytes]) -> None:  # noqa: B027
        """Re-install what :meth:`checkpoint` returned (verified again)."""

    def reconnected(self, hospitals: Sequence[str]) -> None:  # noqa: B027
        """These hospitals opened a new session since the last round (they may have lost
        whatever was relayed to them before)."""


# ---------------------------------------------------------------------------- none


@dataclass(frozen=True)
class PlainUploadRequest:
    round: int


@dataclass(frozen=True)
class PlainUpload:
    """An update in the clear: the aggregator sees it (that is what ``none`` means)."""

    vector: np.ndarray


class _PlainClient(ClientProtection):
    stages = ("upload",)

    def __init__(self, ctx: RoundContext):
        self.ctx = ctx
        self.vector: np.ndarray | None = None

    def set_input(self, vector: np.ndarray) -> None:
        if vector.shape != (self.ctx.vector_length,):
            raise ProtocolAbort(f"input length {vector.shape} != {self.ctx.vector_length}")
        self.vector = np.asarray(vector, dtype=np.float64)

    def handle(self, stage: str, request: Any) -> Any:
        if stage != "upload" or not isinstance(request, PlainUploadRequest):
            raise ProtocolAbort(f"unexpected request for stage {stage!r}")
        if request.round != self.ctx.round:
            raise ProtocolAbort(f"request for round {request.round}, expected {self.ctx.round}")
        if self.vector is None:
            raise ProtocolAbort("no input set before upload")
        return PlainUpload(self.vector)


class _PlainServer(ServerProtection):
    """Sums plaintext updates. A float64 sum depends on the order of its terms, so updates
    are added in sorted hospital order whatever order they arrive in: an update that
    arrives before every earlier hospital has arrived (or dropped) waits in ``_early``
    (the arrival skew; none with the in-process transport), the rest are added on arrival
    (:meth:`absorb`). Same sum, bit for bit, on every transport."""

    stages = ("upload",)

    def __init__(self, ctx: RoundContext):
        self.ctx = ctx
        self.total = np.zeros(ctx.vector_length, dtype=np.float64)
        self.contributors: list[str] = []
        self.rejected: list[str] = []
        self._absorbed = AbsorbLedger()
        self._order: list[str] = []  # hospitals asked, sorted; those not yet added or passed
        self._early: dict[str, np.ndarray] = {}

    def requests(self, stage: str, alive: Sequence[str]) -> dict[str, Any]:
        self._order = sorted(alive)
        return {h: PlainUploadRequest(self.ctx.round) for h in alive}

    def _valid(self, msg: Any) -> bool:
        return (isinstance(msg, PlainUpload) and msg.vector.shape == (self.ctx.vector_length,)
                and bool(np.all(np.isfinite(msg.vector))))

    def _fold_ready(self) -> None:
        """Add the waiting updates whose every earlier hospital has been added."""
        while self._order and self._order[0] in self._early:
            self.total += self._early.pop(self._order.pop(0))

    def _wait(self, h: str, msg: Any) -> str:
        """Check one update and queue it for the hospital-order sum: "" or why not."""
        if not self._valid(msg):
            self._order.remove(h)  # rejected at collect; no longer awaited
            self._fold_ready()
            return "invalid update"
        self._early[h] = msg.vector
        self._fold_ready()
        return ""

    def absorb(self, stage: str, hospital: str, reply: Any) -> Any:
        if stage != "upload" or hospital not in self._order:
            return reply
        return self._absorbed.take(hospital, stage, reply, self._wait)

    def collect(self, stage: str, replies: Mapping[str, Any]) -> None:
        for h in sorted(replies):
            msg = replies[h]
            if h in self._absorbed.added:  # its input is in the sum, or waits (once)
                self.contributors.append(h)
            elif h in self._absorbed.refused or not self._valid(msg):
                self.rejected.append(h)
            else:  # a transport that did not absorb
                self._early[h] = msg.vector
                self.contributors.append(h)
        # the stage is over (the silent have dropped): what still waits comes after every
        # update already added, so adding it in sorted order keeps the hospital order
        for h in sorted(self._early):
            self.total += self._early.pop(h)
        self._order.clear()
        if not self.contributors:
            raise ProtocolAbort("no hospital uploaded a valid update")

    def result(self) -> AggregateResult:
        return AggregateResult(self.total.copy(), tuple(self.contributors),
                               {"rejected": list(self.rejected)})


class NoProtection(Protection):
    """Plaintext FedAvg: the aggregator sees every update. For baselines only."""

    name = "none"
    stages = ("upload",)

    def new_server(self, ctx: RoundContext) -> ServerProtection:
        return _PlainServer(ctx)

    def new_client(self, ctx: RoundContext, hospital: str) -> ClientProtection:
        return _PlainClient(ctx)
