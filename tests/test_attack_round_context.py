"""A malicious aggregator against the hospital-side code: the agreed round context
(issue 14 items 1, 2, 3, 5, 8; issue 16 item 5).

Every test drives the REAL HospitalParty and protection objects with messages a malicious
aggregator scripts itself (no RoundMachine in between, unless the aggregator's own check is
the subject) and would fail with the defence removed (each says which defence).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from fedrx.errors import ConfigError, ProtocolError
from fedrx.protocol.aggregator import RoundMachine, ServerState
from fedrx.protocol.context import graph_seed, pin
from fedrx.protocol.hospital import HospitalParty, HospitalState
from fedrx.protocol.messages import EvalRequest, TrainRequest
from fedrx.protocol.optim import ServerOptimizer
from fedrx.protocol.protection import PlainUpload
from fedrx.protocol.protections.mask import MaskConfig
from fedrx.protocol.registry import make_party, make_server_protection
from fedrx.protocol.task import ClientOptimizer, FederatedTask, LocalResult, model_hash
from fedrx.protocol.transport import InProcessTransport
from fedrx.secagg import graph as graphs
from fedrx.secagg.identity import Federation, Identity
from fedrx.secagg.mask.messages import (
    AdvertiseKeys,
    AdvertiseRequest,
    MaskedInputRequest,
    ShareKeysReply,
    ShareKeysRequest,
)


@dataclass
class Data:
    n: int
    shift: float


class CountingTask(FederatedTask):
    """Local training adds ``shift``; counts every training call (a training call is what
    costs a DP hospital its budget)."""

    size = 6

    def __init__(self) -> None:
        self.trained: list[str] = []

    def initial_weights(self, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).normal(size=self.size).astype(np.float32)

    def check_weights(self, weights: np.ndarray) -> None:
        if weights.shape != (self.size,):
            raise ProtocolError(f"model has {weights.size} weights, task needs {self.size}")

    def local_train(self, weights, data, opt, seed, dp=None):
        self.trained.append("x")
        return LocalResult((weights + data.shift).astype(np.float32), data.n, 0.0)

    def evaluate(self, weights, data, part="test"):
        from fedrx.medrx.metrics import MetricSums

        return MetricSums(patients=1, visits=1)

    def personalize(self, weights, data, opt, seed):
        return weights + 1.0

    def n_train_examples(self, data):
        return data.n


class CountingDP:
    """Stands in for HospitalDP: ``begin_round`` is where a ledger entry is written."""

    def __init__(self) -> None:
        self.begun: list[int] = []

    def begin_round(self, rnd: int, mh: str) -> str:
        self.begun.append(rnd)
        return ""

    def ledger_head(self) -> str:
        return "head"


def federation(n: int) -> tuple[list[Identity], Federation]:
    ids = [Identity.generate(f"h{i:02d}") for i in range(n)]
    return ids, Federation.of(ids)


def parties(n: int, protection: str = "mask", params: dict | None = None,
            policy: dict | None = None, dp: bool = False,
            ) -> tuple[dict[str, HospitalParty], CountingTask, Federation]:
    ids, fed = federation(n)
    task = CountingTask()
    ps = {i.hospital: make_party(i.hospital, task, Data(10 + k, 0.1 * k), protection=protection,
                                 federation=fed, identity=i, params=params or {},
                                 client_optimizer=ClientOptimizer("sgd", 0.1), seed=0,
                                 dp=CountingDP() if dp else None, policy=policy)
          for k, i in enumerate(ids)}
    return ps, task, fed


def train_request(party: HospitalParty, participants, weights, rnd: int = 1,
                  **over) -> TrainRequest:
    req = TrainRequest(party.protection.pinned.session_id, rnd, tuple(participants), weights,
                       model_hash(weights), party.protection.name, weights.size + 1)
    return replace(req, **over)


def untouched(party: HospitalParty, task: CountingTask) -> bool:
    """Nothing charged, logged or remembered: the refusal came before training."""
    dp_ok = party.dp is None or party.dp.begun == []
    return (task.trained == [] and party.log == [] and party.last_round == 0
            and party.client is None and dp_ok)


# -- item 1: model inconsistency (Pasquini et al., CCS 2022) -------------------------------

def _advertise_and_share(ps, reqs):
    """The malicious aggregator: per-hospital TrainRequests, then it relays every
    advertisement to every hospital. Returns (share-keys replies, refusals)."""
    for h, req in reqs.items():
        assert ps[h].handle("train", req).status == "trained"
    ads = {h: ps[h].handle("advertise_keys", AdvertiseRequest(1)) for h in ps}
    assert all(isinstance(a, AdvertiseKeys) for a in ads.values())
    relay = ShareKeysRequest(1, tuple(ads[h] for h in sorted(ads)))
    replies, refused = {}, {}
    for h in ps:
        try:
            replies[h] = ps[h].handle("share_keys", relay)
        except ProtocolError as exc:
            refused[h] = str(exc)
    return replies, refused


def test_two_models_abort_before_masked_input():
    """The victim gets the real model, the others a trap model: every hospital's round
    context differs from the victim's, so the advertisements do not verify under it and
    EVERY hospital aborts at share_keys: no share is sent, no masked input can be asked
    for. Defence: the context digest (with the model hash each hospital computed itself)
    signed into AdvertiseKeys; with the old empty model hash all would go on to upload."""
    ps, _, _ = parties(4)
    names = sorted(ps)
    real = CountingTask().initial_weights(0)
    trap = np.zeros_like(real)
    victim = names[0]
    reqs = {h: train_request(ps[h], names, real if h == victim else trap) for h in names}
    replies, refused = _advertise_and_share(ps, reqs)
    assert replies == {} and set(refused) == set(names)
    assert "round context" in refused[victim]
    for h in names:  # nothing derived from the data can be obtained any more
        assert ps[h].state is HospitalState.ABORTED
        with pytest.raises(ProtocolError):
            ps[h].handle("masked_input", MaskedInputRequest(1, ()))


def test_same_model_shares_keys():
    """Control: the same model to everyone and the same relay go through share_keys (so
    the abort above is the context check, not the relay)."""
    ps, _, _ = parties(4)
    names = sorted(ps)
    real = CountingTask().initial_weights(0)
    replies, refused = _advertise_and_share(
        ps, {h: train_request(ps[h], names, real) for h in names})
    assert refused == {} and all(isinstance(r, ShareKeysReply) for r in replies.values())


def test_hospitals_disagreeing_on_participants_abort():
    """The aggregator tells one hospital a different participant list (a subset it picked
    for that victim): contexts differ, share_keys aborts."""
    ps, _, _ = parties(5)
    names = sorted(ps)
    w = CountingTask().initial_weights(0)
    sub = names[:4]
    reqs = {h: train_request(ps[h], sub if h == names[0] else names, w) for h in names}
    for h in set(names) - set(sub) - {names[0]}:
        reqs[h] = train_request(ps[h], names, w)
    replies, refused = _advertise_and_share({h: ps[h] for h in reqs}, reqs)
    assert names[0] in refused


# -- item 2: t, n_C and the round size come from the pinned federation ---------------------

def test_two_party_round_in_a_federation_of_ten_is_refused_before_training():
    """[victim, colluder] in a federation of 10: t=2 would let the colluder subtract its
    own input. n_C = 3 comes from the federation, so the round needs t - n_C >= 2 with
    t <= 2: refused before training. Defence removed (t from len(participants)): accepted
    (MaskConfig().threshold_for(2) == 2)."""
    assert MaskConfig().threshold_for(2) == 2  # what the old rule gave
    ps, task, _ = parties(10)
    names = sorted(ps)
    w = task.initial_weights(0)
    victim = ps[names[0]]
    with pytest.raises(ProtocolError, match="round refused"):
        victim.handle("train", train_request(victim, names[:2], w))
    assert untouched(victim, task)
    # the smallest round the pinned federation allows: n_C + 2 = 5 participants
    with pytest.raises(ProtocolError):
        victim.handle("train", train_request(victim, names[:4], w))
    assert victim.handle("train", train_request(victim, names[:5], w)).status == "trained"


def test_pinned_min_round_size_is_enforced_before_training():
    ps, task, _ = parties(6, protection="none", policy={"min_round_size": 4}, dp=True)
    names = sorted(ps)
    h = ps[names[0]]
    w = task.initial_weights(0)
    with pytest.raises(ProtocolError, match="pinned minimum round size is 4"):
        h.handle("train", train_request(h, names[:3], w))
    assert untouched(h, task)
    assert h.handle("train", train_request(h, names[:4], w)).status == "trained"


def test_aggregator_refuses_to_start_an_unsafe_round():
    """The honest aggregator's RoundMachine aborts a too-small round before sending."""
    ids, fed = federation(10)
    prot = make_server_protection("mask", fed, {}, 10, 7)
    task = CountingTask()
    ps = {i.hospital: make_party(i.hospital, task, Data(5, 0.1), protection="mask",
                                 federation=fed, identity=i, params={},
                                 client_optimizer=ClientOptimizer(), seed=0) for i in ids}
    state = ServerState(0, task.initial_weights(0), ServerOptimizer("fedavg"), bytes(32))
    _, out = RoundMachine(prot, InProcessTransport(ps)).run(state, sorted(ps)[:3],
                                                            evaluate=False)
    assert out.status == "aborted" and "refused" in out.reason and task.trained == []


