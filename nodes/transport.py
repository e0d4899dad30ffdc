"""The aggregator's network side: hospital sessions, the gRPC servicer, :class:`GrpcTransport`.

Each hospital dials out and holds ONE ``Session`` stream (mutual TLS). The servicer
authenticates it (the client certificate must be the one pinned for a federation member,
and the Hello must name that member, its pinned signing key, the same task digest and
protection), then the stream carries requests down and replies up. :class:`GrpcTransport`
implements :class:`~fedrx.protocol.transport.Transport` over these sessions so the SAME
:class:`~fedrx.protocol.aggregator.RoundMachine` drives a round; a hospital that is not
connected, refuses, disconnects or misses the stage deadline is missing from the replies.

Hostile input on a stream (malformed or oversized frames, a reply to a request never sent
or already answered, wrong round/stage, a second Hello, an unknown peer) ends THAT stream
with a gRPC status (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, FAILED_PRECONDITION,
PERMISSION_DENIED, UNAUTHENTICATED) and a log line; the server keeps serving the others.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from fedrx.nodes import codec, wire
from fedrx.nodes.certs import Deployment
from fedrx.nodes.codec import CodecError, Limits, OversizeError
from fedrx.nodes.config import event
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2_grpc as pb_grpc
from fedrx.protocol.messages import EVALUATE, TRAIN
from fedrx.protocol.transport import StageStats, Transport

log = logging.getLogger("fedrx.nodes.aggregator")

_END = object()


class Hostile(Exception):
    """A peer broke the protocol; ``code`` is the gRPC status its stream ends with."""

    def __init__(self, code: grpc.StatusCode, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _hostile_from(exc: CodecError) -> Hostile:
    code = grpc.StatusCode.RESOURCE_EXHAUSTED if isinstance(exc, OversizeError) \
        else grpc.StatusCode.INVALID_ARGUMENT
    return Hostile(code, str(exc))


@dataclass
class Pending:
    """One request in flight to one hospital."""

    seq: int
    stage: str
    round: int
    sent_bytes: int = 0
    received_bytes: int = 0
    reply: Any = None
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)


class HospitalSession:
    """One authenticated hospital stream. Thread-safe; frames go out via ``outbox``."""

    def __init__(self, hospital: str, peer: str, limits: Limits):
        self.hospital = hospital
        self.peer = peer
        self.outbox: queue.Queue[Any] = queue.Queue()
        self.inbox = wire.Inbox(limits)
        self.lock = threading.Lock()
        self.seq = 0
        self.pending: dict[int, Pending] = {}
        self.expired: set[int] = set()
        self.answered: set[int] = set()
        self.open = True
        self.last_round = 0

    def request(self, session_id: bytes, stage: str, rnd: int, env: pb.Envelope,
                data: bytes) -> Pending:
        with self.lock:
            self.seq += 1
            p = Pending(self.seq, stage, rnd)
            if not self.open:
                p.error = "disconnected"
                p.done.set()
                return p
            self.pending[p.seq] = p
            for f in wire.frames(pb.AggregatorFrame, wire.header(session_id, rnd, stage, p.seq),
                                 env, data):
                p.sent_bytes += f.ByteSize()
                self.outbox.put(f)
        return p

    def expire(self, p: Pending) -> None:
        with self.lock:
            if self.pending.pop(p.seq, None) is not None:
                self.expired.add(p.seq)

    def notify(self, frame: Any) -> None:
        if self.open:
            self.outbox.put(frame)

    def on_frame(self, frame: pb.HospitalFrame) -> None:
        """Handle one frame after Hello; raises Hostile on protocol violations."""
        body = frame.WhichOneof("body")
        hdr = frame.header
        if body == "hello":
            raise Hostile(grpc.StatusCode.FAILED_PRECONDITION, "second Hello on one session")
        with self.lock:
            p = self.pending.get(hdr.seq)
            late = hdr.seq in self.expired
            replayed = hdr.seq in self.answered
        if p is None:
            if replayed:
                raise Hostile(grpc.StatusCode.FAILED_PRECONDITION,
                              f"second reply to request {hdr.seq} (replay)")
            if late:
                if body == "error" or frame.chunk.last or body == "message":
                    event(log, logging.INFO, "late reply ignored", hospital=self.hospital,
                          seq=hdr.seq, stage=hdr.stage)
                return
            raise Hostile(grpc.StatusCode.FAILED_PRECONDITION,
                          f"reply to request {hdr.seq} that is not outstanding (replay?)")
        if hdr.round != p.round or hdr.stage != p.stage:
            raise Hostile(grpc.StatusCode.FAILED_PRECONDITION,
                          f"reply header (round {hdr.round}, stage {hdr.stage[:32]!r}) does "
                          f"not match request {p.seq} (round {p.round}, stage {p.stage})")
        if body == "error":
            self._resolve(p, None, f"{frame.error.code}: {frame.error.reason[:300]}",
                          frame.ByteSize())
            return
        try:
            got = self.inbox.accept(frame)
        except CodecError as exc:
            raise _hostile_from(exc) from None
        if got is None:
            return
        rnd = getattr(got.message, "round", p.round)
        if rnd != p.round:
            raise Hostile(grpc.StatusCode.FAILED_PRECONDITION,
                          f"reply for round {rnd} to a request of round {p.round}")
        self._resolve(p, got.message, "", got.wire_bytes)

    def _resolve(self, p: Pending, reply: Any, error: str, nbytes: int) -> None:
        with self.lock:
            self.pending.pop(p.seq, None)
            self.answered.add(p.seq)
        p.reply, p.error, p.received_bytes = reply, error, nbytes
        p.done.set()

    def close(self, why: str) -> None:
        with self.lock:
            self.open = False
            pend, self.pending = list(self.pending.values()), {}
        for p in pend:
            p.error = why
            p.done.set()
        self.outbox.put(_END)


class Registry:
    """Connected hospitals by id (a reconnect replaces the older session)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.sessions: dict[str, HospitalSession] = {}
        self.hello_rounds: dict[str, int] = {}

    def attach(self, s: HospitalSession) -> None:
        with self.cond:
            old = self.sessions.get(s.hospital)
            self.sessions[s.hospital] = s
            self.hello_rounds[s.hospital] = max(self.hello_rounds.get(s.hospital, 0),
                                                s.last_round)
            self.cond.notify_all()
        if old is not None:
            old.close("superseded by a new session")

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
    """What the servicer checks a Hello against."""

    deployment: Deployment
    task_digest: str
    protection: str
    rounds: int
    limits: Limits
    insecure: bool = False
    hello_timeout: float = 10.0
    next_round: Callable[[], int] = lambda: 1


