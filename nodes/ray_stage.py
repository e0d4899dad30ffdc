"""The actor side of the Ray transport: one call answers one stage for every hospital an
actor owns, streaming each hospital's reply back as soon as it is ready.

A Ray worker actor (:class:`fedrx.nodes.ray_backend.HospitalWorker`) inherits
:class:`StageHandler`; the driver (:class:`fedrx.nodes.ray_transport.RayTransport`) calls
:meth:`StageHandler.handle_stage` once per actor and stage, as a Ray streaming generator:
Ray's per-call cost is paid once per actor instead of once per hospital, a request shared
by several hospitals (the round's model) is decoded once per actor instead of once per
hospital, and the driver still receives, decodes and absorbs one reply at a time
(:mod:`fedrx.secagg.absorb`). Everything that crosses is str / bytes: the plan as JSON,
the requests and replies as the wire codec's bytes (:mod:`fedrx.nodes.codec`).

Invariants: each hospital of the plan gets exactly one item, in plan order; a hospital's
refusal or failure is its own item and never stops the others; an item names only
hospitals of the plan.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fedrx.errors import ProtocolError

Item = tuple[str, bytes, str]
"""(hospital, encoded reply, "") or (hospital, b"", why it did not answer)."""


def encode_plan(plan: list[tuple[str, int]]) -> str:
    """``plan``: (hospital, index of its request among the call's payloads), in order."""
    return json.dumps([[h, int(i)] for h, i in plan])


def decode_plan(plan: str, n_payloads: int) -> list[tuple[str, int]]:
    """The plan of :func:`encode_plan`; ValueError unless every entry is [str, index] with a
    valid index and no hospital is listed twice."""
    items = json.loads(plan)
    if not isinstance(items, list):
        raise ValueError("stage plan is not a list")
    out: list[tuple[str, int]] = []
    for it in items:
        if not (isinstance(it, list) and len(it) == 2 and isinstance(it[0], str)
                and isinstance(it[1], int) and 0 <= it[1] < n_payloads):
            raise ValueError("malformed stage plan entry")
        out.append((it[0], it[1]))
    if len({h for h, _ in out}) != len(out):
        raise ValueError("a hospital is listed twice in the stage plan")
    return out


class StageHandler:
    """Answers a stage for the hospitals in ``self.parties`` (hospital -> party with
    ``handle(stage, request)``)."""

    parties: dict[str, Any]

    def handle_stage(self, stage: str, plan: str, *payloads: bytes) -> Iterator[Item]:
        """For each (hospital, index) of ``plan`` (:func:`encode_plan`), in order: the
        hospital's answer to the request ``payloads[index]`` (wire-codec bytes; each
        distinct payload decoded once). A refusal (ProtocolError: an invalid request, a
        fault-injected drop) or any other failure of one hospital is that hospital's item
        (``(h, b"", reason)``; a failure names only its exception type, never its text)."""
        from fedrx.nodes import codec

        decoded: dict[int, Any] = {}
        for h, i in decode_plan(plan, len(payloads)):
            party = self.parties.get(h)
            if party is None:
                yield h, b"", "unknown hospital"
                continue
            try:
                if i not in decoded:
                    decoded[i] = codec.from_bytes(payloads[i])
                reply = codec.to_bytes(party.handle(stage, decoded[i]))
            except ProtocolError as exc:
                yield h, b"", str(exc)
                continue
            except Exception as exc:  # noqa: BLE001  one hospital's bug stops no other
                yield h, b"", f"worker failed: {type(exc).__name__}"
                continue
            yield h, reply, ""
