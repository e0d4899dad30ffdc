"""The aggregator's network side: the registry of hospital sessions, :class:`GrpcTransport`
over them, and :func:`serve`, which starts the gRPC server that fills the registry.

Each hospital dials out and holds ONE ``Session`` stream (mutual TLS), authenticated by
:class:`~fedrx.nodes.servicer.AggregatorService` and represented by a
:class:`~fedrx.nodes.session.HospitalSession`. :class:`GrpcTransport` implements
:class:`~fedrx.protocol.transport.Transport` over these sessions so the SAME
:class:`~fedrx.protocol.aggregator.RoundMachine` drives a round; a hospital that is not
connected, refuses, disconnects or misses the stage deadline is missing from the replies.
The standard ``grpc.health.v1.Health`` service comes from ``grpcio-health-checking``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedrx.errors import ConfigError
from fedrx.nodes import wire
from fedrx.nodes.certs import Deployment
from fedrx.nodes.codec import Limits
from fedrx.nodes.config import event
from fedrx.nodes.servicer import AggregatorService
from fedrx.nodes.session import HospitalSession, Pending
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2_grpc as pb_grpc
from fedrx.protocol.messages import EVALUATE, TRAIN
from fedrx.protocol.transport import Absorb, StageStats, Transport

log = logging.getLogger("fedrx.nodes.aggregator")

ARRIVAL_POLL_S = 0.02
"""Longest a completed call waits (seconds) before its reply is absorbed into the sum."""


class Registry:
    """Connected hospitals by id: at most ONE live session per hospital.

    A second session for a hospital whose session is still live is refused (:meth:`attach`
    returns False): a stolen certificate cannot push the real hospital off, and the real
    hospital, refused while an impostor holds the identity, retries. A session whose stream
    has ended (``alive()`` false) or that was closed is replaced at once.
    """

    def __init__(self, reconnect_wait: float = 1.0) -> None:
        self.cond = threading.Condition()
        self.sessions: dict[str, HospitalSession] = {}
        self.hello_rounds: dict[str, int] = {}
        self.reconnect_wait = reconnect_wait
        """Seconds :meth:`attach` waits for a hospital's old session to end (a reconnect
        may race the old stream's teardown) before refusing the new one."""

    def attach(self, s: HospitalSession) -> bool:
        """Register ``s`` unless another live session of its hospital is still registered
        after :attr:`reconnect_wait` seconds."""
        end = time.monotonic() + self.reconnect_wait
        with self.cond:
            while True:
                old = self.sessions.get(s.hospital)
                if old is None or not old.open or not old.alive():
                    break
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.05))
            self.sessions[s.hospital] = s
            self.hello_rounds[s.hospital] = max(self.hello_rounds.get(s.hospital, 0),
                                                s.last_round)
            self.cond.notify_all()
        if old is not None:
            old.close("replaced: its stream had ended")
        return True

    def detach(self, s: HospitalSession) -> None:
        with self.cond:
            if self.sessions.get(s.hospital) is s:
                del self.sessions[s.hospital]
            self.cond.notify_all()

    def get(self, h: str) -> HospitalSession | None:
        with self.cond:
            return self.sessions.get(h)

    def connected(self) -> list[str]:
        with self.cond:
            return sorted(self.sessions)

    def wait_for(self, n: int, timeout: float, stop: threading.Event) -> bool:
        """Wait until ``n`` hospitals are connected: True then, False once ``timeout``
        seconds passed or ``stop`` was set (a wait outcome for the caller's control flow,
        not a verification)."""
        end = time.monotonic() + timeout
        with self.cond:
            while len(self.sessions) < n:
                left = end - time.monotonic()
                if left <= 0 or stop.is_set():
                    return False
                self.cond.wait(min(left, 0.2))
            return True

    def broadcast(self, make: Callable[[str], Any]) -> None:
        with self.cond:
            sessions = list(self.sessions.values())
        for s in sessions:
            s.notify(make(s.hospital))


@dataclass
class ServiceSettings:
    """What the servicer checks a stream against.

    ``rounds``: the federation's last round number (a Hello's ``last_round`` above it is
    refused); ``hello_timeout``: seconds a new stream may take to send its Hello before it
    is closed (DEADLINE_EXCEEDED); ``streams_per_identity``: streams one identity may hold
    open at once (its session plus reconnects awaiting their Hello), beyond which a new
    stream is refused at once (RESOURCE_EXHAUSTED); ``next_round``: the round number a
    Welcome announces."""

    deployment: Deployment
    task_digest: str
    protection: str
    rounds: int
    limits: Limits
    insecure: bool = False
    hello_timeout: float = 5.0
    streams_per_identity: int = 3
    next_round: Callable[[], int] = lambda: 1


