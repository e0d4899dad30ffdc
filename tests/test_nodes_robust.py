"""The aggregator's network side under attack (issue 15, items 1, 3, 6, 7, 9): each test mounts
the attack against the real gRPC server (``serve`` + ``Registry`` + ``GrpcTransport``, as
``AggregatorNode`` builds them) with an enrolled hospital's real mutual-TLS client, on
127.0.0.1 with ephemeral ports; every wait is bounded.

* 1: an EvalReport without its ``global`` group, with an unknown group or metric, or with
  sums the pooling would divide by zero, is refused where it is decoded: that hospital's
  stream ends (INVALID_ARGUMENT), it is missing from the stage, the server keeps serving;
* 3: a Hello whose ``last_round`` is above the federation's rounds is refused;
* 6: a second session for a live hospital (a copied certificate) is refused
  (ALREADY_EXISTS); the real hospital node keeps its session, keeps answering, and, when the
  impostor got there first, keeps retrying and connects once the impostor is gone;
* 7: ``listen`` not host:port or with a port above 65535, and a port already in use, are one
  ConfigError line each naming the address;
* 9: an enrolled identity holding many idle streams (no Hello) starves neither health
  checks nor other hospitals' sessions, and its idle streams are closed at the Hello
  deadline.

:class:`Aggregator` and :class:`Stream` are also the soak test's (``test_nodes_soak.py``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedrx.errors import ConfigError
from fedrx.nodes import codec, wire
from fedrx.nodes.certs import Deployment, TlsMaterial, init_certs, load_tls
from fedrx.nodes.codec import CodecError, Limits
from fedrx.nodes.simulate import SimulationConfig
from fedrx.nodes.taskspec import make_spec
from fedrx.nodes.transport import GrpcTransport, Registry, ServiceSettings, serve
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2_grpc as pb_grpc
from fedrx.protocol.messages import EvalReport, EvalRequest, TrainAck, TrainRequest
from fedrx.protocol.task import model_hash

HS = ["h1", "h2", "h3"]
TIMEOUT = 20
ROUNDS = 5


# --------------------------------------------------------------- shared helpers


def tls_of(certs: Path, h: str) -> TlsMaterial:
    """Hospital ``h``'s TLS material as ``fedrx certs init`` wrote it."""
    d = certs / "hospitals" / h
    return TlsMaterial((certs / "ca.pem").read_bytes(), (d / "tls.pem").read_bytes(),
                       (d / "tls.key").read_bytes())


class Aggregator:
    """The aggregator's network side as ``AggregatorNode.run`` starts it (same pool size
    argument, 2n + 8), over the federation in ``certs``."""

    def __init__(self, certs: Path, *, digest: str = "digest-1", rounds: int = ROUNDS,
                 hello_timeout: float = 3.0, next_round: int = 1):
        self.certs = certs
        self.dep = Deployment.load(certs / "federation.json")
        self.tls = load_tls(certs / "ca.pem", certs / "aggregator.pem",
                            certs / "aggregator.key", self.dep, expect_hospital=None)
        self.digest = digest
        self.registry = Registry()
        self.stop = threading.Event()
        self.settings = ServiceSettings(self.dep, digest, "none", rounds,
                                        Limits(max_message_bytes=1 << 20),
                                        hello_timeout=hello_timeout,
                                        next_round=lambda: next_round)
        n = len(self.dep.federation.members)
        self.server, self.port, _ = serve(self.settings, "127.0.0.1:0", self.tls,
                                          self.registry, self.stop, 2 * n + 8)
        self.addr = f"127.0.0.1:{self.port}"
        self.transport = GrpcTransport(self.registry, {"*": 5.0}, self.stop)

    def close(self) -> None:
        self.stop.set()
        self.server.stop(0).wait(5)

    def channel(self, h: str) -> grpc.Channel:
        """A new connection with hospital ``h``'s certificate, as a hospital node dials."""
        tls = tls_of(self.certs, h)
        creds = grpc.ssl_channel_credentials(self.dep.aggregator_root, tls.key, tls.cert)
        return grpc.secure_channel(self.addr, creds, options=[
            *wire.grpc_options(), ("grpc.use_local_subchannel_pool", 1)])

    def hello(self, h: str = "h1", **kw) -> pb.HospitalFrame:
        fields = dict(protocol_version=1, hospital=h,
                      sign_public=self.dep.federation.members[h].sign_public,
                      task_digest=self.digest, protection="none")
        fields.update(kw)
        return pb.HospitalFrame(hello=pb.Hello(**fields))

    def health(self, h: str = "h2", timeout: float = 5.0) -> int:
        ch = self.channel(h)
        try:
            return health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=wire.SERVICE), timeout=timeout).status
        finally:
            ch.close()

    def wait_connected(self, h: str, timeout: float = TIMEOUT) -> None:
        end = time.monotonic() + timeout
        while h not in self.registry.connected():
            assert time.monotonic() < end, f"{h} never connected"
            time.sleep(0.01)