# -- item 3: the session id and the SecAgg+ graph are derived, not chosen ------------------

def test_chosen_session_id_is_refused():
    ps, task, fed = parties(4, dp=True)
    names = sorted(ps)
    h = ps[names[0]]
    w = task.initial_weights(0)
    for sid in (bytes(32), b"\x01" * 32):
        with pytest.raises(ProtocolError, match="pinned session"):
            h.handle("train", train_request(h, names, w, session_id=sid))
    assert untouched(h, task)
    assert h.protection.pinned.session_id == pin(fed).session_id  # anyone can derive it
    assert pin(fed, pinned="ab" * 32).session_id != pin(fed).session_id


def test_harary_graph_comes_from_the_derived_seed():
    """The hospital's SecAgg+ graph is harary(graph_seed(pinned session, round,
    participants)): nothing in the request other than the round and the list moves it."""
    ps, task, fed = parties(8, params={"graph": "harary", "k": 4})
    names = sorted(ps)
    h = ps[names[0]]
    h.handle("train", train_request(h, names, task.initial_weights(0), rnd=3))
    sid = pin(fed).session_id
    want = graphs.harary_graph(tuple(names), 4, graph_seed(sid, 3, names), 3)
    assert h.client.params.graph == want
    assert graph_seed(sid, 3, names) != graph_seed(sid, 4, names)


