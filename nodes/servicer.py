"""``fedrx.v1.Aggregator/Session``: authenticate a hospital's stream, then pump frames.

The servicer authenticates each stream (the client certificate must be the one pinned for a
federation member, and the Hello must name that member, its pinned signing key, the same
task digest and protection), registers a :class:`~fedrx.nodes.session.HospitalSession` in
the :class:`~fedrx.nodes.transport.Registry`, then carries requests down and replies up. A
refused Hello or a :class:`~fedrx.nodes.session.PeerViolation` ends THAT stream with a gRPC
status (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, PERMISSION_DENIED,
UNAUTHENTICATED, DEADLINE_EXCEEDED) and a log line; the server keeps serving the others.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

import grpc

from fedrx.nodes import wire
from fedrx.nodes.codec.fields import ROUND
from fedrx.nodes.config import event
from fedrx.nodes.session import END, HospitalSession, PeerViolation
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # transport.py builds the server around this servicer
    from fedrx.nodes.transport import Registry, ServiceSettings

log = logging.getLogger("fedrx.nodes.aggregator")


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
        if hello.last_round > ROUND.hi:  # 0 (no round yet) is allowed
            self._reject(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"last_round {hello.last_round} out of range", hospital=h)
        return hello

    def Session(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        cert_h = self._cert_hospital(context)
        first_q: queue.Queue[Any] = queue.Queue()
        go = threading.Event()
        holder: list[HospitalSession] = []
        failure: list[PeerViolation] = []

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
            except PeerViolation as exc:
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
        sess = HospitalSession(hello.hospital, self.s.limits)
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
                if item is END:
                    break
                yield item
        finally:
            sess.close("disconnected")
            self.registry.detach(sess)
        if failure:
            exc = failure[0]
            self._reject(context, exc.code, exc.reason, hospital=sess.hospital)
        event(log, logging.INFO, "hospital disconnected", hospital=sess.hospital)
