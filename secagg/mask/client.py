"""One hospital's side of one masking round: a driver around the current state.

Transitions (``consistency_check`` only in active mode)::

    AdvertiseKeysState (init) -advertise_keys-> ShareKeysState (advertised)
    -share_keys-> MaskedInputState (shared) -masked_input-> ConsistencyState (masked)
    -consistency_check-> UnmaskState (signed) -unmask-> ClientCompleted (done)

In passive mode masked_input leads straight to ``UnmaskState`` (named ``masked``). Any
failed check -> :class:`ClientAborted` (terminal; the per-round secrets are dropped with
the state that held them) and :class:`fedrx.errors.ProtocolAbort` naming the hospital.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedrx.errors import ProtocolAbort
from fedrx.secagg.identity import Federation
from fedrx.secagg.mask.client_keys import AdvertiseKeysState
from fedrx.secagg.mask.client_state import ClientAborted, ClientContext, ClientState, InputState
from fedrx.secagg.mask.params import MaskingParams, Signer


class MaskingClient:
    """Drives one hospital's states. ``revealed`` maps each peer to the kind of share
    released for it (for audit/tests; no secret)."""

    def __init__(self, params: MaskingParams, signer: Signer, federation: Federation):
        if signer.hospital not in params.participants:
            raise ProtocolAbort(f"{signer.hospital} is not a participant of this round")
        self.params = params
        self.hospital = signer.hospital
        self._ctx = ClientContext(params, signer, federation)
        self.state: ClientState = AdvertiseKeysState(self._ctx)

    @property
    def revealed(self) -> dict[str, str]:
        return self._ctx.revealed

    @property
    def abort_reason(self) -> str | None:
        return self.state.reason if isinstance(self.state, ClientAborted) else None

    def __repr__(self) -> str:
        return f"MaskingClient(hospital={self.hospital!r}, state={self.state.name})"

    def _abort(self, reason: str, stage: str | None = None) -> ProtocolAbort:
        self.state = ClientAborted(self._ctx, reason)
        return ProtocolAbort(f"{self.hospital}: {reason}", stage)

    def set_input(self, encoded: np.ndarray) -> None:
        """The encoded input: uint64 entries in [0, 2**m), length ``params.length``."""
        x = np.asarray(encoded)
        m = self.params.modulus_bits
        if x.dtype != np.uint64 or x.shape != (self.params.length,):
            raise self._abort(f"encoded input must be uint64 of length {self.params.length}")
        if m < 64 and x.size and int(x.max()) >> m:
            raise self._abort(f"encoded input has entries outside [0, 2**{m})")
        if not isinstance(self.state, InputState):
            raise self._abort(f"input set too late (state {self.state.name})")
        self.state.x = x.copy()

    def handle(self, stage: str, request: Any) -> Any:
        """Answer ``request`` for ``stage`` or raise ProtocolAbort (state becomes aborted)."""
        if isinstance(self.state, ClientAborted):
            raise ProtocolAbort(f"{self.hospital}: round already aborted ({self.state.reason})",
                                stage)
        if stage not in self.params.stages:
            raise self._abort(f"unknown stage {stage!r}", stage)
        if self.state.stage != stage:
            raise self._abort(f"stage {stage} not allowed in state {self.state.name}", stage)
        if getattr(request, "round", None) != self.params.round:
            raise self._abort(f"request for stage {stage} is not for round "
                              f"{self.params.round}", stage)
        try:
            reply, self.state = self.state.handle(request)
        except ProtocolAbort as exc:
            raise self._abort(exc.reason, stage) from None
        return reply