def test_round_numbers_are_bounded_by_the_pinned_rounds():
    """Grinding over round numbers is bounded: rounds beyond 2 * rounds + slack refused."""
    ps, task, _ = parties(4, policy={"rounds": 3}, dp=True)
    names = sorted(ps)
    h = ps[names[0]]
    bound = h.protection.pinned.max_round
    assert bound == 2 * 3 + 16
    w = task.initial_weights(0)
    with pytest.raises(ProtocolError, match="beyond the pinned bound"):
        h.handle("train", train_request(h, names, w, rnd=bound + 1))
    assert untouched(h, task)
    assert h.handle("train", train_request(h, names, w, rnd=bound)).status == "trained"


def test_aggregator_runs_in_the_derived_session():
    ps, task, fed = parties(3, protection="none")
    prot = make_server_protection("none", fed, {}, 3, task.size + 1)
    state = ServerState(0, task.initial_weights(0), ServerOptimizer("fedavg"), b"\x07" * 32)
    new, out = RoundMachine(prot, InProcessTransport(ps)).run(state, sorted(ps),
                                                              evaluate=False)
    assert out.status == "completed" and new.session_id == pin(fed).session_id


# -- item 5: a crafted TrainRequest never costs budget ------------------------------------

CRAFTED = {
    "round is a bool": dict(round=True),
    "weights not an array": dict(weights=[0.0] * 6),
    "hash of other weights": dict(model_hash="0" * 64),
    "vector length": dict(vector_length=99),
    "unsorted participants": dict(participants=("h03", "h00", "h01", "h02")),
    "repeated participant": dict(participants=("h00", "h00", "h01", "h02")),
    "stranger": dict(participants=("h00", "h01", "h02", "zz")),
    "not listed": dict(participants=("h01", "h02", "h03")),
    "downgrade": dict(protection="none"),
    "session": dict(session_id=b"s" * 32),
    "wrong-size model": dict(weights=np.zeros(7, np.float32),
                             model_hash=model_hash(np.zeros(7, np.float32)),
                             vector_length=8),
    "params type": dict(params=[1, 2]),
}


