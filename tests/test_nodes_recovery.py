"""Recovery of the gRPC nodes (issue 15): whole-checkpoint integrity (item 10), failures
reported as failures (item 2), the hospital's re-use of an already-charged DP result after an
aggregator restart (item 5) and user mistakes caught before listening or training (item 11).
Fast: no processes, no gRPC server (the process-level cases are tests/test_nodes_restarts.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedrx.errors import ConfigError
from fedrx.nodes import checkpoint as ck
from fedrx.protocol.aggregator import ServerState
from fedrx.protocol.optim import ServerOptimizer
from fedrx.secagg.identity import Identity

ROUNDS = [{"round": 1, "status": "completed", "metrics": {"jaccard": 0.25},
           "model_hash": "x"}]


def _state(rnd: int = 3) -> ServerState:
    opt = ServerOptimizer("fedadam", lr=0.01)
    w = np.arange(12, dtype=np.float32)
    opt.m, opt.v = np.ones(12), np.full(12, 2.0)
    return ServerState(rnd, w, opt, bytes(range(32)))


@pytest.fixture()
def saved(tmp_path):
    ident = Identity.generate("aggregator")
    folder = tmp_path / "checkpoint"
    ck.save_checkpoint(folder, _state(), ROUNDS, {"task_digest": "t"},
                       {"protection-k": b"blob", **ck.selected_blob(np.zeros(3))},
                       signer=ident)
    return folder, ident.public.sign_public


def test_checkpoint_round_trips_with_the_pinned_key(saved):
    folder, key = saved
    state, rounds, meta = ck.load_checkpoint(folder, key)
    assert state.round == 3 and state.session_id == bytes(range(32))
    assert state.optimizer.lr == 0.01 and np.array_equal(state.optimizer.v, np.full(12, 2.0))
    assert rounds == ROUNDS and meta == {"task_digest": "t"}
    assert ck.load_blobs(folder, "protection-", key) == {"k": b"blob"}


def _edit_state(folder: Path, edit) -> None:
    p = folder / "round-000003" / "state.json"
    doc = json.loads(p.read_text())
    edit(doc)
    p.write_text(json.dumps(doc) + "\n")


@pytest.mark.parametrize("edit", [
    lambda d: d.update(round=2),
    lambda d: d["rounds"][0]["metrics"].update(jaccard=0.99),
    lambda d: d.update(session_id="00" * 32),
    lambda d: d["optimizer"].update(lr=1.0),
], ids=["round", "metric", "session_id", "lr"])
def test_any_edit_of_state_json_is_refused(saved, edit):
    """Before: only the weights were hash-checked; these edits loaded silently."""
    folder, key = saved
    _edit_state(folder, edit)
    with pytest.raises(ConfigError, match="seal"):
        ck.load_checkpoint(folder, key)


def test_a_resealed_edit_fails_the_signature(saved):
    folder, key = saved
    _edit_state(folder, lambda d: d.update(round=9))
    d = folder / "round-000003"
    import hashlib

    digest = hashlib.sha256((d / "state.json").read_bytes()).hexdigest()
    (d / "seal.json").write_text(json.dumps({"state_sha256": digest, "signature": "00" * 64}))
    with pytest.raises(ConfigError, match="not signed by the pinned aggregator key"):
        ck.load_checkpoint(folder, key)
    with pytest.raises(ConfigError, match="not signed"):
        ck.load_checkpoint(folder, Identity.generate("other").public.sign_public)


@pytest.mark.parametrize("name,load", [
    ("opt_m.npy", lambda f, k: ck.load_checkpoint(f, k)),
    ("protection-k", lambda f, k: ck.load_blobs(f, "protection-", k)),
    ("selected_model.npy", lambda f, k: ck.restore_selected(f, {"round": 1,
                                                               "model_hash": "x"}, k)),
], ids=["moments", "protection", "selected"])
def test_every_blob_is_hash_checked(saved, name, load):
    folder, key = saved
    p = folder / "round-000003" / name
    p.write_bytes(p.read_bytes()[:-1] + b"\x01")
    with pytest.raises(ConfigError, match="does not match its recorded"):
        load(folder, key)


@pytest.mark.parametrize("garbage", [b"abc\n", "\u00b2\n".encode(), b"\xff\xfe", b"-3"])
def test_garbage_started_file_is_one_config_error(tmp_path, garbage):
    """Before: a superscript digit or a non-UTF-8 STARTED gave a ValueError /
    UnicodeDecodeError traceback."""
    (tmp_path / ck.STARTED).write_bytes(garbage)
    with pytest.raises(ConfigError, match="does not hold a round number"):
        ck.read_started(tmp_path)


def test_full_disk_leaves_no_partial_folder(saved, monkeypatch):
    """Before: an OSError while writing left ``.round-000004.tmp/`` behind (and escaped as a
    raw OSError)."""
    folder, key = saved
    real = ck.atomic_write_bytes
    calls = []

    def full(path, data, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(path, data, **kw)

    monkeypatch.setattr(ck, "atomic_write_bytes", full)
    with pytest.raises(ConfigError, match="No space left on device"):
        ck.save_checkpoint(folder, _state(4), ROUNDS, {}, signer=None)
    assert sorted(p.name for p in folder.iterdir()) == ["LATEST", "round-000003"]
    assert ck.load_checkpoint(folder, key)[0].round == 3


def test_unwritable_folder_is_found_before_any_round(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="is not writable"):
        ck.check_writable(tmp_path / "afile" / "out", "[aggregator] out")


# ------------------------------------------------- item 5: re-use of a charged DP result


class _Task:
    """Local training that moves every weight by +1 and counts its calls."""

    def __init__(self):
        self.calls = 0

    def check_weights(self, weights):  # the FederatedTask check: any vector fits
        pass

    def local_train(self, weights, data, opt, seed, dp=None):
        from fedrx.protocol.task import LocalResult

        self.calls += 1
        if dp is not None:
            dp.charged.append(dp.round)
        return LocalResult(weights + np.float32(self.calls), 10, 0.5)


class _DP:
    """Stands in for HospitalDP: records which rounds were charged."""

    def __init__(self):
        self.charged: list[int] = []
        self.round = 0

    def begin_round(self, rnd, model_hash):
        self.round = rnd
        return ""

    def ledger_head(self):
        return f"head-{self.charged[-1]}"


def _party(dp):
    from fedrx.protocol.hospital import HospitalParty
    from fedrx.protocol.registry import make_protection
    from fedrx.protocol.task import ClientOptimizer

    prot = make_protection("none")
    party = HospitalParty("h1", _Task(), None, prot, ClientOptimizer("sgd", 0.1), dp=dp)
    party.keep_results = True  # as a deployment node sets it
    return party


def _req(rnd, w, participants=("h1", "h2")):
    from fedrx.protocol.messages import TrainRequest
    from fedrx.protocol.task import model_hash

    return TrainRequest(b"s" * 32, rnd, participants, w, model_hash(w), "none", w.size + 1)


def _input(party):
    return np.array(party.client.vector, copy=True)


def test_retry_of_an_abandoned_round_re_sends_the_charged_result_once():
    """Before: every retry trained and charged again (ledger entries 1, 3, 4 below)."""
    from fedrx.protocol.messages import TRAIN

    dp = _DP()
    party = _party(dp)
    w = np.zeros(3, dtype=np.float32)
    ack = party.handle(TRAIN, _req(1, w))
    first = _input(party)
    assert dp.charged == [1] and ack.ledger_head == "head-1"
    # the aggregator restarted from its checkpoint: round 2 burnt, round 3 = same model
    ack = party.handle(TRAIN, _req(3, w))
    assert dp.charged == [1] and ack.ledger_head == "head-1"  # nothing charged
    assert np.array_equal(_input(party), first) and party.log[-1].reused_from == 1
    assert party.head_of(3) == "head-1"
    # abandoned again: the kept result was used once; this retry trains and pays
    party.handle(TRAIN, _req(4, w))
    assert dp.charged == [1, 4] and party.log[-1].reused_from == 0
    # a receipt of the charged round spends it
    party.receipted(4)
    party.handle(TRAIN, _req(5, w))
    assert dp.charged == [1, 4, 5]


@pytest.mark.parametrize("change", ["model", "participants"])
def test_no_re_use_for_another_model_or_participant_set(change):
    from fedrx.protocol.messages import TRAIN

    dp = _DP()
    party = _party(dp)
    w = np.zeros(3, dtype=np.float32)
    party.handle(TRAIN, _req(1, w))
    party.handle(TRAIN, _req(2, w + 1) if change == "model" else
                 _req(2, w, ("h1", "h2", "h3")))
    assert dp.charged == [1, 2]


def test_without_dp_or_receipts_nothing_is_kept():
    """No DP: nothing was charged. The in-process simulation (no receipts, keep_results
    off): an aborted round's retry trains again, as before."""
    from fedrx.protocol.messages import TRAIN

    w = np.zeros(3, dtype=np.float32)
    party = _party(None)
    party.handle(TRAIN, _req(1, w))
    party.handle(TRAIN, _req(2, w))
    assert party.task.calls == 2 and party.kept is None
    dp = _DP()
    party = _party(dp)
    party.keep_results = False
    party.handle(TRAIN, _req(1, w))
    party.handle(TRAIN, _req(2, w))
    assert dp.charged == [1, 2] and party.kept is None