class AggregatorService(pb_grpc.AggregatorServicer):
    """``fedrx.v1.Aggregator/Session``: authenticate, then pump frames both ways."""

    def __init__(self, settings: ServiceSettings, registry: Registry, stop: threading.Event):
        self.s = settings
        self.registry = registry
        self.stop = stop

    def _reject(self, context: grpc.ServicerContext, code: grpc.StatusCode, reason: str,
                **fields: Any) -> None:
        event(log, logging.WARNING, "session rejected", peer=context.peer(),
              code=code.name, reason=reason, **fields)
        context.abort(code, reason)

    def _cert_hospital(self, context: grpc.ServicerContext) -> str | None:
        if self.s.insecure:
            return None
        pems = context.auth_context().get("x509_pem_cert") or []
        if not pems:
            self._reject(context, grpc.StatusCode.UNAUTHENTICATED, "no client certificate")
        h = self.s.deployment.hospital_for_cert(pems[0])
        if h is None:
            self._reject(context, grpc.StatusCode.PERMISSION_DENIED,
                         "client certificate is not pinned in the federation")
        return h

    def _check_hello(self, frame: pb.HospitalFrame, cert_h: str | None,
                     context: grpc.ServicerContext) -> pb.Hello:
        if frame.WhichOneof("body") != "hello":
            self._reject(context, grpc.StatusCode.FAILED_PRECONDITION,
                         "first frame must be Hello")
        hello = frame.hello
        fed = self.s.deployment.federation
        h = hello.hospital
        if hello.protocol_version != wire.PROTOCOL_VERSION:
            self._reject(context, grpc.StatusCode.FAILED_PRECONDITION,
                         f"protocol version {hello.protocol_version} (expected "
                         f"{wire.PROTOCOL_VERSION})")
        if h not in fed.members or (cert_h is not None and h != cert_h):
            self._reject(context, grpc.StatusCode.PERMISSION_DENIED,
                         "Hello names a hospital other than the certificate's", cert=cert_h)
        if hello.sign_public != fed.members[h].sign_public:
            self._reject(context, grpc.StatusCode.PERMISSION_DENIED,
                         "signing key is not the pinned one", hospital=h)
        if hello.task_digest != self.s.task_digest:
            self._reject(context, grpc.StatusCode.FAILED_PRECONDITION,
                         "task configuration differs from the aggregator's", hospital=h)
        if hello.protection != self.s.protection:
            self._reject(context, grpc.StatusCode.FAILED_PRECONDITION,
                         f"hospital requires protection {hello.protection[:16]!r}, the "
                         f"federation runs {self.s.protection!r}", hospital=h)
        return hello

    def Session(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        cert_h = self._cert_hospital(context)
        first_q: queue.Queue[Any] = queue.Queue()
        go = threading.Event()
        holder: list[HospitalSession] = []
        failure: list[Hostile] = []

        def reader() -> None:
            sess = None
            try:
                first_q.put(next(request_iterator, None))
                go.wait()
                if not holder:
                    return
                sess = holder[0]
                for frame in request_iterator:
                    sess.on_frame(frame)
            except Hostile as exc:
                failure.append(exc)
            except Exception as exc:  # noqa: BLE001 - stream torn down (cancel, reset)
                event(log, logging.DEBUG, "stream ended", why=type(exc).__name__)
                first_q.put(None)
            finally:
                if sess is not None:
                    sess.close("disconnected")

        t = threading.Thread(target=reader, name="rx-session", daemon=True)
        t.start()
        try:
            first = first_q.get(timeout=self.s.hello_timeout)
        except queue.Empty:
            first = None
            go.set()
            self._reject(context, grpc.StatusCode.DEADLINE_EXCEEDED, "no Hello in time")
        if first is None:
            go.set()
            return
        try:
            hello = self._check_hello(first, cert_h, context)
        except BaseException:
            go.set()  # the reader sees no session and ends
            raise
        sess = HospitalSession(hello.hospital, context.peer(), self.s.limits)
        sess.last_round = int(hello.last_round)
        holder.append(sess)
        go.set()
        self.registry.attach(sess)
        event(log, logging.INFO, "hospital connected", hospital=sess.hospital,
              peer=context.peer(), last_round=sess.last_round)
        yield pb.AggregatorFrame(welcome=pb.Welcome(
            protocol_version=wire.PROTOCOL_VERSION, federation_id=self.s.deployment.federation_id,
            protection=self.s.protection, next_round=self.s.next_round(),
            rounds=self.s.rounds))
        try:
            while True:
                try:
                    item = sess.outbox.get(timeout=0.5)
                except queue.Empty:
                    if not context.is_active() or self.stop.is_set() and not sess.open:
                        break
                    continue
                if item is _END:
                    break
                yield item
        finally:
            sess.close("disconnected")
            self.registry.detach(sess)
        if failure:
            exc = failure[0]
            self._reject(context, exc.code, exc.reason, hospital=sess.hospital)
        event(log, logging.INFO, "hospital disconnected", hospital=sess.hospital)


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

    def exchange(self, stage: str, rnd: int, requests: Mapping[str, Any]) -> dict[str, Any]:
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
        for _sess, p in pend.values():
            while not p.done.wait(0.1):
                if time.monotonic() >= end or self.stop.is_set():
                    break
        replies: dict[str, Any] = {}
        for h, (sess, p) in pend.items():
            if not p.done.is_set():
                sess.expire(p)
                st.failures[h] = "deadline exceeded" if not self.stop.is_set() \
                    else "aggregator shutting down"
            elif p.error:
                st.failures[h] = p.error
                if p.error != "disconnected":
                    event(log, logging.WARNING, "hospital refused", hospital=h, stage=stage,
                          round=rnd, reason=p.error)
            else:
                replies[h] = p.reply
                st.received_bytes += p.received_bytes
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


# ---------------------------------------------------------------------------- health


def add_health(server: grpc.Server) -> Callable[[str, bool], None]:
    """Register grpc.health.v1.Health; returns ``set_status(service, serving)``.

    Uses grpcio-health-checking when installed, else the vendored proto
    (``fedrx.proto.gen.grpc.health.v1``); never both in one process.
    """
    try:  # pragma: no cover - depends on an optional package
        from grpc_health.v1 import health_pb2 as hpb
        from grpc_health.v1 import health_pb2_grpc as hpb_grpc
    except ImportError:
        from fedrx.proto.gen.grpc.health.v1 import health_pb2 as hpb
        from fedrx.proto.gen.grpc.health.v1 import health_pb2_grpc as hpb_grpc

    status: dict[str, int] = {}
    cond = threading.Condition()

    class Health(hpb_grpc.HealthServicer):
        def Check(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
            with cond:
                st = status.get(request.service)
            if st is None:
                context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
            return hpb.HealthCheckResponse(status=st)

        def Watch(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
            last = None
            while context.is_active():
                with cond:
                    st = status.get(request.service,
                                    hpb.HealthCheckResponse.SERVICE_UNKNOWN)
                    if st == last:
                        cond.wait(0.5)
                        continue
                last = st
                yield hpb.HealthCheckResponse(status=st)

    hpb_grpc.add_HealthServicer_to_server(Health(), server)

    def set_status(service: str, serving: bool) -> None:
        with cond:
            status[service] = (hpb.HealthCheckResponse.SERVING if serving
                               else hpb.HealthCheckResponse.NOT_SERVING)
            cond.notify_all()

    return set_status


def serve(settings: ServiceSettings, listen: str, tls: Any, registry: Registry,
          stop: threading.Event, max_workers: int) -> tuple[grpc.Server, int,
                                                            Callable[[str, bool], None]]:
    """Start the gRPC server (mTLS unless ``settings.insecure``); returns (server, port,
    set_health)."""
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                    thread_name_prefix="grpc"),
                         options=wire.grpc_options(), maximum_concurrent_rpcs=max_workers - 2)
    pb_grpc.add_AggregatorServicer_to_server(AggregatorService(settings, registry, stop),
                                             server)
    set_health = add_health(server)
    if settings.insecure:
        port = server.add_insecure_port(listen)
    else:
        creds = grpc.ssl_server_credentials([(tls.key, tls.cert)], root_certificates=tls.ca,
                                            require_client_auth=True)
        port = server.add_secure_port(listen, creds)
    if port == 0:
        from fedrx.errors import ConfigError

        raise ConfigError(f"cannot listen on {listen}")
    server.start()
    set_health("", True)
    set_health(wire.SERVICE, True)
    return server, port, set_health


def encode_size(msg: Any) -> int:
    """Serialised Envelope size of ``msg`` (bytes)."""
    return len(codec.to_bytes(msg))