class Stream:
    """One hand-driven ``Session`` stream on ``channel`` (a new connection for ``h`` if
    none is given)."""

    def __init__(self, agg: Aggregator, h: str = "h1", *, channel: grpc.Channel | None = None,
                 timeout: float = TIMEOUT):
        self.own = channel is None
        self.ch = channel or agg.channel(h)
        self.q: queue.Queue = queue.Queue()

        def gen():
            while True:
                f = self.q.get()
                if f is None:
                    return
                yield f

        self.call = pb_grpc.AggregatorStub(self.ch).Session(gen(), timeout=timeout)

    def send(self, *frames) -> None:
        for f in frames:
            self.q.put(f)

    def recv(self) -> pb.AggregatorFrame:
        return next(self.call)

    def status(self) -> grpc.StatusCode:
        """Read to the end of the stream; its final status."""
        try:
            while True:
                next(self.call)
        except grpc.RpcError as exc:
            return exc.code()
        except StopIteration:
            return grpc.StatusCode.OK
        finally:
            self.end()

    def end(self) -> None:
        self.q.put(None)
        self.call.cancel()
        if self.own:
            self.ch.close()


def connect(agg: Aggregator, h: str = "h1", **kw) -> Stream:
    s = Stream(agg, h, **kw)
    s.send(agg.hello(h))
    assert s.recv().WhichOneof("body") == "welcome"
    agg.wait_connected(h)
    return s


def exchange_async(agg: Aggregator, stage: str, req, h: str = "h1",
                   rnd: int = 1) -> tuple[threading.Thread, dict]:
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(
        r=agg.transport.exchange(stage, rnd, {h: req})), daemon=True)
    t.start()
    return t, out


def train_request(rnd: int = 1, h: str = "h1") -> TrainRequest:
    w = np.zeros(4, np.float32)
    return TrainRequest(b"s" * 32, rnd, (h,), w, model_hash(w), "none", 5)


def still_serving(agg: Aggregator, h: str = "h3") -> None:
    """Health is SERVING and hospital ``h`` gets a session that answers a request."""
    assert agg.health() == health_pb2.HealthCheckResponse.SERVING
    s = connect(agg, h)
    t, out = exchange_async(agg, "train", train_request(2, h), h, rnd=2)
    req = s.recv()
    s.send(pb.HospitalFrame(header=req.header, message=codec.encode_message(
        TrainAck(2, h, "trained"))))
    t.join(TIMEOUT)
    assert out["r"][h].status == "trained"
    s.end()


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    init_certs(d, HS, task=make_spec(SimulationConfig(hidden=16, protection="none")))
    return d


@pytest.fixture()
def agg(certs):
    a = Aggregator(certs)
    yield a
    a.close()


# ------------------------------------------------------ 1: evaluation reports

GOOD = {"jaccard": 1.5, "prauc": 1.0, "f1": 1.2, "precision": 1.0, "recall": 1.0,
        "patients": 3, "visits": 5, "meds": 9, "ddi_pairs": 4, "ddi_hits": 1}