@pytest.mark.parametrize("what", sorted(CRAFTED))
def test_crafted_train_request_is_refused_before_any_budget(what):
    ps, task, _ = parties(4, dp=True)
    names = sorted(ps)
    h = ps["h00"]
    req = train_request(h, names, task.initial_weights(0))
    with pytest.raises(ProtocolError):
        h.handle("train", replace(req, **CRAFTED[what]))
    assert untouched(h, task)


def test_impossible_secagg_plus_graph_is_refused_before_training():
    """k = 4 is pinned for 8 hospitals; a round of 7 still works, a round of 5 (k = 4 needs
    >= 5 holders: fine) but of 4 cannot hold a 4-regular graph: before the change the
    ConfigError came from the protection AFTER local training (budget spent)."""
    ps, task, _ = parties(8, params={"graph": "harary", "k": 4, "max_corrupt": 1},
                          dp=True)
    names = sorted(ps)
    h = ps[names[0]]
    with pytest.raises(ProtocolError, match="round refused"):
        h.handle("train", train_request(h, names[:4], task.initial_weights(0)))
    assert untouched(h, task)


# -- item 8: pin the session; bound the example count -------------------------------------

def test_new_session_with_a_newer_round_is_refused_mid_federation():
    ps, task, _ = parties(4)
    names = sorted(ps)
    h = ps[names[0]]
    w = task.initial_weights(0)
    assert h.handle("train", train_request(h, names, w, rnd=1)).status == "trained"
    with pytest.raises(ProtocolError, match="pinned session"):
        h.handle("train", train_request(h, names, w, rnd=2, session_id=b"\x02" * 32))
    assert h.last_round == 1 and len(task.trained) == 1


def test_hospital_over_the_pinned_example_bound_refuses_before_training():
    ps, task, _ = parties(4, params={"max_count": 11}, dp=True)
    names = sorted(ps)
    big = ps[names[3]]  # 13 examples > 11
    with pytest.raises(ProtocolError, match="exceed the pinned bound 11"):
        big.handle("train", train_request(big, names, task.initial_weights(0)))
    assert untouched(big, task)


class InflatingParty:
    """A malicious hospital: claims 10**6 examples in its (plaintext) update."""

    def __init__(self, party: HospitalParty):
        self.party = party

    def handle(self, stage, request):
        reply = self.party.handle(stage, request)
        if isinstance(reply, PlainUpload):
            v = reply.vector.copy()
            v *= 1e6 / v[-1]
            return PlainUpload(v)
        return reply