class GrpcTransport(Transport):
    """Delivers a stage's requests over the hospitals' sessions with a per-stage deadline.

    ``deadlines``: seconds by stage name (``train``, ``evaluate``, ``*`` for protection
    stages). ``stop``: when set, waiting ends at once (graceful shutdown).
    """

    def __init__(self, registry: Registry, deadlines: Mapping[str, float],
                 stop: threading.Event | None = None):
        self.registry = registry
        self.deadlines = dict(deadlines)
        self.stop = stop or threading.Event()
        self._stats: list[StageStats] = []

    def deadline(self, stage: str) -> float:
        return self.deadlines.get(stage, self.deadlines.get("*", 60.0))

    def exchange(self, stage: str, rnd: int, requests: Mapping[str, Any],
                 absorb: Absorb | None = None) -> dict[str, Any]:
        st = StageStats(stage, asked=len(requests))
        t0 = time.perf_counter()
        cache: dict[int, tuple[pb.Envelope, bytes]] = {}
        pend: dict[str, tuple[HospitalSession, Pending]] = {}
        for h in sorted(requests):
            req = requests[h]
            sess = self.registry.get(h)
            if sess is None:
                st.failures[h] = "not connected"
                continue
            key = id(req)
            if key not in cache:
                cache[key] = wire.encode(req)
            env, data = cache[key]
            session_id = getattr(req, "session_id", b"") if stage == TRAIN else b""
            p = sess.request(session_id, stage, rnd, env, data)
            st.sent_bytes += p.sent_bytes
            pend[h] = (sess, p)
        end = time.monotonic() + self.deadline(stage)
        replies: dict[str, Any] = {}
        left = dict(pend)
        while left:  # settle each call as it completes (replies absorbed on arrival)
            for h in [h for h, (_s, p) in left.items() if p.done.is_set()]:
                _sess, p = left.pop(h)
                if p.error:
                    st.failures[h] = p.error
                    if p.error != "disconnected":
                        event(log, logging.WARNING, "hospital refused", hospital=h,
                              stage=stage, round=rnd, reason=p.error)
                    continue
                replies[h] = p.reply if absorb is None else absorb(h, p.reply)
                p.reply = None  # the stand-in replaces the decoded input
                st.received_bytes += p.received_bytes
            if not left or time.monotonic() >= end or self.stop.is_set():
                break
            next(iter(left.values()))[1].done.wait(ARRIVAL_POLL_S)
        for h, (sess, p) in left.items():
            sess.expire(p)
            st.failures[h] = "deadline exceeded" if not self.stop.is_set() \
                else "aggregator shutting down"
        st.answered = len(replies)
        st.seconds = time.perf_counter() - t0
        self._stats.append(st)
        if stage not in (TRAIN, EVALUATE) or st.failures:
            event(log, logging.INFO, "stage done", round=rnd, stage=stage,
                  answered=f"{st.answered}/{st.asked}", seconds=round(st.seconds, 3),
                  failures=",".join(sorted(st.failures)) or "-")
        return replies

    def take_stats(self) -> list[StageStats]:
        out, self._stats = self._stats, []
        return out


HEALTH_WORKERS = 8
"""Pool threads left for health checks and refusals above what every identity's streams
can hold (``streams_per_identity`` each)."""


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (IPv6 hosts in brackets) -> (host, port); ConfigError for anything
    else, a port outside 0..65535 included (0: an ephemeral port)."""
    host, sep, port = str(listen).rpartition(":")
    bad = (not sep or not host or not port.isdigit() or int(port) > 65535
           or (":" in host and not (host.startswith("[") and host.endswith("]")))
           or any(c.isspace() for c in host))
    if bad:
        raise ConfigError(f"listen {listen!r} is not host:port with a port in 0..65535 "
                          "(IPv6 hosts in brackets)")
    return host, int(port)


def serve(settings: ServiceSettings, listen: str, tls: Any, registry: Registry,
          stop: threading.Event, max_workers: int) -> tuple[grpc.Server, int,
                                                            Callable[[str, bool], None]]:
    """Start the gRPC server (mTLS unless ``settings.insecure``) with the Aggregator and the
    standard health service; returns (server, port, ``set_health(service, serving)``).

    ``listen`` is checked first (:func:`parse_listen`); port sharing is off
    (``grpc.so_reuseport`` 0), so a port already in use is a ConfigError naming the address,
    never a second server silently sharing it. The pool has at least
    ``streams_per_identity`` threads per member plus :data:`HEALTH_WORKERS`, and the
    server sets no concurrent-call limit: the servicer bounds the streams per identity, so
    sessions can never occupy every thread and health checks are always served."""
    parse_listen(listen)
    members = len(settings.deployment.federation.members)
    workers = max(max_workers, settings.streams_per_identity * members + HEALTH_WORKERS)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers,
                                                    thread_name_prefix="grpc"),
                         options=[*wire.grpc_options(), ("grpc.so_reuseport", 0)])
    pb_grpc.add_AggregatorServicer_to_server(AggregatorService(settings, registry, stop),
                                             server)
    checker = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)

    def set_health(service: str, serving: bool) -> None:
        checker.set(service, health_pb2.HealthCheckResponse.SERVING if serving
                    else health_pb2.HealthCheckResponse.NOT_SERVING)

    try:
        if settings.insecure:
            port = server.add_insecure_port(listen)
        else:
            creds = grpc.ssl_server_credentials([(tls.key, tls.cert)],
                                                root_certificates=tls.ca,
                                                require_client_auth=True)
            port = server.add_secure_port(listen, creds)
    except RuntimeError:  # grpc: "Failed to bind to address ..."
        port = 0
    if port == 0:
        server.stop(0)
        raise ConfigError(f"cannot listen on {listen}: the address is in use or not "
                          "available here")
    server.start()
    set_health("", True)
    set_health(wire.SERVICE, True)
    return server, port, set_health