BAD_REPORTS = {
    "no-global": {"val": GOOD},
    "unknown-group": {"global": GOOD, "other": GOOD},
    "unknown-metric": {"global": {**GOOD, "bogus": 1.0}},
    "no-visits": {"global": {"patients": 2, "meds": 3}},          # meds / visits = 1 / 0
    "negative-count": {"global": {**GOOD, "patients": -1}},
    "real-count": {"global": {**GOOD, "visits": 5.5}},
    "mean-above-patients": {"global": {**GOOD, "jaccard": 4.0}},
    "hits-above-pairs": {"global": {**GOOD, "ddi_hits": 5}},
}


def _pool(reports: list[dict]) -> dict:
    """The aggregator's pooling of evaluation reports (the pinned task's model)."""
    from fedrx.medrx.task import MedicationTask

    spec = make_spec(SimulationConfig(hidden=16, protection="none"))
    return MedicationTask(spec.vocab(), None, model=spec.task_config().model,
                          hidden=16).pool_metrics(reports)


def test_reports_the_pooling_would_crash_on_are_crash_inputs():
    """What item 1 guards against: the pooling raises on these reports (so they must never
    reach it), and pools a good one. (A report with patients but no visits used to divide by
    zero too; MetricSums now reports avg_meds 0 there, and the wire still refuses it.)"""
    assert _pool([{"global": GOOD}])["jaccard"] == pytest.approx(0.5)
    for name in ("no-global", "unknown-metric"):
        with pytest.raises((KeyError, TypeError)):
            _pool([BAD_REPORTS[name]])
    assert _pool([BAD_REPORTS["no-visits"]])["avg_meds"] == 0.0


@pytest.mark.parametrize("name", sorted(BAD_REPORTS))
def test_bad_eval_report_is_refused_where_it_is_decoded(agg, name):
    """A hostile EvalReport in reply to a real EvalRequest ends that hospital's stream with
    INVALID_ARGUMENT; the hospital is missing from the evaluate stage (nothing reaches the
    pooling) and the server keeps serving."""
    env = codec.encode_message(EvalReport(1, "h1", BAD_REPORTS[name]))  # no validation
    s = connect(agg)
    w = np.zeros(4, np.float32)
    t, out = exchange_async(agg, "evaluate", EvalRequest(1, w, model_hash(w), "test", False))
    req = s.recv()
    assert req.header.stage == "evaluate"
    s.send(pb.HospitalFrame(header=req.header, message=env))
    assert s.status() == grpc.StatusCode.INVALID_ARGUMENT
    t.join(TIMEOUT)
    assert not t.is_alive() and out["r"] == {}
    still_serving(agg)


@pytest.mark.parametrize("name", sorted(BAD_REPORTS))
def test_bad_eval_report_fails_the_receivers_decoding(name):
    """What the receiving Inbox runs: the wire rules, then the receiver's checks."""
    env = codec.encode_message(EvalReport(1, "h1", BAD_REPORTS[name]))
    frame = pb.HospitalFrame(header=wire.header(b"", 1, "evaluate", 1), message=env)
    with pytest.raises(CodecError):
        wire.Inbox(Limits()).accept(frame)


def test_good_eval_report_still_arrives(agg):
    s = connect(agg)
    w = np.zeros(4, np.float32)
    t, out = exchange_async(agg, "evaluate", EvalRequest(1, w, model_hash(w), "test", False))
    req = s.recv()
    sums = {"global": GOOD, "val": GOOD, "personal": {**GOOD, "jaccard": 0.0}}
    s.send(pb.HospitalFrame(header=req.header, message=codec.encode_message(
        EvalReport(1, "h1", sums))))
    t.join(TIMEOUT)
    assert out["r"]["h1"].sums == sums
    s.end()


# ------------------------------------------------------ 3: Hello.last_round


