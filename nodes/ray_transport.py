"""The Ray transport: one stage's requests fanned out to the actors that own the hospitals,
in parallel, gathered until the stage's deadline.

ONE call per actor and stage (:meth:`fedrx.nodes.ray_stage.StageHandler.handle_stage`, a Ray
streaming generator): the actor answers its hospitals one after another and each reply
streams back as soon as it is ready; the actors run in parallel. Every call into an actor
goes through :func:`call_actor` and every value received through :func:`fetch` (the one
boundary a test wraps to inspect what crosses). A request travels as the wire codec's bytes
(:func:`fedrx.nodes.codec.to_bytes`; one encoding, and one object-store copy, per distinct
request object, so the round's model is stored once, not once per hospital, and decoded
once per actor); a reply comes back as bytes and is decoded and validated exactly as the
gRPC aggregator does (:func:`~fedrx.nodes.codec.from_bytes`,
:func:`~fedrx.nodes.codec.check_received`). A hospital that refused, whose actor failed,
whose reply does not decode, that its actor did not answer for, or that has not answered
when the deadline passes is absent from the replies: to the aggregator it dropped (the
stage's call is cancelled where Ray still can). An item for a hospital the actor was not
asked about, or a second item for one, is ignored.

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
from fedrx.nodes import codec
from fedrx.nodes.ray_stage import encode_plan
from fedrx.protocol.transport import Absorb, StageStats, Transport

log = logging.getLogger("fedrx.ray")

DEFAULT_STAGE_DEADLINE_S = 3600.0
"""Per-stage deadline (seconds from the stage's start) of the Ray transport."""
INLINE_BYTES = 64 * 1024
"""Requests up to this size are passed by value; larger ones go once into the object store."""


def call_actor(method: Any, verb: str, *args: Any) -> Any:
    """``method.<verb>(*args)``: the one place the driver calls into Ray actors (actor
    creation, :meth:`describe`, :meth:`enroll`, :meth:`handle_stage`). Arguments are str,
    bytes, ints or object references to bytes."""
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

    def _calls(self, stage: str, requests: Mapping[str, Any], st: StageStats
               ) -> dict[Any, set[str]]:
        """Start one ``handle_stage`` call per actor: generator -> the hospitals asked."""
        import ray

        encoded: dict[int, tuple[Any, int]] = {}
        by_actor: dict[int, tuple[Any, list[tuple[str, Any]]]] = {}
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
            by_actor.setdefault(id(actor), (actor, []))[1].append((h, payload))
        calls: dict[Any, set[str]] = {}
        for actor, items in by_actor.values():
            payloads: list[Any] = []
            index: dict[int, int] = {}
            plan = []
            for h, payload in items:
                if id(payload) not in index:
                    index[id(payload)] = len(payloads)
                    payloads.append(payload)
                plan.append((h, index[id(payload)]))
            gen = call_actor(actor.handle_stage, "remote", stage, encode_plan(plan), *payloads)
            calls[gen] = {h for h, _ in items}
        return calls

    def exchange(self, stage: str, rnd: int, requests: Mapping[str, Any],
                 absorb: Absorb | None = None) -> dict[str, Any]:
        import ray
        from ray.exceptions import RayError

        st = StageStats(stage, asked=len(requests))
        t0 = time.perf_counter()
        calls = self._calls(stage, requests, st)
        replies: dict[str, Any] = {}
        deadline = t0 + self.deadline_s
        while calls:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            ready, _ = ray.wait(list(calls), num_returns=1, timeout=left)
            for gen in ready:
                expected = calls[gen]
                try:
                    ref = next(gen)
                    h, data, reason = fetch([ref])[0]
                    del ref  # our reference goes: Ray may free the reply
                except StopIteration:  # the actor has answered for all it will
                    for h in calls.pop(gen):
                        st.failures[h] = "no answer from its worker"
                    continue
                except RayError as exc:  # the actor failed: its remaining hospitals too
                    for h in calls.pop(gen):
                        st.failures[h] = f"worker failed: {type(exc).__name__}"
                    continue
                if not isinstance(h, str) or h not in expected:
                    log.warning("worker answered for a hospital it was not asked about")
                    continue
                expected.discard(h)
                if not expected:
                    calls.pop(gen)
                self._settle(h, data, reason, stage, rnd, st, replies, absorb)
        for gen, hospitals in calls.items():
            for h in hospitals:
                st.failures[h] = "late (stage deadline)"
            try:
                ray.cancel(gen)
            except (RayError, TypeError, ValueError):
                pass
        st.answered = len(replies)
        st.seconds = time.perf_counter() - t0
        self._stats.append(st)
        return replies

    @staticmethod
    def _settle(h: str, data: Any, reason: Any, stage: str, rnd: int, st: StageStats,
                replies: dict[str, Any], absorb: Absorb | None) -> None:
        """One hospital's item: decoded, checked and absorbed, or recorded as a failure."""
        if reason or not isinstance(data, bytes):
            st.failures[h] = str(reason) if reason else "malformed reply: not bytes"
            if reason:
                log.warning("hospital %s refused stage %s of round %d: %s", h, stage, rnd,
                            reason)
            return
        try:
            msg = codec.from_bytes(data)
            codec.check_received(msg)
        except ProtocolError as exc:
            st.failures[h] = f"malformed reply: {exc}"
            return
        st.received_bytes += len(data)
        # folded into the running sum now; the decoded input is dropped at once
        replies[h] = msg if absorb is None else absorb(h, msg)

    def take_stats(self) -> list[StageStats]:
        out, self._stats = self._stats, []
        return out