def test_kept_result_survives_a_hospital_restart_only_if_charged(tmp_path):
    from fedrx.nodes.node_state import load_kept, save_kept
    from fedrx.protocol.hospital import KeptResult

    kept = KeptResult(1, "m", ("h1", "h2"), np.arange(4.0), 10, 0.5, "e1")
    meta, digest = save_kept(tmp_path, kept, "")
    ledger = [{"round": 1, "status": "trained", "entry_hash": "e1", "model_hash": "m"}]
    back = load_kept(tmp_path, meta, ledger)
    assert back is not None and np.array_equal(back.vector, kept.vector)
    assert back.meta() == kept.meta()
    assert load_kept(tmp_path, meta, []) is None  # not in the ledger: not charged
    (tmp_path / "kept_result.npy").write_bytes(b"x" * 10)
    assert load_kept(tmp_path, meta, ledger) is None  # tampered vector
    assert save_kept(tmp_path, None, digest) == (None, "")
    assert not (tmp_path / "kept_result.npy").exists()


# ------------------------------------------------------- item 11: CLI mistakes, one line


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    from fedrx.cli.main import main

    root = tmp_path_factory.mktemp("fed")
    assert main(["task", "init", "--out", str(root / "task.json"), "--hidden", "8",
                 "--rounds", "1"]) == 0
    assert main(["certs", "init", "--out", str(root / "certs"), "--hospitals", "h1,h2",
                 "--task", str(root / "task.json")]) == 0
    (root / "afile").write_text("x")
    (root / "bad.key").write_text("not a key\n")
    return root