def test_hello_last_round_is_bounded_by_the_federations_rounds(agg, caplog):
    for bad in (ROUNDS + 1, 2**62 - 1, 2**62):
        s = Stream(agg)
        s.send(agg.hello(last_round=bad))
        assert s.status() == grpc.StatusCode.INVALID_ARGUMENT, bad
    assert "h1" not in agg.registry.hello_rounds
    # within the rounds but ahead of the aggregator (a restart that lost its checkpoint):
    # accepted, and the skipped round numbers are logged
    with caplog.at_level(logging.WARNING, logger="fedrx.nodes.aggregator"):
        s = Stream(agg)
        s.send(agg.hello(last_round=ROUNDS))
        assert s.recv().WhichOneof("body") == "welcome"
        agg.wait_connected("h1")
    assert agg.registry.hello_rounds["h1"] == ROUNDS
    assert any("skipped" in r.getMessage() and r.fields["skipped"] == ROUNDS - 1
               for r in caplog.records)
    s.end()
    still_serving(agg)


# ------------------------------------------------ 6: one certificate, two connections


def test_second_session_for_a_live_hospital_is_refused(agg):
    real = connect(agg)
    held = agg.registry.get("h1")
    for _ in range(3):
        impostor = Stream(agg, timeout=5)
        impostor.send(agg.hello())
        assert impostor.status() == grpc.StatusCode.ALREADY_EXISTS
    assert agg.registry.get("h1") is held and held.open
    t, out = exchange_async(agg, "train", train_request())
    req = real.recv()
    real.send(pb.HospitalFrame(header=req.header, message=codec.encode_message(
        TrainAck(1, "h1", "trained"))))
    t.join(TIMEOUT)
    assert out["r"]["h1"].status == "trained"          # the real session kept working
    real.end()
    # once the real stream is gone, the identity is free again at once
    s = connect(agg)
    s.end()


def test_a_late_reply_on_a_closed_session_is_not_a_violation(agg):
    """A session closed with a request in flight (stream ending, server stopping): the
    reply still on its way is ignored as late, not answered with FAILED_PRECONDITION."""
    s = connect(agg)
    sess = agg.registry.get("h1")
    t, out = exchange_async(agg, "train", train_request())
    req = s.recv()
    sess.close("disconnected")
    t.join(TIMEOUT)
    assert out["r"] == {}
    sess.on_frame(pb.HospitalFrame(header=req.header, message=codec.encode_message(
        TrainAck(1, "h1", "trained"))))                  # no PeerViolation
    s.end()


def _node_setup(tmp_path: Path):
    from fedrx.nodes.launcher import DemoSpec, write_setup

    spec = DemoSpec(out=tmp_path / "fed", data="synthetic", hospitals=3, patients=150,
                    protection="none", hidden=16, rounds=ROUNDS)
    return write_setup(spec)


def _start_node(setup, agg: Aggregator, h: str = "h1"):
    from fedrx.nodes.config import load_node_config
    from fedrx.nodes.hospital import HospitalNode

    setup.address_file.write_text(agg.addr + "\n")
    cfg, data, privacy = load_node_config(setup.node_configs[h])
    cfg.backoff_initial, cfg.backoff_max, cfg.give_up_seconds = 0.2, 0.5, 600.0
    node = HospitalNode(cfg, data, privacy)
    errors: list = []

    def run():
        try:
            node.run()
        except Exception as exc:  # noqa: BLE001 - the test asserts there is none
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return node, t, errors


def _real_node_answers(agg: Aggregator, h: str = "h1") -> None:
    """The node answers a request over its session (a TrainRequest whose weights do not
    match their hash: the node refuses it with an Error frame)."""
    w = np.zeros(4, np.float32)
    req = TrainRequest(b"s" * 32, 1, (h,), w, "0" * 64, "none", 5)
    t, out = exchange_async(agg, "train", req, h)
    t.join(TIMEOUT)
    (st,) = agg.transport.take_stats()[-1:]
    assert out["r"] == {} and st.failures[h].startswith("refused"), st.failures


