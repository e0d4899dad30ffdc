"""``fedrx.v1.Aggregator/Session``: authenticate a hospital's stream, then pump frames.

The servicer authenticates each stream (the client certificate must be the one pinned for a
federation member, and the Hello must name that member, its pinned signing key, the same
task digest and protection, and a ``last_round`` within the federation's rounds), registers
a :class:`~fedrx.nodes.session.HospitalSession` in the
:class:`~fedrx.nodes.transport.Registry`, then carries requests down and replies up. A
refused Hello or a :class:`~fedrx.nodes.session.PeerViolation` ends THAT stream with a gRPC
status (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, PERMISSION_DENIED,
UNAUTHENTICATED, DEADLINE_EXCEEDED, ALREADY_EXISTS) and a log line; the server keeps
serving the others.

Resource bounds (so idle or hostile streams cannot starve health checks or sessions): a
stream must send its Hello within ``hello_timeout`` seconds; one identity (a pinned
certificate; with ``insecure`` all streams together, ``streams_per_identity`` per member)
holds at most ``streams_per_identity`` streams at once, a further one is refused at once.

One certificate on two connections: the FIRST live session of a hospital keeps the
identity. A second Hello for a hospital whose session is still live is refused with
ALREADY_EXISTS and a WARNING naming the hospital and both peers (a copied certificate, or
a reconnect racing its old stream's teardown: the registry waits a moment for a dead
stream to go, then the hospital retries). An impostor therefore can never push the real
hospital off its session, and nothing an impostor's stream does reaches the real
hospital's stream: the worst it can do, holding the identity first, is keep the real
hospital retrying, with the operator warned at every attempt. A session that ends (for
any reason) resolves its pending requests at once; a reply that was still in flight is
then ignored as late, never turned into a violation on a later session.

A Hello whose ``last_round`` is above the federation's last round is refused
(INVALID_ARGUMENT). One above the round the aggregator is at is accepted (a hospital that
saw rounds a restarted aggregator without its checkpoint does not know of; its rounds are
then skipped, since hospitals refuse any round not newer than one they saw) and logged as
a WARNING with the round numbers skipped.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

import grpc

from fedrx.nodes import wire
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
        self._streams_lock = threading.Lock()
        self._streams: dict[str, int] = {}
        """Open streams by identity (hospital, or ``""`` for all plaintext streams)."""

    def _stream_cap(self, key: str) -> int:
        n = self.s.streams_per_identity
        return n * len(self.s.deployment.federation.members) if key == "" else n

    def _enter(self, key: str) -> bool:
        with self._streams_lock:
            if self._streams.get(key, 0) >= self._stream_cap(key):
                return False
            self._streams[key] = self._streams.get(key, 0) + 1
            return True

    def _leave(self, key: str) -> None:
        with self._streams_lock:
            left = self._streams.get(key, 0) - 1
            if left > 0:
                self._streams[key] = left
            else:
                self._streams.pop(key, None)

    def open_streams(self) -> dict[str, int]:
        """Open streams by identity (a copy; for operators and tests)."""
        with self._streams_lock:
            return dict(self._streams)

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
        if hello.last_round > self.s.rounds:  # 0 (no round yet) is allowed
            self._reject(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"last_round {hello.last_round} out of range (the federation has "
                         f"{self.s.rounds} rounds)", hospital=h)
        ahead = int(hello.last_round) - self.s.next_round()
        if ahead > 0:
            event(log, logging.WARNING, "hospital saw rounds this aggregator did not start; "
                  "their numbers are skipped", hospital=h, last_round=hello.last_round,
                  skipped=ahead)
        return hello

    def Session(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        cert_h = self._cert_hospital(context)
        key = cert_h or ""
        if not self._enter(key):
            self._reject(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         "too many streams open for this identity", hospital=cert_h)
        try:
            yield from self._session(request_iterator, context, cert_h)
        finally:
            self._leave(key)

    def _first_frame(self, request_iterator: Any, context: grpc.ServicerContext,
                     holder: list[HospitalSession], failure: list[PeerViolation],
                     go: threading.Event) -> Any:
        """Start the stream's reader thread and return its first frame (None if the stream
        ended first); DEADLINE_EXCEEDED when none came within ``hello_timeout``. Once ``go``
        is set the reader feeds later frames to ``holder[0]``, or ends if it is empty."""
        first_q: queue.Queue[Any] = queue.Queue()

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
                failure.append(exc.with_traceback(None))
            except Exception as exc:  # noqa: BLE001 - stream torn down (cancel, reset)
                # grpc keeps the RpcError it raised in the call's state: its traceback
                # (this frame, the request iterator, the call) would be a reference cycle
                # holding the whole stream until a full garbage collection
                exc.__traceback__ = None
                event(log, logging.DEBUG, "stream ended", why=type(exc).__name__)
                first_q.put(None)
            finally:
                if sess is not None:
                    sess.close("disconnected")

        # a PeerViolation is stored without its traceback for the same reason
        threading.Thread(target=reader, name="rx-session", daemon=True).start()
        try:
            return first_q.get(timeout=self.s.hello_timeout)
        except queue.Empty:
            self._reject(context, grpc.StatusCode.DEADLINE_EXCEEDED, "no Hello in time")

    def _session(self, request_iterator: Any, context: grpc.ServicerContext,
                 cert_h: str | None) -> Any:
        holder: list[HospitalSession] = []
        failure: list[PeerViolation] = []
        go = threading.Event()
        try:
            first = self._first_frame(request_iterator, context, holder, failure, go)
            if first is None:
                return
            hello = self._check_hello(first, cert_h, context)
            sess = HospitalSession(hello.hospital, self.s.limits, alive=context.is_active)
            sess.last_round = int(hello.last_round)
            if not self.registry.attach(sess):
                self._reject(context, grpc.StatusCode.ALREADY_EXISTS,
                             "another session of this hospital is live (a copied "
                             "certificate?); retry later", hospital=sess.hospital)
            holder.append(sess)
        finally:
            go.set()  # the reader feeds the session, or sees none and ends
        event(log, logging.INFO, "hospital connected", hospital=sess.hospital,
              peer=context.peer(), last_round=sess.last_round)
        try:
            yield pb.AggregatorFrame(welcome=pb.Welcome(
                protocol_version=wire.PROTOCOL_VERSION,
                federation_id=self.s.deployment.federation_id, protection=self.s.protection,
                next_round=self.s.next_round(), rounds=self.s.rounds))
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
