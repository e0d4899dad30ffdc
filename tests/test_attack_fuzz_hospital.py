"""A malicious-aggregator fuzz test over the hospital party (issue 14, acceptance).

Hypothesis drives four real :class:`~fedrx.protocol.hospital.HospitalParty` objects with
``mask`` protection (active, complete graph) through random sequences of well-typed but
adversarial requests in random stage order. A real
:class:`~fedrx.protocol.protections.mask.MaskServer` supplies genuine requests so that
sequences reach every stage; each delivery may be mutated (another round, a request of
another stage, dropped / duplicated / forged advertisements, swapped shares, survivor and
dropped lists rearranged: asking for a survivor's secret-key share, unmask without
signatures), sent to a subset of hospitals, or be a train request with another model,
session, list or length.

Invariants after every request:

* a hospital never crashes: every refusal is a :class:`~fedrx.errors.FedrxError`;
* no hospital reveals both a self-mask share and a secret-key share of the same peer in a
  round, and across the hospitals of a round never t of each for the same owner;
* a DP ledger entry (``begin_round``) is written only by a train request that the hospital
  then answers with a TrainAck (never for a round it refuses or cannot answer).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedrx.errors import FedrxError
from fedrx.protocol.messages import TrainAck, TrainRequest
from fedrx.protocol.protection import RoundContext
from fedrx.protocol.registry import make_party, make_server_protection
from fedrx.protocol.task import ClientOptimizer, FederatedTask, LocalResult, model_hash
from fedrx.secagg.identity import Federation, Identity
from fedrx.secagg.mask.messages import (
    SECRET_KEY,
    SELF_MASK,
    ConsistencyRequest,
    MaskedInputRequest,
    ShareKeysRequest,
    UnmaskReply,
    UnmaskRequest,
)

N = 4
IDS = [Identity.generate(f"h{i}") for i in range(N)]
FED = Federation.of(IDS)
NAMES = sorted(i.hospital for i in IDS)
STAGES = ("advertise_keys", "share_keys", "masked_input", "consistency_check", "unmask")
MUTATIONS = ("none", "round+1", "round-1", "other_stage", "drop_first", "duplicate",
             "forge", "swap", "survivor_as_dropped", "no_signatures", "stranger", "none_obj")


@dataclass
class Data:
    n: int


class Task(FederatedTask):
    size = 5

    def initial_weights(self, seed):
        return np.random.default_rng(seed).normal(size=self.size).astype(np.float32)

    def check_weights(self, weights):
        from fedrx.errors import ProtocolError

        if weights.shape != (self.size,):
            raise ProtocolError("model has the wrong size")

    def local_train(self, weights, data, opt, seed, dp=None):
        return LocalResult((weights + 0.01).astype(np.float32), data.n, 0.0)

    def evaluate(self, weights, data, part="test"):
        from fedrx.medrx.metrics import MetricSums

        return MetricSums()

    def personalize(self, weights, data, opt, seed):
        return weights

    def n_train_examples(self, data):
        return data.n


class LedgerDP:
    """Records every ledger entry (``begin_round``) written."""

    def __init__(self):
        self.entries: list[int] = []

    def begin_round(self, rnd, mh):
        self.entries.append(rnd)
        return ""

    def ledger_head(self):
        return f"head{len(self.entries)}"


def _mutate(req: Any, how: str, pool: dict[str, Any]) -> Any:
    """One adversarial variant of a genuine request."""
    if how == "none" or req is None:
        return req
    if how == "none_obj":
        return None
    if how in ("round+1", "round-1") and hasattr(req, "round"):
        return replace(req, round=req.round + (1 if how == "round+1" else -1))
    if how == "other_stage":
        others = [v for k, v in pool.items() if type(v) is not type(req)]
        return others[0] if others else req
    if isinstance(req, ShareKeysRequest):
        ads = list(req.advertised)
        if how == "drop_first" and ads:
            ads = ads[1:]
        elif how == "duplicate" and ads:
            ads = ads + ads[:1]
        elif how == "forge" and ads:
            ads[0] = replace(ads[0], signature=bytes(64))
        elif how == "swap" and len(ads) > 1:
            ads[0] = replace(ads[1], hospital=ads[0].hospital)
        elif how == "stranger" and ads:
            ads.append(replace(ads[0], hospital="zz"))
        return replace(req, advertised=tuple(ads))
    if isinstance(req, MaskedInputRequest):
        sh = list(req.shares)
        if how == "drop_first" and sh:
            sh = sh[1:]
        elif how == "duplicate" and sh:
            sh = sh + sh[:1]
        elif how == "forge" and sh:
            sh[0] = replace(sh[0], ciphertext=bytes(len(sh[0].ciphertext)))
        elif how == "swap" and len(sh) > 1:
            sh[0], sh[1] = replace(sh[0], sender=sh[1].sender), replace(sh[1],
                                                                      sender=sh[0].sender)
        return replace(req, shares=tuple(sh))
    if isinstance(req, ConsistencyRequest):
        s = list(req.survivors)
        if how == "drop_first" and s:
            s = s[1:]
        elif how == "stranger":
            s = sorted(s + ["zz"])
        elif how == "duplicate" and s:
            s = s + s[:1]
        return replace(req, survivors=tuple(s))
    if isinstance(req, UnmaskRequest):
        if how == "survivor_as_dropped" and req.survivors:
            # the both-shares attack: call a survivor dropped to get its key share too
            return replace(req, survivors=req.survivors[1:],
                           dropped=tuple(sorted(req.dropped + req.survivors[:1])))
        if how == "no_signatures":
            return replace(req, signatures=())
        if how == "drop_first" and req.signatures:
            return replace(req, signatures=req.signatures[1:])
        if how == "duplicate" and req.signatures:
            return replace(req, signatures=req.signatures + req.signatures[:1])
        if how == "forge" and req.signatures:
            return replace(req, signatures=(replace(req.signatures[0],
                                                    signature=bytes(64)),
                                            *req.signatures[1:]))
    return req


class Federation4:
    """Four hospital parties, a genuine server per round, and the invariants."""

    def __init__(self, params: dict | None = None):
        params = params or {}
        self.task = Task()
        self.parties = {
            i.hospital: make_party(i.hospital, self.task, Data(5 + k), protection="mask",
                                   federation=FED, identity=i, params=params,
                                   client_optimizer=ClientOptimizer("sgd", 0.1), seed=0,
                                   dp=LedgerDP())
            for k, i in enumerate(IDS)}
        self.server_prot = make_server_protection("mask", FED, params, N, Task.size + 1)
        self.session = self.server_prot.pinned.session_id
        self.round = 0
        self.next = 0
        self.server: Any = None
        self.alive: list[str] = []
        self.pool: dict[str, Any] = {}
        self.revealed: dict[tuple[int, str, str], set[str]] = {}
        self.t = self.server_prot.min_survivors(N)

    def deliver(self, h: str, stage: str, req: Any) -> Any:
        party = self.parties[h]
        before = len(party.dp.entries)
        try:
            reply = party.handle(stage, req)
        except FedrxError:
            reply = None
        except Exception as exc:  # the invariant: only typed refusals
            raise AssertionError(f"{h} crashed on {stage}: {type(exc).__name__}: {exc}") \
                from exc
        if len(party.dp.entries) > before:
            assert isinstance(reply, TrainAck) and reply.status == "trained", \
                f"{h}: ledger entry for round {party.dp.entries[-1]} it did not answer"
        if isinstance(reply, UnmaskReply):
            rnd = getattr(req, "round", 0)
            kinds: dict[str, set[str]] = {}
            for s in reply.shares:
                kinds.setdefault(s.owner, set()).add(s.kind)
                self.revealed.setdefault((rnd, s.owner, s.kind), set()).add(h)
            for owner, ks in kinds.items():
                assert ks != {SELF_MASK, SECRET_KEY}, f"{h} revealed both shares of {owner}"
            for owner in NAMES:
                b = self.revealed.get((rnd, owner, SELF_MASK), set())
                k = self.revealed.get((rnd, owner, SECRET_KEY), set())
                assert not (len(b) >= self.t and len(k) >= self.t), \
                    f"t self-mask and t key shares of {owner} in round {rnd}"
        return reply

    def train(self, targets: list[str], variant: int, rnd_jump: int) -> None:
        """A new round (or a replay): a TrainRequest to ``targets``, one of them maybe
        given another model / session / list / length (``variant``)."""
        rnd = max(1, self.round + rnd_jump)
        self.round = max(self.round, rnd)
        w = self.task.initial_weights(rnd)
        base = TrainRequest(self.session, rnd, tuple(NAMES), w, model_hash(w), "mask",
                            w.size + 1)
        self.server = self.server_prot.new_server(RoundContext(
            self.session, rnd, tuple(NAMES), w.size + 1, {}, model_hash=model_hash(w)))
        self.alive = list(NAMES)
        self.next = 0
        trap = np.zeros_like(w)
        odd = [base, replace(base, weights=trap, model_hash=model_hash(trap)),
               replace(base, session_id=b"\x01" * 32),
               replace(base, participants=tuple(NAMES[:2])),
               replace(base, participants=tuple(reversed(NAMES))),
               replace(base, vector_length=3), replace(base, protection="none"),
               replace(base, round=10**6)][variant % 8]
        for i, h in enumerate(targets):
            self.deliver(h, "train", odd if i == 0 else base)

    def stage(self, idx: int | None, targets: list[str], how: str) -> None:
        """Stage ``idx`` (None: the server's next one) to ``targets``, mutated by ``how``."""
        if self.server is None:
            return
        if idx is None:
            idx, self.next = self.next, self.next + 1
        stage = STAGES[idx % len(STAGES)]
        try:
            reqs = self.server.requests(stage, self.alive)
        except FedrxError:
            return
        for r in reqs.values():
            self.pool[stage] = r
        replies = {}
        for h in targets:
            req = reqs.get(h, self.pool.get(stage))
            mutated = _mutate(req, how, self.pool)
            reply = self.deliver(h, stage, mutated)
            if reply is not None and h in reqs:
                replies[h] = reply
        self.alive = [h for h in self.alive if h in replies or h not in reqs]
        try:
            self.server.collect(stage, replies)
        except FedrxError:
            self.server = None


TARGETS = st.one_of(st.just(NAMES), st.just(NAMES),
                    st.lists(st.sampled_from(NAMES), min_size=1, max_size=N, unique=True))
ACTION = st.one_of(
    # an honest prefix: a fresh round trained by all and k genuine stages, then stage k+1
    # mutated to some hospitals; whatever follows is adversarial
    st.tuples(st.just("prefix"), TARGETS, st.integers(0, 4),
              st.sampled_from(MUTATIONS[:1] * 3 + MUTATIONS)),
    st.tuples(st.just("next"), TARGETS, st.none(),
              st.sampled_from(MUTATIONS[:1] * 6 + MUTATIONS)),
    st.tuples(st.just("train"), TARGETS, st.sampled_from([0] * 4 + list(range(8))),
              st.sampled_from([1, 1, 1, 0, 2])),
    st.tuples(st.just("stage"), TARGETS, st.integers(0, 4), st.sampled_from(MUTATIONS)),
)


def _run(actions, params: dict | None = None) -> None:
    fed = Federation4(params)
    for kind, targets, a, b in actions:
        if kind == "prefix":  # a genuine stages, then the next one mutated to targets
            fed.train(NAMES, 0, 1)
            for _ in range(a):
                fed.stage(None, NAMES, "none")
            fed.stage(None, list(targets), b)
        elif kind == "train":
            fed.train(list(targets), a, b)
        else:
            fed.stage(a, list(targets), b)  # a None: the server's next stage


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACTION, min_size=1, max_size=16))
def test_fuzz_hospital_party_against_a_malicious_aggregator(actions):
    _run(actions)