def test_impostor_with_a_copied_certificate_never_makes_the_real_hospital_quit(tmp_path):
    """A real HospitalNode and an impostor holding a copy of its certificate and key: the
    impostor's sessions are refused while the node is connected, the node keeps its
    session; when the impostor holds the identity first, the node keeps retrying (it does
    not quit) and connects once the impostor's stream is gone."""
    setup = _node_setup(tmp_path)
    agg = Aggregator(setup.out / "certs",
                     digest=Deployment.load(setup.out / "certs" / "federation.json")
                     .pinned_task("test").sha256)
    h = setup.hospitals[0]
    try:
        node, t, errors = _start_node(setup, agg, h)
        agg.wait_connected(h)
        held = agg.registry.get(h)
        for _ in range(5):
            impostor = Stream(agg, h, timeout=5)
            impostor.send(agg.hello(h))
            assert impostor.status() == grpc.StatusCode.ALREADY_EXISTS
        assert agg.registry.get(h) is held
        _real_node_answers(agg, h)
        node.stop.set()
        if node._call is not None:
            node._call.cancel()
        t.join(TIMEOUT)
        assert not t.is_alive() and not errors
        # the impostor first
        impostor = connect(agg, h)
        fake = agg.registry.get(h)
        node, t, errors = _start_node(setup, agg, h)
        time.sleep(3.0)                                  # several refused attempts
        assert t.is_alive() and not errors
        assert agg.registry.get(h) is fake
        impostor.end()
        end = time.monotonic() + TIMEOUT
        while agg.registry.get(h) in (None, fake):
            assert time.monotonic() < end, "the real node never connected"
            time.sleep(0.05)
        _real_node_answers(agg, h)
        assert t.is_alive() and not errors
        node.stop.set()
        if node._call is not None:
            node._call.cancel()
        t.join(TIMEOUT)
        assert not errors
    finally:
        agg.close()


# ------------------------------------------------------------ 7: listen address


@pytest.mark.parametrize("listen", ["127.0.0.1:99999", "127.0.0.1", "localhost:http",
                                    ":50051", "::1:50051", "127.0.0.1:-1"])
def test_listen_that_is_not_host_port_is_a_config_error(certs, listen):
    agg = Aggregator(certs)
    try:
        with pytest.raises(ConfigError, match="not host:port") as ei:
            serve(agg.settings, listen, agg.tls, Registry(), threading.Event(), 4)
        assert listen in str(ei.value) and "\n" not in str(ei.value)
    finally:
        agg.close()


def test_a_second_aggregator_cannot_bind_a_port_in_use(certs):
    first = Aggregator(certs)
    try:
        listen = f"127.0.0.1:{first.port}"
        with pytest.raises(ConfigError, match="cannot listen on") as ei:
            serve(first.settings, listen, first.tls, Registry(), threading.Event(), 4)
        assert listen in str(ei.value) and "\n" not in str(ei.value)
        still_serving(first)                             # the first one is unaffected
    finally:
        first.close()


# --------------------------------------------------------------- 9: idle streams


def test_idle_streams_starve_neither_health_nor_sessions(certs):
    """h1's certificate opens 20 streams and never sends a Hello (the issue: 14 were enough
    to get health checks and new sessions RESOURCE_EXHAUSTED at 2n+6 concurrent calls)."""
    agg = Aggregator(certs, hello_timeout=2.0)
    try:
        ch = agg.channel("h1")
        idle = [Stream(agg, channel=ch) for _ in range(20)]
        time.sleep(0.5)
        t0 = time.monotonic()
        assert agg.health(timeout=3.0) == health_pb2.HealthCheckResponse.SERVING
        s = connect(agg, "h2", timeout=10)
        assert time.monotonic() - t0 < 3.0
        codes = [x.status() for x in idle]
        refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
        timed_out = codes.count(grpc.StatusCode.DEADLINE_EXCEEDED)
        assert refused + timed_out == 20 and timed_out <= agg.settings.streams_per_identity
        assert time.monotonic() - t0 < agg.settings.hello_timeout + 5
        ch.close()
        s.end()
        still_serving(agg)
    finally:
        agg.close()