def test_aggregate_count_beyond_the_pinned_bound_aborts():
    """The aggregator refuses an aggregate whose count exceeds contributors x the pinned
    max_examples (what remains is threat_model §4.5: a count within the bound)."""
    ps, task, fed = parties(3, protection="none", policy={"max_examples": 100})
    prot = make_server_protection("none", fed, {}, 3, task.size + 1,
                                  policy={"max_examples": 100})
    transport = InProcessTransport({h: InflatingParty(p) if h == "h02" else p
                                    for h, p in ps.items()})
    state = ServerState(0, task.initial_weights(0), ServerOptimizer("fedavg"), bytes(32))
    new, out = RoundMachine(prot, transport).run(state, sorted(ps), evaluate=False)
    assert out.status == "aborted" and "pinned bound 100" in out.reason
    np.testing.assert_array_equal(new.weights, state.weights)


# -- issue 16 item 5: personalised metrics stay at the hospital ---------------------------

def test_personalised_metrics_are_not_released():
    ps, task, _ = parties(3, protection="none")
    h = ps["h00"]
    w = task.initial_weights(0)
    rep = h.handle("evaluate", EvalRequest(4, w, model_hash(w), "test", True))
    assert set(rep.sums) == {"global", "val"} and 4 in h.personal
    with pytest.raises(ProtocolError, match="malformed"):
        h.handle("evaluate", EvalRequest(4, w, model_hash(w), "train", False))


def test_config_error_of_min_survivors_is_typed():
    _, fed = federation(7)
    prot = make_server_protection("mask", fed, {}, 7, 5)
    with pytest.raises(ConfigError):
        prot.min_survivors(3)


# -- the node: any handler failure is a clean refusal ---------------------------------------

def test_node_turns_any_handler_exception_into_a_refusal():
    """A bug-triggering request (any exception, not only FedrxError) is answered with an
    Error frame naming only the exception type; the node keeps serving."""
    import queue
    from types import SimpleNamespace

    from fedrx.nodes import wire
    from fedrx.nodes.hospital import HospitalNode
    from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb

    class Boom:
        def handle(self, stage, msg):
            raise ValueError("local value 0.1234")

    node = HospitalNode.__new__(HospitalNode)  # only _answer's collaborators
    node.cfg = SimpleNamespace(hospital="h1")
    node.faults = SimpleNamespace(crash_here=lambda *a: None)
    node.out, node.party = None, None
    out: queue.Queue = queue.Queue()
    hdr = pb.Header(session_id=b"s" * 32, round=1, stage="advertise_keys", seq=1)
    node._answer(out, wire.Incoming(hdr, AdvertiseRequest(1), 10), Boom())
    frame = out.get_nowait()
    assert frame.error.code == "internal" and "ValueError" in frame.error.reason
    assert "0.1234" not in frame.error.reason and out.empty()


def test_round_policy_is_pinned_in_the_task_spec():
    """min_round_size / max_corrupt are optional task settings: absent, a spec keeps its
    hash; set, they reach every party's Pinned policy and the mask parameters."""
    import dataclasses

    from fedrx.nodes.simulate import SimulationConfig
    from fedrx.nodes.taskspec import SHARED, TaskSpec, make_spec

    base = {k: v for k, v in dataclasses.asdict(SimulationConfig(protection="mask")).items()
            if k in SHARED}
    plain = make_spec(base)
    pinned = make_spec(base | {"min_round_size": 3, "max_corrupt": 1})
    assert "min_round_size" not in plain.to_json()["settings"]
    assert pinned.sha256 != plain.sha256
    assert pinned.policy("ab" * 32)["min_round_size"] == 3
    assert pinned.protection_extra() == {"max_corrupt": 1}
    assert pinned.task_config().protection == "mask"
    for bad in (1, True, "3"):
        doc = pinned.to_json()
        doc["settings"]["min_round_size"] = bad
        with pytest.raises(ConfigError, match="min_round_size"):
            TaskSpec.from_json(doc, "t")
