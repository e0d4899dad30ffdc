"""``fedrx bench --backend ray``: one Ray session for the whole bench run, the cluster it
ran on, and the driver-side metering of a Ray arm.

On Ray every hospital runs in a :class:`~fedrx.nodes.ray_backend.HospitalWorker` actor
(another process, possibly another machine), so the driver can measure only what happens
in the driver: bytes and wall time per stage (the Ray transport's own statistics), the
driver's CPU per round (the aggregator's state machine, the wire codec and Ray's client
threads) and the driver's peak RSS. Hospital CPU is NOT measured (None in the records);
nothing of the driver is ever reported as a hospital's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

from fedrx.bench.metering import MeteredTransport
from fedrx.protocol.transport import Absorb

CPU_METHOD = ("hospital CPU not measured: hospitals run in Ray actors; aggregator CPU = "
              "the driver process's CPU per round (aggregator, wire codec, Ray client "
              "threads)")
MEMORY_NOTE = "of the Ray driver only (hospitals run in Ray actors, not counted)"


class DriverMeteredTransport(MeteredTransport):
    """``inner`` (the Ray transport) with the round's driver CPU metered into ``meter``.

    Unlike :class:`MeteredTransport` it hands ``inner`` the whole stage at once, so the
    stage's requests still fan out to the actors in parallel; ``meter.hospital`` stays
    empty (hospital work is in other processes). One :class:`StageStats` per exchange, as
    ``inner`` records it."""

    def exchange(self, stage: str, rnd: int, requests: Mapping[str, Any],
                 absorb: Absorb | None = None) -> dict[str, Any]:
        if self._round_t0 is None:
            self._round_t0 = time.process_time()
        replies = self.inner.exchange(stage, rnd, requests, absorb)
        self._stats += self.inner.take_stats()
        return replies


def cluster_info(address: str, started: bool) -> dict[str, Any]:
    """The Ray cluster the bench ran on: its CPUs (``ray.cluster_resources``), nodes, Ray's
    version, the address asked for ("" = a local Ray) and whether the bench started it."""
    import ray

    res = ray.cluster_resources()
    return {"name": "ray", "address": address or "local",
            "cluster_cpus": int(res.get("CPU", 0)),
            "nodes": sum(1 for n in ray.nodes() if n.get("Alive")),
            "ray_version": ray.__version__, "started_by_bench": started}


@contextlib.contextmanager
def ray_session(address: str) -> Iterator[dict[str, Any]]:
    """Ray for the whole bench run: joined (``address``) or started locally unless this
    process already is a Ray driver; shut down on exit only if started here. Yields
    :func:`cluster_info`."""
    from fedrx.nodes.ray_backend import init_ray

    started = init_ray(address)
    try:
        yield cluster_info(address, started)
    finally:
        if started:
            import ray

            ray.shutdown()