def _one_line(capsys, argv, match):
    from fedrx.cli.main import main

    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("fedrx: error: "), err
    assert match in err[0], err[0]


def test_certs_init_mistakes(fed, capsys):
    """Before: ValueError (negative days) and FileNotFoundError (/proc/x) tracebacks."""
    base = ["certs", "init", "--hospitals", "h1", "--task", str(fed / "task.json")]
    _one_line(capsys, [*base, "--out", str(fed / "c1"), "--days", "-5"], "--days")
    assert not (fed / "c1").exists()
    _one_line(capsys, [*base, "--out", "/proc/x"], "/proc/x")
    _one_line(capsys, [*base, "--out", str(fed / "afile" / "c")], "cannot write")


def test_demo_grpc_mistakes_write_nothing(fed, capsys):
    """Before: ``--protection foo`` wrote the exports first; ``--out FILE`` failed late."""
    _one_line(capsys, ["demo", "grpc", "--out", str(fed / "d1"), "--protection", "foo",
                       "--data", "synthetic"], "unknown protection 'foo'")
    assert not (fed / "d1").exists()
    _one_line(capsys, ["demo", "grpc", "--out", str(fed / "afile"), "--data", "synthetic"],
              "is a file")


def _agg_toml(fed, listen="127.0.0.1:0", key=None, out=None):
    from fedrx.nodes.launcher import write_toml

    c = fed / "certs"
    p = fed / "agg.toml"
    write_toml(p, {"aggregator": {
        "listen": listen, "ca": str(c / "ca.pem"), "cert": str(c / "aggregator.pem"),
        "key": str(key or c / "aggregator.key"), "federation": str(c / "federation.json"),
        "out": str(out or fed / "aout"), "wait_seconds": 600.0}})
    return ["aggregator", "serve", "--config", str(p)]


@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:99999", "127.0.0.1:", ":50051",
                                    "127.0.0.1:5x"])
def test_listen_that_is_not_host_port(fed, capsys, listen):
    """Before: ``RuntimeError: Failed to bind`` traceback, or a silently random port."""
    _one_line(capsys, _agg_toml(fed, listen=listen), "listen must be host:port")


