"""The Ray transport: one stage's requests fanned out to the actors that own the hospitals,
in parallel, gathered until the stage's deadline.

Every call into an actor goes through :func:`call_actor` (the one boundary a test wraps to
inspect what crosses). A request travels as the wire codec's bytes
(:func:`fedrx.nodes.codec.to_bytes`; one encoding, and one object-store copy, per distinct
request object, so the round's model is stored once, not once per hospital); a reply comes
back as bytes and is decoded and validated exactly as the gRPC aggregator does
(:func:`~fedrx.nodes.codec.from_bytes`, :func:`~fedrx.nodes.codec.check_received`). A
hospital that refused, whose actor failed, whose reply does not decode, or that has not
answered when the deadline passes is absent from the replies: to the aggregator it dropped
(its late call is cancelled where Ray still can).

Memory: replies are fetched one at a time as they become ready, decoded, and passed to the
stage's ``absorb`` (the server protection folds a protected input into its running sum and
keeps a stand-in), so the driver holds the round's model, the aggregate and the reply in
hand, never every hospital's update (:mod:`fedrx.secagg.absorb`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from fedrx.errors import ProtocolError
from fedrx.protocol.transport import Absorb, StageStats, Transport

log = logging.getLogger("fedrx.ray")

DEFAULT_STAGE_DEADLINE_S = 3600.0
"""Per-stage deadline (seconds from the stage's start) of the Ray transport."""
INLINE_BYTES = 64 * 1024
"""Requests up to this size are passed by value; larger ones go once into the object store."""


def call_actor(method: Any, verb: str, *args: Any) -> Any:
    """``method.<verb>(*args)``: the one place the driver calls into Ray actors (actor
    creation, :meth:`describe`, :meth:`enroll`, :meth:`handle`). Arguments are str, bytes,
    ints or object references to bytes."""
    fn: Callable[..., Any] = getattr(method, verb)
    return fn(*args)


def fetch(refs: list[Any]) -> list[Any]:
    """``ray.get`` of ``refs``: the one place the driver receives from actors."""
    import ray

    return ray.get(refs)


class RayTransport(Transport):
    """``owners``: hospital -> its actor handle; ``deadline_s``: per stage."""

    def __init__(self, owners: Mapping[str, Any], deadline_s: float = DEFAULT_STAGE_DEADLINE_S):
        self.owners = dict(owners)
        self.deadline_s = float(deadline_s)
        self._stats: list[StageStats] = []

    def exchange(self, stage: str, rnd: int, requests: Mapping[str, Any],
                 absorb: Absorb | None = None) -> dict[str, Any]:
        import ray
        from ray.exceptions import RayError

        from fedrx.nodes import codec

        st = StageStats(stage, asked=len(requests))
        t0 = time.perf_counter()
        encoded: dict[int, tuple[Any, int]] = {}
        pending: dict[Any, str] = {}
        for h in sorted(requests):
            actor = self.owners.get(h)
            if actor is None:
                st.failures[h] = "unknown hospital"
                continue
            req = requests[h]
            if id(req) not in encoded:
                try:
                    data = codec.to_bytes(req)
                except ProtocolError as exc:
                    st.failures[h] = f"no wire encoding: {exc}"
                    continue
                encoded[id(req)] = (ray.put(data) if len(data) > INLINE_BYTES else data,
                                    len(data))
            payload, size = encoded[id(req)]
            st.sent_bytes += size
            pending[call_actor(actor.handle, "remote", stage, h, payload)] = h
        encoded.clear()
        replies: dict[str, Any] = {}
        waiting = list(pending)
        deadline = t0 + self.deadline_s
        while waiting:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            ready, waiting = ray.wait(waiting, num_returns=1, timeout=left)
            for ref in ready:  # decoded as it arrives; the encoded reply is dropped
                h = pending.pop(ref)  # our reference goes: Ray may free the reply
                try:
                    data, reason = fetch([ref])[0]
                except RayError as exc:
                    st.failures[h] = f"worker failed: {type(exc).__name__}"
                    continue
                if reason:
                    st.failures[h] = reason
                    log.warning("hospital %s refused stage %s of round %d: %s", h, stage,
                                rnd, reason)
                    continue
                try:
                    msg = codec.from_bytes(data)
                    codec.check_received(msg)
                except ProtocolError as exc:
                    st.failures[h] = f"malformed reply: {exc}"
                    continue
                st.received_bytes += len(data)
                # folded into the running sum now; the decoded input is dropped at once
                replies[h] = msg if absorb is None else absorb(h, msg)
                del msg, data
        for ref in waiting:
            st.failures[pending[ref]] = "late (stage deadline)"
            try:
                ray.cancel(ref)
            except (RayError, TypeError, ValueError):
                pass
        st.answered = len(replies)
        st.seconds = time.perf_counter() - t0
        self._stats.append(st)
        return replies

    def take_stats(self) -> list[StageStats]:
        out, self._stats = self._stats, []
        return out
