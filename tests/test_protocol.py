"""Federation core: round state machine, weighting, dropouts, validation, determinism."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import fedrx
from fedrx.errors import ConfigError, ProtocolError
from fedrx.protocol.aggregator import ALLOWED, Phase, RoundMachine
from fedrx.protocol.api import build_federated_averaging_process
from fedrx.protocol.faults import FaultPlan, parse_drops
from fedrx.protocol.messages import TrainRequest
from fedrx.protocol.optim import ServerOptimizer, fedadam
from fedrx.protocol.task import FederatedTask, LocalResult, model_hash
from fedrx.protocol.transport import InProcessTransport


@dataclass
class ToyData:
    n: int
    shift: float


class ToyTask(FederatedTask):
    """Local training adds ``shift`` to every weight; evaluation reports nothing."""

    size = 4

    def initial_weights(self, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).normal(size=self.size).astype(np.float32)

    def local_train(self, weights, data, opt, seed, dp=None):
        return LocalResult((weights + data.shift).astype(np.float32), data.n, 0.0)

    def evaluate(self, weights, data, part="test"):
        from fedrx.medrx.metrics import MetricSums

        return MetricSums()

    def personalize(self, weights, data, opt, seed):
        return weights

    def n_train_examples(self, data):
        return data.n


HOSPITALS = {"a": ToyData(10, 1.0), "b": ToyData(30, -1.0), "c": ToyData(60, 0.5)}


def expected_delta(names):
    n = sum(HOSPITALS[h].n for h in names)
    return sum(HOSPITALS[h].n * HOSPITALS[h].shift for h in names) / n


def test_weighted_fedavg_is_exact():
    p = build_federated_averaging_process(ToyTask(), evaluate=False)
    s0 = p.initialize()
    s1, out = p.next(s0, HOSPITALS)
    assert out.status == "completed" and out.contributors == ["a", "b", "c"]
    assert out.examples == 100
    np.testing.assert_allclose(s1.weights, s0.weights + expected_delta("abc"), rtol=1e-6)
    assert s1.round == 1 and out.phases == ["select", "train", "protect", "update", "done"]


@pytest.mark.parametrize("stage", ["train", "upload"])
def test_dropout_at_each_stage_of_none_is_survived(stage):
    p = build_federated_averaging_process(ToyTask(), evaluate=False, drops=f"b@{stage}:1")
    s0 = p.initialize()
    s1, out = p.next(s0, HOSPITALS)
    assert out.status == "completed" and out.contributors == ["a", "c"]
    assert out.dropped["b"].startswith(stage)
    np.testing.assert_allclose(s1.weights, s0.weights + expected_delta("ac"), rtol=1e-6)
    s2, out2 = p.next(s1, HOSPITALS)  # back in round 2
    assert out2.contributors == ["a", "b", "c"]


def test_dropout_during_evaluation_keeps_the_update():
    p = build_federated_averaging_process(ToyTask(), drops="a@evaluate:1")
    s0 = p.initialize()
    s1, out = p.next(s0, HOSPITALS)
    assert out.status == "completed" and "a" not in out.hospital_metrics
    assert set(out.hospital_metrics) == {"b", "c"}
    assert out.contributors == ["a", "b", "c"]
    np.testing.assert_allclose(s1.weights, s0.weights + expected_delta("abc"), rtol=1e-6)


def test_everyone_dropping_aborts_and_keeps_the_model():
    p = build_federated_averaging_process(ToyTask(), evaluate=False,
                                          drops="a@upload:1,b@upload:1,c@train:1")
    s0 = p.initialize()
    s1, out = p.next(s0, HOSPITALS)
    assert out.status == "aborted" and "no hospital uploaded" in out.reason
    np.testing.assert_array_equal(s1.weights, s0.weights)
    assert s1.round == 1  # the round id is consumed: a retry is round 2, not a replay
    s2, out2 = p.next(s1, HOSPITALS)
    assert out2.round == 2 and out2.status == "completed"


def test_fault_spec_validation():
    assert parse_drops("h2@share_keys:1") == parse_drops(["h2@share_keys:1"])
    with pytest.raises(ConfigError, match="HOSPITAL@STAGE:ROUND"):
        parse_drops("h2-share:1")
    p = build_federated_averaging_process(ToyTask(), drops="zz@upload:1")
    p.enroll(HOSPITALS)
    with pytest.raises(ConfigError, match="unknown hospital"):
        p.validate_drops(3)
    p.drops = "a@share_keys:1"
    with pytest.raises(ConfigError, match="unknown stage"):
        p.validate_drops(3)
    p.drops = "a@upload:9"
    with pytest.raises(ConfigError, match="outside"):
        p.validate_drops(3)
    plan = FaultPlan(parse_drops("a@upload:2"), ("train", "upload"))
    assert not plan.silent("a", "train", 2) and plan.silent("a", "upload", 2)
    assert not plan.silent("a", "upload", 1)


def test_hospital_rejects_replay_wrong_hash_and_downgrade():
    p = build_federated_averaging_process(ToyTask(), evaluate=False)
    s0 = p.initialize()
    s1, _ = p.next(s0, HOSPITALS)
    party = p.parties["a"]
    w = s0.weights
    # the round ran in the session derived from the pinned federation (issue 14 item 3)
    assert s1.session_id == party.protection.pinned.session_id != s0.session_id
    base = dict(session_id=s1.session_id, participants=("a", "b", "c"), weights=w,
                vector_length=w.size + 1)
    with pytest.raises(ProtocolError, match="replay"):
        party.handle("train", TrainRequest(round=1, model_hash=model_hash(w),
                                           protection="none", **base))
    with pytest.raises(ProtocolError, match="hash"):
        party.handle("train", TrainRequest(round=5, model_hash="00" * 32, protection="none",
                                           **base))
    # a protection downgrade or upgrade by the aggregator is refused
    p2 = build_federated_averaging_process(ToyTask(), evaluate=False)
    p2.enroll(HOSPITALS)
    base["session_id"] = p2.parties["a"].protection.pinned.session_id
    with pytest.raises(ProtocolError, match="requires 'none'"):
        p2.parties["a"].handle("train", TrainRequest(round=1, model_hash=model_hash(w),
                                                     protection="mask", **base))
    with pytest.raises(ProtocolError, match="outside a trained round"):
        p2.parties["b"].handle("upload", None)


def test_late_hospital_is_refused():
    p = build_federated_averaging_process(ToyTask(), evaluate=False)
    s = p.initialize()
    s, _ = p.next(s, HOSPITALS)
    with pytest.raises(ConfigError, match="joined after enrollment"):
        p.next(s, {**HOSPITALS, "mallory": ToyData(5, 9.0)})


def test_round_transitions_are_validated():
    assert Phase.UPDATE not in ALLOWED[Phase.SELECT]
    p = build_federated_averaging_process(ToyTask(), evaluate=False)
    p.enroll(HOSPITALS)
    m = RoundMachine(p._server_protection, InProcessTransport(p.parties))
    from fedrx.protocol.aggregator import RoundOutcome

    with pytest.raises(ProtocolError, match="invalid round transition"):
        m._go(Phase.UPDATE, RoundOutcome(1))


def test_server_optimizers():
    w = np.zeros(3, np.float32)
    d = np.array([1.0, -2.0, 0.0])
    np.testing.assert_allclose(ServerOptimizer("fedavg", lr=0.5).step(w, d), 0.5 * d)
    opt = fedadam(lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    w1 = opt.step(w, d)
    m = 0.1 * d
    v = 0.99 * 1e-6 + 0.01 * d**2
    np.testing.assert_allclose(w1, 0.1 * m / (np.sqrt(v) + 1e-3), rtol=1e-5)
    with pytest.raises(ConfigError):
        ServerOptimizer("sgdm")


def test_public_api_is_tff_style():
    process = fedrx.build_federated_averaging_process(
        ToyTask(), client_optimizer=fedrx.ClientOptimizer("sgd", lr=0.1),
        server_optimizer=fedrx.fedavg(), protection="none", evaluate=False)
    state = process.initialize()
    state, outcome = process.next(state, HOSPITALS)
    assert state.round == 1 and outcome.status == "completed"


def test_unknown_protection():
    with pytest.raises(ConfigError, match="unknown protection"):
        build_federated_averaging_process(ToyTask(), protection="rot13").enroll(HOSPITALS)