def test_key_file_mistakes_name_the_key(fed, capsys):
    """Before: ``RuntimeError: Failed to bind to address 127.0.0.1:0`` (names no key)."""
    bad = fed / "bad.key"
    _one_line(capsys, _agg_toml(fed, key=bad), f"private key {bad} is not")
    other = fed / "certs" / "hospitals" / "h1" / "tls.key"
    _one_line(capsys, _agg_toml(fed, key=other), f"private key {other} does not belong")


def test_unwritable_aggregator_out_before_listening(fed, capsys):
    """Before: found only at the first round (after hospitals had connected and trained)."""
    _one_line(capsys, _agg_toml(fed, out=fed / "afile" / "out"), "is not writable")


def _node_toml(fed, key=None, out=None):
    from fedrx.nodes.launcher import write_toml

    c, h = fed / "certs", fed / "certs" / "hospitals" / "h1"
    p = fed / "node.toml"
    write_toml(p, {"node": {"hospital": "h1", "aggregator": "127.0.0.1:1",
                            "ca": str(c / "ca.pem"), "cert": str(h / "tls.pem"),
                            "key": str(key or h / "tls.key"),
                            "identity": str(h / "identity.json"),
                            "federation": str(c / "federation.json"),
                            "out": str(out or fed / "node")},
                   "data": {"path": str(fed / "no-export-needed")},
                   "privacy": {"dp": True}})
    return ["node", "run", "--config", str(p)]


def test_dp_hospital_with_unwritable_out(fed, capsys):
    """Before: ``NotADirectoryError`` traceback from the ledger, after reading the export."""
    _one_line(capsys, _node_toml(fed, out=fed / "afile" / "node"), "[node] out")


def test_hospital_key_of_another_certificate(fed, capsys):
    other = fed / "certs" / "aggregator.key"
    _one_line(capsys, _node_toml(fed, key=other), f"private key {other} does not belong")


# ------------------------------------------- item 2: an aggregator failure is a failure


def test_aggregator_failure_reaches_hospitals_and_the_operator(tmp_path, monkeypatch):
    """A full disk while the aggregator stores round 1's receipts: the operator gets ONE
    ConfigError line naming the cause (before: a raw OSError traceback), every hospital is
    told Goodbye "failed: ..." and its run() raises ProtocolError, so ``fedrx node run``
    exits 2 (before the Goodbye fix: "federation finished" and exit 0)."""
    import threading

    import fedrx.nodes.aggregator as agg_mod
    from fedrx.errors import ProtocolError
    from fedrx.nodes.aggregator import AggregatorNode
    from fedrx.nodes.config import load_aggregator_config, load_node_config
    from fedrx.nodes.hospital import HospitalNode
    from fedrx.nodes.launcher import DemoSpec, write_setup

    spec = DemoSpec(out=tmp_path / "g", data="synthetic", hospitals=2, patients=60,
                    protection="none", rounds=2, hidden=8)
    setup = write_setup(spec)

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "g" / "receipts.json"))

    monkeypatch.setattr(agg_mod, "write_receipts", full_disk)
    cfg = load_aggregator_config(setup.aggregator_config)
    cfg.wait_seconds = 60
    agg = AggregatorNode(cfg)
    lock = threading.Lock()
    nodes, outcome = [], {}
    for h in setup.hospitals:
        ncfg, data, privacy = load_node_config(setup.node_configs[h])
        ncfg.give_up_seconds = 60
        node = HospitalNode(ncfg, data, privacy)
        party = node.build_party()

        def handle(stage, req, inner=party.handle):
            with lock:  # torch's RNG is per process: one hospital trains at a time
                return inner(stage, req)

        party.handle = handle
        nodes.append(node)

    def run(name, fn):
        try:
            outcome[name] = fn()
        except Exception as exc:  # noqa: BLE001
            outcome[name] = exc

    threads = [threading.Thread(target=run, args=("aggregator", agg.run), daemon=True)]
    threads += [threading.Thread(target=run, args=(n.cfg.hospital, n.run), daemon=True)
                for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for n in nodes:
        n.stop.set()
    err = outcome["aggregator"]
    assert isinstance(err, ConfigError) and "No space left on device" in str(err)
    assert "\n" not in str(err)
    for n in nodes:
        got = outcome[n.cfg.hospital]
        assert isinstance(got, ProtocolError), got
        assert "the aggregator failed: failed: No space left on device" in str(got)