HARARY = {"graph": "harary", "k": 2}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACTION, min_size=1, max_size=16))
def test_fuzz_secagg_plus_hospital_party(actions):
    """The same on a SecAgg+ ring (k = 2: each hospital holds shares of two neighbours)."""
    _run(actions, HARARY)


@pytest.mark.parametrize("params", [None, HARARY])
def test_honest_sequence_reaches_the_end(params):
    """The fuzz harness can complete a round (so its sequences reach unmask)."""
    fed = Federation4(params)
    fed.train(NAMES, 0, 1)
    for _ in STAGES:
        fed.stage(None, NAMES, "none")
    assert fed.server is not None and fed.server.result().contributors == tuple(NAMES)


def test_survivor_called_dropped_is_refused():
    """The harness's both-shares mutation on its own: every hospital refuses it."""
    fed = Federation4()
    fed.train(NAMES, 0, 1)
    for _ in STAGES[:-1]:
        fed.stage(None, NAMES, "none")
    reqs = fed.server.requests("unmask", fed.alive)
    for h, req in reqs.items():
        bad = _mutate(req, "survivor_as_dropped", {})
        assert fed.deliver(h, "unmask", bad) is None


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACTION, min_size=1, max_size=30))
def test_fuzz_hospital_party_long(actions):
    _run(actions)
