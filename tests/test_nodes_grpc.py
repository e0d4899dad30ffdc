"""gRPC deployment, fast cases (one process, threads, 127.0.0.1, ephemeral ports):

* a full federation (aggregator + 3 hospital nodes in threads, real mutual TLS) whose final
  model equals the in-process simulation's bit for bit (protection none);
* hostile input at the aggregator: unknown/unpinned peers, foreign CA, plaintext, no Hello,
  wrong hospital, wrong task, oversized frame, wrong round, replay, malformed reply; each
  ends that stream with a gRPC status and the server keeps serving (health + a good session);
* hostile input at a hospital node (replayed seq, wrong round, malformed chunk, replayed
  round) -> Error frames, node keeps serving;
* ``certs init`` files and modes; plaintext refused without --insecure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import stat
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from inthread import inthread_nodes

from fedrx.cli.main import main
from fedrx.errors import ConfigError
from fedrx.nodes import codec, wire
from fedrx.nodes.certs import Deployment, TlsMaterial, init_certs, load_tls
from fedrx.nodes.codec import Limits
from fedrx.nodes.config import load_aggregator_config, load_node_config
from fedrx.nodes.launcher import DemoSpec, simulation_twin, write_setup
from fedrx.nodes.simulate import SimulationConfig
from fedrx.nodes.taskspec import make_spec
from fedrx.nodes.transport import GrpcTransport, Registry, ServiceSettings, serve
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2_grpc as pb_grpc
from fedrx.protocol.messages import TrainAck, TrainRequest
from fedrx.protocol.task import model_hash

HS = ["h1", "h2", "h3"]
TIMEOUT = 20


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    init_certs(d, HS, task=make_spec(SimulationConfig(hidden=16, protection="none")))
    return d


def _tls(certs: Path, h: str) -> TlsMaterial:
    d = certs / "hospitals" / h
    return TlsMaterial((certs / "ca.pem").read_bytes(), (d / "tls.pem").read_bytes(),
                       (d / "tls.key").read_bytes())


# ------------------------------------------------------------------- full federation


def _run_inthread(spec: DemoSpec) -> tuple[dict, object, list]:
    """Aggregator + one HospitalNode per hospital in threads, real mutual TLS on 127.0.0.1;
    returns (aggregator results doc, the aggregator's task settings on the same exports, i.e.
    its in-process twin, nodes). Every wait is bounded."""
    from fedrx.nodes.aggregator import AggregatorNode

    setup = write_setup(spec, HS)
    agg_cfg = load_aggregator_config(setup.aggregator_config)
    agg_cfg.wait_seconds = 60
    nodes = inthread_nodes(setup.node_configs, HS, give_up_seconds=60)
    agg = AggregatorNode(agg_cfg)
    # the aggregator's task (pinned; no DP policy) on the same exports: its in-process twin
    twin = simulation_twin(setup, spec, spec.out / "twin")
    task = dataclasses.replace(agg.task_cfg, data=twin.data, mappings=twin.mappings,
                               min_patients=twin.min_patients)
    result: dict = {}
    errors: list = []

    def run_agg():
        try:
            result["doc"] = agg.run()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run_agg, daemon=True)]
    threads += [threading.Thread(target=n.run, daemon=True) for n in nodes]
    for t in threads:
        t.start()
    threads[0].join(180)
    for n in nodes:
        n.stop.set()
    for t in threads[1:]:
        t.join(15)
    assert not errors, errors
    assert not threads[0].is_alive()
    return result["doc"], task, nodes


def _simulate_same(task, out: Path) -> tuple[dict, np.ndarray]:
    from fedrx.nodes.simulate import SimulationConfig, run_simulation

    sim_cfg = SimulationConfig(**{k: v for k, v in vars(task).items()})  # the same exports
    sim_cfg.out = str(out)
    sim = run_simulation(sim_cfg)
    return sim, np.load(out / "global_model.npy", allow_pickle=False)


def test_inthread_federation_equals_inprocess_simulation(tmp_path, mimic_demo):
    spec = DemoSpec(out=tmp_path / "grpc", protection="none", rounds=2, hidden=16)
    doc, task, _ = _run_inthread(spec)
    assert [r["status"] for r in doc["rounds"]] == ["completed", "completed"]
    assert all(r["contributors"] == HS for r in doc["rounds"])
    wire_bytes = sum(s["sent_bytes"] + s["received_bytes"] for s in doc["rounds"][0]["stages"])
    assert wire_bytes > 3 * 2 * 13_000 * 4  # the model went down and the update came up
    # the same federation in one process
    sim, w_sim = _simulate_same(task, tmp_path / "sim")
    w_grpc = np.load(tmp_path / "grpc" / "aggregator" / "global_model.npy", allow_pickle=False)
    assert np.array_equal(w_grpc, w_sim)
    assert doc["final"]["model_hash"] == sim["final"]["model_hash"]
    assert doc["final"]["global"] == sim["final"]["global"]
    # one runner: every round record is the same, field by field (timing and per-stage
    # byte counts aside: the in-process transport estimates bytes, gRPC counts frames)
    same = [k for k in doc["rounds"][0] if k not in ("seconds", "stages")]
    assert len(same) >= 17
    for rg, rs in zip(doc["rounds"], sim["rounds"], strict=True):
        assert {k: rg[k] for k in same} == {k: rs[k] for k in same}
        assert [s["stage"] for s in rg["stages"]] == [s["stage"] for s in rs["stages"]]
    # the same validation-selected model, in the results, on disk and in the checkpoint
    assert doc["selected"] == sim["selected"] and doc["selected"] is not None
    w_sel = np.load(tmp_path / "grpc" / "aggregator" / "selected_model.npy", allow_pickle=False)
    assert np.array_equal(w_sel, np.load(tmp_path / "sim" / "selected_model.npy",
                                         allow_pickle=False))
    from fedrx.errors import ConfigError
    from fedrx.nodes.checkpoint import SELECTED_BLOB, restore_selected
    from fedrx.protocol.results import select_round

    ckpt = tmp_path / "grpc" / "aggregator" / "checkpoint"
    assert np.array_equal(restore_selected(ckpt, select_round(doc["rounds"])), w_sel)
    blob = ckpt / "round-000002" / SELECTED_BLOB
    blob.write_bytes(blob.read_bytes()[:-4] + b"\x00\x00\x80\x3f")  # tampered weights
    with pytest.raises(ConfigError, match="selected model"):
        restore_selected(ckpt, select_round(doc["rounds"]))
    # receipts persisted at every node; checkpoint present
    for h in HS:
        assert '"round": 2' in (tmp_path / "grpc" / "nodes" / h / "state.json").read_text()
    assert (tmp_path / "grpc" / "aggregator" / "checkpoint" / "LATEST").read_text().strip() \
        == "round-000002"


def test_inthread_ckks_federation_matches_inprocess_within_ckks_bound(tmp_path, mimic_demo):
    """protection ckks over real mutual TLS: round 1 creates the key epoch at a key holder
    hospital, the aggregator relays the sealed packages (which it cannot open) with the
    upload requests, uploads are summed under encryption and two hospitals decrypt.
    hidden 64: ~13 ciphertexts, ~1.7 MB per upload, sent as 1 MiB chunks (no frame above
    the 4 MiB limit). Bound (one round, fedavg, server_lr 1): each run releases the sum
    T = [sum n_i d_i, sum n_i] within e = ReleasePolicy.error_bound per slot
    (protection_stats["error_bound"]: CKKS error + 8 sigma flooding + half a grid step), so
    each run's average T[:-1]/T[-1] is within e * (1 + |avg|) / (n - e) of the exact one,
    and the two models differ by at most twice that (+ float32 rounding of both)."""
    spec = DemoSpec(out=tmp_path / "grpc", protection="ckks", rounds=1, hidden=64)
    doc, task, _ = _run_inthread(spec)
    r = doc["rounds"][0]
    up = next(s for s in r["stages"] if s["stage"] == "upload")
    assert up["received_bytes"] / 3 > wire.CHUNK_BYTES  # each upload went as several chunks
    assert r["status"] == "completed", r["reason"]
    assert r["contributors"] == HS
    stats = r["protection_stats"]
    assert stats["epoch"] == 1 and len(stats["decryptors"]) == 2 and not stats["rejected"]
    assert {s["stage"] for s in r["stages"]} >= {"keys", "upload", "decrypt"}
    assert (tmp_path / "grpc" / "aggregator" / "checkpoint" / "round-000001"
            / "protection-ckks_keyring.json").is_file()  # the key epoch, public data only
    _, w_sim = _simulate_same(task, tmp_path / "sim")
    w_grpc = np.load(tmp_path / "grpc" / "aggregator" / "global_model.npy", allow_pickle=False)
    e, n = stats["error_bound"], r["examples"]
    bound = 2 * e * (1 + r["update_norm"]) / (n - e) \
        + 2 * np.spacing(np.abs(w_sim).astype(np.float32))
    diff = np.abs(w_grpc.astype(np.float64) - w_sim.astype(np.float64))
    assert np.all(diff <= bound), float(np.max(diff - bound))
    assert 0 < float(np.max(diff))  # really went through CKKS (flooding noise)


def test_inthread_dp_ledgers_audit_and_match_receipts(tmp_path, mimic_demo):
    """DP on (each hospital's own policy in ITS config; none in the aggregator's): every
    node writes a signed ledger in its own folder with its real long-term identity, which
    passes the independent audit anchored to the aggregator's receipts, and the ledger
    heads in the aggregator's receipts are the ledgers' entry hashes round by round."""
    from fedrx.dp.audit import audit, load_anchors
    from fedrx.dp.ledger import read_entries
    from fedrx.nodes.launcher import privacy_outputs

    spec = DemoSpec(out=tmp_path / "grpc", protection="mask", rounds=2, hidden=16, dp=True,
                    epsilon=4.0)
    doc, task, nodes = _run_inthread(spec)
    assert not task.dp  # the aggregator's [task] has no DP policy
    assert [r["status"] for r in doc["rounds"]] == ["completed", "completed"]
    out = tmp_path / "grpc"
    receipts = json.loads((out / "aggregator" / "receipts.json").read_text())
    assert [r["round"] for r in receipts["rounds"]] == [1, 2]
    for h, node in zip(HS, nodes, strict=True):
        folder = out / "nodes" / h
        entries = read_entries(folder / "ledger" / f"{h}.jsonl")
        assert [e["round"] for e in entries] == [1, 2]
        assert all(e["status"] == "trained" for e in entries)
        assert node.party.dp.describe()["accountant"] == "pld"
        pub = json.loads((folder / "identities" / f"{h}.pub.json").read_text())
        assert bytes.fromhex(pub["sign_public"]) == node.identity.public.sign_public
        for r, e in zip(receipts["rounds"], entries, strict=True):
            assert r["ledger_heads"][h] == e["entry_hash"]
        anchors = load_anchors(out / "aggregator" / "anchors" / f"{h}.json")
        assert anchors[h].head_hash == entries[-1]["entry_hash"]
        assert audit(folder, anchors) == []
        # the receipt the hospital got back carries the same head
        state = json.loads((folder / "state.json").read_text())
        assert [x["ledger_head"] for x in state["receipts"]] == \
            [e["entry_hash"] for e in entries]
    _check_signed_receipts(out, nodes, receipts)
    # a truncated ledger no longer matches its anchor
    led = out / "nodes" / "h1" / "ledger" / "h1.jsonl"
    led.write_text(led.read_text().splitlines(keepends=True)[0])
    kinds = {f.kind for f in audit(out / "nodes" / "h1",
                                   load_anchors(out / "aggregator" / "anchors" / "h1.json"))}
    assert kinds == {"head-mismatch"}
    lines: list[str] = []
    res = privacy_outputs(write_setup(spec, HS), lines.append)
    assert (out / "budget-report" / "budget.json").is_file()
    assert res["audit"]["h2"] == [] and res["audit"]["h1"]
    assert any(line.startswith("audit h2: OK") for line in lines)


def _check_signed_receipts(out: Path, nodes: list, receipts: dict) -> None:
    """P24: round receipts are signed by the aggregator's pinned key, every hospital verified
    and stored them, the audit verifies them; a tampered receipt (edited head or round)
    fails at the hospital (which stops) and in the audit."""
    from fedrx.dp.audit import audit, load_anchor_receipts, load_anchors, run_audit
    from fedrx.errors import ProtocolError
    from fedrx.receipts import receipt_bytes, sign_receipt, verify_receipt
    from fedrx.secagg.identity import Identity

    certs = out / "certs"
    dep = Deployment.load(certs / "federation.json")
    key = dep.aggregator_sign_public
    assert stat.S_IMODE((certs / "aggregator.identity.json").stat().st_mode) == 0o600
    agg_ident = Identity.load(certs / "aggregator.identity.json")
    assert agg_ident.public.sign_public == key
    assert receipts["aggregator_sign_public"] == key.hex()
    assert all(verify_receipt(r, key) for r in receipts["rounds"])
    assert {r["federation_id"] for r in receipts["rounds"]} == {dep.federation_id}
    for h in HS:
        folder = out / "nodes" / h
        stored = [json.loads(x) for x in (folder / "receipts.jsonl").read_text().splitlines()]
        assert stored == receipts["rounds"]  # what came over mTLS = what the aggregator wrote
        anchors_file = out / "aggregator" / "anchors" / f"{h}.json"
        signed = load_anchor_receipts(anchors_file)
        assert signed[h] == receipts["rounds"][-1]
        assert audit(folder, load_anchors(anchors_file), receipts=signed,
                     aggregator_public=key, recompute=False) == []
    # the CLI finds certs/federation.json from the anchors file's location
    assert run_audit(out / "nodes" / "h1", out / "aggregator" / "anchors" / "h1.json"
                     ).exit_code == 0
    # tampered anchors: the signature no longer verifies (edited head, edited round)
    h1 = out / "nodes" / "h1"
    src = json.loads((out / "aggregator" / "anchors" / "h1.json").read_text())
    for field, value in (("head", "0" * 64), ("round", 1)):
        doc = json.loads(json.dumps(src))
        if field == "head":
            doc["h1"]["receipt"]["ledger_heads"]["h1"] = doc["h1"]["head_hash"] = value
        else:
            doc["h1"]["receipt"]["round"] = value
        bad = out / f"anchors-{field}.json"
        bad.write_text(json.dumps(doc))
        kinds = {f.kind for f in audit(h1, load_anchors(bad), receipts=load_anchor_receipts(bad),
                                       aggregator_public=key, recompute=False)}
        assert "receipt-bad-signature" in kinds, kinds
    assert run_audit(h1, bad, certs / "federation.json").exit_code == 1
    # at the hospital: the genuine RoundResult verifies; tampered ones stop the node
    node = nodes[0]
    good = receipts["rounds"][-1]

    def result(rec: dict, sig: str) -> pb.RoundResult:
        return pb.RoundResult(round=rec["round"], status=rec["status"],
                              contributors=rec["contributors"], model_hash=rec["model_hash"],
                              ledger_head=rec["ledger_heads"].get("h1", ""),
                              receipt=receipt_bytes(rec), signature=bytes.fromhex(sig))

    stored = node.signed_receipts.pop()  # as if this round's receipt had not arrived yet
    assert node.verify_result(result(good, good["signature"])) == good
    node.signed_receipts.append(stored)
    with pytest.raises(ProtocolError, match="replayed"):  # the same receipt sent again
        node.verify_result(result(good, good["signature"]))
    edited_head = {**good, "ledger_heads": {**good["ledger_heads"], "h1": "0" * 64}}
    edited_round = {**good, "round": 1}
    forged_head = sign_receipt(agg_ident, edited_head)  # signed, but not h1's ledger entry
    assert "h1" in good["contributors"] and good["ledger_heads"]["h1"]
    omitted = sign_receipt(agg_ident, {**good, "ledger_heads": {
        k: v for k, v in good["ledger_heads"].items() if k != "h1"}})  # h1 contributed
    before = (h1 / "receipts.jsonl").read_bytes()
    for rec, sig in ((edited_head, good["signature"]), (edited_round, good["signature"]),
                     (forged_head, forged_head["signature"]),
                     (omitted, omitted["signature"])):
        with pytest.raises(ProtocolError, match="receipt rejected"):
            node.verify_result(result(rec, sig))
        frames = [pb.AggregatorFrame(welcome=pb.Welcome(federation_id=dep.federation_id)),
                  pb.AggregatorFrame(result=result(rec, sig)),
                  pb.AggregatorFrame(goodbye=pb.Goodbye(reason="done"))]
        with pytest.raises(ProtocolError, match="receipt rejected"):
            node._serve(iter(frames), queue.Queue(), node.party)
    stored = node.signed_receipts.pop()  # not a replay: rejected for the omission itself
    with pytest.raises(ProtocolError, match="omits its ledger head"):
        node.verify_result(result(omitted, omitted["signature"]))
    node.signed_receipts.append(stored)
    # signed by the pinned aggregator key, but for another session than the derived one
    stored = node.signed_receipts.pop()
    other = sign_receipt(agg_ident, {**good, "session_id": "ab" * 32})
    with pytest.raises(ProtocolError, match="receipt of another session"):
        node.verify_result(result(other, other["signature"]))
    node.signed_receipts.append(stored)
    unsigned = result(good, good["signature"])
    unsigned.ClearField("signature")
    with pytest.raises(ProtocolError, match="receipt rejected"):
        node.verify_result(unsigned)
    assert (h1 / "receipts.jsonl").read_bytes() == before  # nothing unverified was stored


# -------------------------------------------------------------------- hostile input


class Server:
    def __init__(self, certs: Path):
        self.dep = Deployment.load(certs / "federation.json")
        self.tls = load_tls(certs / "ca.pem", certs / "aggregator.pem", certs / "aggregator.key",
                            self.dep, expect_hospital=None)
        self.registry = Registry()
        self.stop = threading.Event()
        self.settings = ServiceSettings(self.dep, "digest-1", "none", 3,
                                        Limits(max_message_bytes=1 << 20), hello_timeout=3.0)
        self.server, port, _ = serve(self.settings, "127.0.0.1:0", self.tls, self.registry,
                                     self.stop, 16)
        self.addr = f"127.0.0.1:{port}"
        self.transport = GrpcTransport(self.registry, {"*": 5.0}, self.stop)

    def channel(self, tls: TlsMaterial | None) -> grpc.Channel:
        if tls is None:
            return grpc.insecure_channel(self.addr, options=wire.grpc_options())
        # as a hospital node does: the server must chain to the pinned one-shot root
        creds = grpc.ssl_channel_credentials(self.dep.aggregator_root, tls.key, tls.cert)
        return grpc.secure_channel(self.addr, creds, options=wire.grpc_options())

    def hello(self, h: str = "h1", **kw) -> pb.HospitalFrame:
        fields = dict(protocol_version=1, hospital=h,
                      sign_public=self.dep.federation.members[h].sign_public,
                      task_digest="digest-1", protection="none")
        fields.update(kw)
        return pb.HospitalFrame(hello=pb.Hello(**fields))


class Client:
    """A hand-driven hospital stream."""

    def __init__(self, server: Server, tls: TlsMaterial | None):
        self.ch = server.channel(tls)
        self.q: queue.Queue = queue.Queue()

        def gen():
            while True:
                f = self.q.get()
                if f is None:
                    return
                yield f

        self.call = pb_grpc.AggregatorStub(self.ch).Session(gen(), timeout=TIMEOUT)

    def send(self, *frames):
        for f in frames:
            self.q.put(f)

    def recv(self):
        return next(self.call)

    def status(self) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as ei:
            while True:
                next(self.call)
        self.q.put(None)
        self.ch.close()
        return ei.value.code()


@pytest.fixture(scope="module")
def server(certs):
    s = Server(certs)
    yield s
    s.stop.set()
    s.server.stop(0).wait(5)


def _train_request(rnd: int = 1) -> TrainRequest:
    w = np.zeros(4, np.float32)
    return TrainRequest(b"s" * 32, rnd, ("h1",), w, model_hash(w), "none", 5)


def _exchange_async(server: Server, rnd: int = 1) -> tuple[threading.Thread, dict]:
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(
        r=server.transport.exchange("train", rnd, {"h1": _train_request(rnd)})), daemon=True)
    t.start()
    return t, out


def _connected(server: Server, c: Client) -> pb.AggregatorFrame:
    c.send(server.hello())
    assert c.recv().WhichOneof("body") == "welcome"
    end = time.monotonic() + TIMEOUT
    while "h1" not in server.registry.connected():
        assert time.monotonic() < end
        time.sleep(0.01)
    return c


def test_peer_checks_at_hello(server, certs, tmp_path):
    c = Client(server, _tls(certs, "h1"))
    c.send(pb.HospitalFrame(message=codec.encode_message(TrainAck(1, "h1", "trained"))))
    assert c.status() == grpc.StatusCode.FAILED_PRECONDITION          # no Hello first
    c = Client(server, _tls(certs, "h1"))
    c.send(server.hello("h2"))
    assert c.status() == grpc.StatusCode.PERMISSION_DENIED            # h1's cert, says h2
    c = Client(server, _tls(certs, "h1"))
    c.send(server.hello(task_digest="another task"))
    assert c.status() == grpc.StatusCode.FAILED_PRECONDITION
    c = Client(server, _tls(certs, "h1"))
    c.send(server.hello(sign_public=b"k" * 32))
    assert c.status() == grpc.StatusCode.PERMISSION_DENIED            # not the pinned key
    c = Client(server, _tls(certs, "h1"))                             # silent: no Hello
    assert c.status() == grpc.StatusCode.DEADLINE_EXCEEDED
    # certificate signed by the federation's CA but not pinned for any member
    ca_key = serialization.load_pem_private_key((certs / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = ca_cert.not_valid_before_utc
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "h1")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(ca_cert.not_valid_after_utc)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("h1")]), False)
            .sign(ca_key, hashes.SHA256()))
    rogue = TlsMaterial((certs / "ca.pem").read_bytes(),
                        cert.public_bytes(serialization.Encoding.PEM),
                        key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    c = Client(server, rogue)
    c.send(server.hello())
    assert c.status() == grpc.StatusCode.PERMISSION_DENIED
    # a client whose certificate comes from another CA: the TLS handshake fails
    other = tmp_path / "other"
    init_certs(other, ["h1"])
    foreign = TlsMaterial((certs / "ca.pem").read_bytes(),
                          (other / "hospitals" / "h1" / "tls.pem").read_bytes(),
                          (other / "hospitals" / "h1" / "tls.key").read_bytes())
    c = Client(server, foreign)
    c.send(server.hello())
    assert c.status() == grpc.StatusCode.UNAVAILABLE
    # plaintext against the TLS port
    c = Client(server, None)
    c.send(server.hello())
    assert c.status() == grpc.StatusCode.UNAVAILABLE
    _still_serving(server, certs)


def test_hospital_refuses_an_aggregator_certificate_that_is_not_the_pinned_one(certs,
                                                                              tmp_path):
    """A server with a certificate for the aggregator's names signed by the federation CA
    (what a holder of ca.key, or a mis-issued certificate, could present) fails the TLS
    handshake of a hospital node, which trusts only the one-shot root pinned in
    federation.json; the real aggregator certificate is accepted."""
    from fedrx.nodes.certs import AGGREGATOR_CN

    ca_key = serialization.load_pem_private_key((certs / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, AGGREGATOR_CN)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(ca_cert.not_valid_before_utc)
            .not_valid_after(ca_cert.not_valid_after_utc)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(ca_key, hashes.SHA256()))
    (tmp_path / "rogue.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "rogue.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    dep = Deployment.load(certs / "federation.json")
    with pytest.raises(ConfigError, match="not the one pinned for the aggregator"):
        load_tls(certs / "ca.pem", tmp_path / "rogue.pem", tmp_path / "rogue.key", dep,
                 expect_hospital=None)
    rogue = TlsMaterial((certs / "ca.pem").read_bytes(), (tmp_path / "rogue.pem").read_bytes(),
                        (tmp_path / "rogue.key").read_bytes())
    stop = threading.Event()
    settings = ServiceSettings(dep, "digest-1", "none", 3, Limits(max_message_bytes=1 << 20),
                               hello_timeout=3.0)
    srv, port, _ = serve(settings, "127.0.0.1:0", rogue, Registry(), stop, 4)
    try:
        h1 = _tls(certs, "h1")
        creds = grpc.ssl_channel_credentials(dep.aggregator_root, h1.key, h1.cert)
        ch = grpc.secure_channel(f"127.0.0.1:{port}", creds, options=[
            *wire.grpc_options(), ("grpc.ssl_target_name_override", "localhost")])
        with pytest.raises(grpc.FutureTimeoutError):  # handshake never succeeds
            grpc.channel_ready_future(ch).result(timeout=3)
        ch.close()
        # the federation CA as root (what hospitals used to trust) would have accepted it
        creds = grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes(), h1.key, h1.cert)
        ch = grpc.secure_channel(f"127.0.0.1:{port}", creds, options=[
            *wire.grpc_options(), ("grpc.ssl_target_name_override", "localhost")])
        grpc.channel_ready_future(ch).result(timeout=10)
        ch.close()
    finally:
        stop.set()
        srv.stop(0).wait(5)
    # the one-shot root's key is nowhere on disk: only certificates and keys of parties
    root = x509.load_pem_x509_certificate(dep.aggregator_root)
    agg = x509.load_pem_x509_certificate((certs / "aggregator.pem").read_bytes())
    assert agg.issuer == root.subject and agg.issuer != ca_cert.subject
    for f in certs.rglob("*.key"):
        k = serialization.load_pem_private_key(f.read_bytes(), None)
        assert k.public_key() != root.public_key()


def test_old_federation_file_is_refused_with_the_fix(tmp_path, certs):
    obj = json.loads((certs / "federation.json").read_text())
    obj["format"] = "fedrx-deployment/1"
    del obj["aggregator_root_pem"]
    (tmp_path / "f.json").write_text(json.dumps(obj))
    with pytest.raises(ConfigError, match="certs init"):
        Deployment.load(tmp_path / "f.json")
    obj["format"] = "fedrx-deployment/2"
    obj["aggregator_root_pem"] = (certs / "aggregator.pem").read_text()  # not a CA
    (tmp_path / "f.json").write_text(json.dumps(obj))
    with pytest.raises(ConfigError, match="aggregator_root_pem"):
        Deployment.load(tmp_path / "f.json")


def test_hello_claiming_a_round_out_of_range_is_refused(server, certs):
    c = Client(server, _tls(certs, "h1"))
    c.send(server.hello(last_round=2**62))
    assert c.status() == grpc.StatusCode.INVALID_ARGUMENT


def test_oversized_frame_is_refused(server, certs):
    c = _connected(server, Client(server, _tls(certs, "h1")))
    big = pb.HospitalFrame(chunk=pb.Chunk(index=0, data=b"x" * (5 << 20)))
    c.send(big)
    assert c.status() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _still_serving(server, certs)


@pytest.mark.parametrize("attack,code", [
    ("wrong_round", grpc.StatusCode.FAILED_PRECONDITION),
    ("wrong_stage", grpc.StatusCode.FAILED_PRECONDITION),
    ("unsolicited", grpc.StatusCode.FAILED_PRECONDITION),
    ("malformed", grpc.StatusCode.INVALID_ARGUMENT),
    ("declared_too_big", grpc.StatusCode.RESOURCE_EXHAUSTED),
    ("replay", grpc.StatusCode.FAILED_PRECONDITION),
])
def test_hostile_replies_end_the_stream(server, certs, attack, code):
    c = _connected(server, Client(server, _tls(certs, "h1")))
    t, out = _exchange_async(server)
    req = c.recv()
    assert req.WhichOneof("body") == "message" and req.header.stage == "train"
    hdr = pb.Header()
    hdr.CopyFrom(req.header)
    ack = pb.HospitalFrame(header=hdr, message=codec.encode_message(TrainAck(1, "h1", "trained")))
    if attack == "wrong_round":
        ack.header.round = 7
    elif attack == "wrong_stage":
        ack.header.stage = "unmask"
    elif attack == "unsolicited":
        ack.header.seq = 99
    elif attack == "malformed":
        ack.message.Clear()
    elif attack == "declared_too_big":
        ack = pb.HospitalFrame(header=hdr, chunk=pb.Chunk(index=0, total_bytes=2 << 20,
                                                          sha256=b"x" * 32, data=b"x"))
    c.send(ack)
    if attack == "replay":
        t.join(TIMEOUT)
        assert isinstance(out["r"]["h1"], TrainAck)    # first copy accepted
        c.send(ack)                                    # the same reply again
    assert c.status() == code
    t.join(TIMEOUT)
    assert not t.is_alive()
    if attack != "replay":
        assert out["r"] == {}                          # h1 simply missing from the stage
    _still_serving(server, certs)


def test_silent_hospital_becomes_a_dropout_at_the_stage_deadline(server, certs):
    c = _connected(server, Client(server, _tls(certs, "h1")))
    transport = GrpcTransport(server.registry, {"*": 1.0}, server.stop)
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(r=transport.exchange(
        "train", 1, {"h1": _train_request()})), daemon=True)
    t0 = time.monotonic()
    t.start()
    assert c.recv().header.stage == "train"                 # received, never answered
    t.join(TIMEOUT)
    assert not t.is_alive() and out["r"] == {}
    assert 0.9 <= time.monotonic() - t0 < TIMEOUT
    (st,) = transport.take_stats()
    assert st.failures == {"h1": "deadline exceeded"}
    c.q.put(None)
    c.ch.close()
    _still_serving(server, certs)


def _still_serving(server: Server, certs: Path) -> None:
    ch = server.channel(_tls(certs, "h2"))
    try:
        rep = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="fedrx.v1.Aggregator"), timeout=TIMEOUT)
        assert rep.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        ch.close()
    c = _connected(server, Client(server, _tls(certs, "h1")))
    t, out = _exchange_async(server, rnd=2)
    req = c.recv()
    c.send(pb.HospitalFrame(header=req.header, message=codec.encode_message(
        TrainAck(2, "h1", "trained"))))
    t.join(TIMEOUT)
    assert out["r"]["h1"].status == "trained"
    c.q.put(None)
    c.call.cancel()
    c.ch.close()


# ------------------------------------------------------------------ hospital side


def test_hospital_node_rejects_hostile_requests(tmp_path, certs):
    from fedrx.nodes.hospital import HospitalNode
    from fedrx.protocol.hospital import HospitalParty
    from fedrx.protocol.protection import NoProtection
    from fedrx.protocol.task import ClientOptimizer
    from tests.test_protocol import ToyData, ToyTask

    spec = DemoSpec(out=tmp_path, protection="none")
    (tmp_path / "certs").mkdir()
    for name in ("ca.pem", "ca.key", "aggregator.pem", "aggregator.key", "federation.json",
                 "task.json"):
        (tmp_path / "certs" / name).write_bytes((certs / name).read_bytes())
    os.symlink(certs / "hospitals", tmp_path / "certs" / "hospitals")
    setup = write_setup(spec, HS)
    cfg, data, privacy = load_node_config(setup.node_configs["h1"])
    node = HospitalNode(cfg, data, privacy)
    party = HospitalParty("h1", ToyTask(), ToyData(10, 1.0), NoProtection(), ClientOptimizer())
    node.party = party
    w = ToyTask().initial_weights(0)
    req = TrainRequest(b"s" * 32, 1, ("h1",), w, model_hash(w), "none", w.size + 1)
    env = codec.encode_message(req)

    def frame(seq, rnd=1, **body):
        return pb.AggregatorFrame(header=wire.header(b"s" * 32, rnd, "train", seq), **body)

    frames = [
        pb.AggregatorFrame(welcome=pb.Welcome(federation_id=node.dep.federation_id)),
        frame(1, message=env),                                   # valid -> TrainAck
        frame(1, message=env),                                   # same seq -> replay
        frame(2, rnd=5, message=env),                            # header round 5, msg round 1
        frame(3, chunk=pb.Chunk(index=0, total_bytes=10, data=b"x")),  # no SHA-256
        frame(4, message=env),                                   # round 1 again -> refused
        pb.AggregatorFrame(goodbye=pb.Goodbye(reason="done")),
    ]
    outq: queue.Queue = queue.Queue()
    assert node._serve(iter(frames), outq, party) == "goodbye"
    got = []
    while not outq.empty():
        f = outq.get()
        got.append(f.error.code if f.WhichOneof("body") == "error"
                   else f.message.WhichOneof("msg"))
    assert got == ["train_ack", "replay", "wrong_round", "malformed", "refused"]
    assert party.last_round == 1


# ----------------------------------------------------------------------- CLI, certs


def test_certs_init_files_modes_and_pins(tmp_path, capsys):
    out = tmp_path / "c"
    task = tmp_path / "task.json"
    assert main(["task", "init", "--out", str(task), "--hidden", "16"]) == 0
    assert main(["certs", "init", "--out", str(out), "--hospitals", "a,b", "--task",
                 str(task)]) == 0
    for p in ["ca.key", "aggregator.key", "aggregator.identity.json", "hospitals/a/tls.key",
              "hospitals/a/identity.json"]:
        assert stat.S_IMODE((out / p).stat().st_mode) == 0o600, p
    dep = Deployment.load(out / "federation.json")
    from fedrx.secagg.identity import Identity

    assert Identity.load(out / "aggregator.identity.json").public.sign_public == \
        dep.aggregator_sign_public
    assert dep.hospitals == ["a", "b"]
    assert dep.hospital_for_cert((out / "hospitals" / "b" / "tls.pem").read_bytes()) == "b"
    assert "PRIVATE" not in (out / "federation.json").read_text()
    assert main(["certs", "init", "--out", str(out), "--hospitals", "a,b", "--task",
                 str(task)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["certs", "init", "--out", str(tmp_path / "x"), "--hospitals", "a/b",
                 "--task", str(task)]) == 2


def test_plaintext_is_refused_without_insecure(tmp_path, certs, capsys):
    spec = DemoSpec(out=tmp_path, protection="none",
                    node_extra={"h1": {"ca": "", "cert": "", "key": ""}},
                    aggregator={"insecure": True})
    setup = write_setup(spec, HS)
    assert main(["node", "run", "--config", str(setup.node_configs["h1"])]) == 2
    assert "plaintext needs --insecure" in capsys.readouterr().err
    assert main(["aggregator", "serve", "--config", str(setup.aggregator_config)]) == 2
    assert "pass --insecure explicitly" in capsys.readouterr().err


def test_pinned_task_digest_covers_training_fields_and_vocabulary():
    """The task spec's SHA-256 (what hospitals pin and send in Hello) changes with every
    shared setting and the vocabulary, and with nothing that names data or outputs."""
    from fedrx.medrx.vocab import Vocabulary
    from fedrx.nodes.simulate import SimulationConfig

    a = make_spec(SimulationConfig(hidden=16)).sha256
    assert a == make_spec(SimulationConfig(hidden=16, out="x", data="elsewhere")).sha256
    assert a != make_spec(SimulationConfig(hidden=17)).sha256
    assert a != make_spec(SimulationConfig(hidden=16, seed=1)).sha256
    assert a != make_spec(SimulationConfig(hidden=16, rounds=99)).sha256
    assert a != make_spec(SimulationConfig(hidden=16),
                          vocabulary=Vocabulary(("401",), ("38",), ("B01A",))).sha256


def test_aggregator_crash_at_fault_spec_is_validated():
    from fedrx.errors import ConfigError
    from fedrx.nodes.config import AggregatorConfig

    assert AggregatorConfig(federation="f.json", crash_at="masked_input:2").crash_point() == \
        ("masked_input", 2)
    assert AggregatorConfig(federation="f.json").crash_point() is None
    for bad in ("masked_input", "masked_input:x", ":2", "unmask:0"):
        with pytest.raises(ConfigError, match="crash_at"):
            AggregatorConfig(federation="f.json", crash_at=bad).validate()


@pytest.mark.slow  # ~35 s of CPU: 20 masked rounds over TLS, 4 evaluations
def test_inthread_distributed_dp_federation_learns_and_audits(tmp_path, mimic_demo):
    """Distributed DP over gRPC (issue 16): the task pins the mechanism, k, q and N; each
    hospital node supplies a discrete noise share inside the masked sum (the same
    DistributedDP as fedrx simulate), its ledger carries the signed ``distributed`` record
    (3 shares, k 1, 2 honest) and audits clean against the aggregator's anchors, and the
    final model beats the initial one on the hospitals' pooled test patients."""
    from fedrx.dp.audit import audit, load_anchors
    from fedrx.dp.ledger import read_entries
    from fedrx.medrx.metrics import MetricSums

    spec = DemoSpec(out=tmp_path / "grpc", protection="mask", rounds=20, hidden=32, dp=True,
                    epsilon=8.0, dp_mode="distributed", dp_k=1)
    doc, _, nodes = _run_inthread(spec)
    pinned = json.loads((tmp_path / "grpc" / "certs" / "task.json").read_text())["settings"]
    assert pinned["dp_mode"] == "distributed" and pinned["dp_k"] == 1
    assert pinned["dp_patients"] == sum(n.party.dp.n_patients for n in nodes)
    assert [r["status"] for r in doc["rounds"]] == ["completed"] * 20
    assert [r["round"] for r in doc["rounds"] if r["metrics"]] == [5, 10, 15, 20]
    out = tmp_path / "grpc"
    for h, node in zip(HS, nodes, strict=True):
        assert node.party.dp.mode == "distributed"
        folder = out / "nodes" / h
        entries = read_entries(folder / "ledger" / f"{h}.jsonl")
        assert [e["round"] for e in entries] == list(range(1, 21))
        rec = entries[-1]["distributed"]
        assert (rec["mechanism"], rec["shares"], rec["k"], rec["honest_shares"]) == \
            ("distributed", 3, 1, 2)
        anchors = load_anchors(out / "aggregator" / "anchors" / f"{h}.json")
        assert audit(folder, anchors) == []
    # the initial model on the same pooled test patients
    init = nodes[0].party.task.initial_weights(spec.seed)
    total = MetricSums()
    for n in nodes:
        total = total.combine(n.party.task.evaluate(init, n.party.data))
    before = total.metrics().as_dict()
    after = doc["rounds"][-1]["metrics"]
    assert after["prauc"] > before["prauc"] + 0.05, (before, after)
