"""The states of one hospital's masking round share this base: each state is its own class
(``client_keys``, ``client_shares``, ``client_masked_input``, ``client_consistency``,
``client_unmask``), holds ONLY the per-round secrets it still needs, answers the one stage
it expects and returns the next state. :class:`ClientCompleted` and :class:`ClientAborted`
are terminal and hold no secret at all.

A state refuses a request by raising :class:`fedrx.errors.ProtocolAbort`; the driver
(:class:`fedrx.secagg.mask.client.MaskingClient`) then replaces it with
:class:`ClientAborted`, which drops every per-round secret.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fedrx.errors import ProtocolAbort
from fedrx.secagg.identity import Federation
from fedrx.secagg.mask.params import MaskingParams, Signer


@dataclass
class ClientContext:
    """What every state of one hospital's round shares; nothing here is a per-round secret.

    ``revealed`` maps each peer to the kind of share released for it (for audit and tests).
    """

    params: MaskingParams
    signer: Signer
    federation: Federation
    revealed: dict[str, str] = field(default_factory=dict)

    @property
    def hospital(self) -> str:
        return self.signer.hospital


class ClientState(ABC):
    """One state of a hospital's round. ``name`` appears in error messages."""

    name: str = ""
    stage: ClassVar[str | None] = None
    """The stage this state answers (None: terminal)."""

    def __init__(self, ctx: ClientContext):
        self.ctx = ctx

    def __repr__(self) -> str:
        return f"{type(self).__name__}(hospital={self.ctx.hospital!r})"

    def abort(self, reason: str) -> ProtocolAbort:
        """The exception that aborts the round at this state's stage (``reason`` safe to log)."""
        return ProtocolAbort(reason, self.stage)

    @abstractmethod
    def handle(self, request: Any) -> tuple[Any, ClientState]:
        """(reply, next state), or raise ProtocolAbort. The round has been checked."""


class InputState(ClientState):
    """A state before masked_input: :meth:`MaskingClient.set_input` may still set ``x``
    (uint64 entries in [0, 2**m), the driver's own copy; masked in place later)."""

    def __init__(self, ctx: ClientContext, x: np.ndarray | None):
        super().__init__(ctx)
        self.x = x


class _Terminal(ClientState):
    """A terminal state answers no stage (the driver refuses before asking it)."""

    def handle(self, request: Any) -> tuple[Any, ClientState]:
        raise self.abort(f"no stage is allowed in state {self.name}")


class ClientCompleted(_Terminal):
    """The round is over for this hospital (its unmask reply was sent)."""

    name = "done"


class ClientAborted(_Terminal):
    """The round was refused for ``reason`` (safe to log); no secrets are kept."""

    name = "aborted"

    def __init__(self, ctx: ClientContext, reason: str):
        super().__init__(ctx)
        self.reason = reason
