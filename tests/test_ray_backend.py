"""``fedrx simulate --backend ray``: the same round records as the in-process backend, and
nothing but protocol messages and public data crossing an actor boundary.

A local Ray with 2 CPUs (no dashboard, a small object store, a temporary folder) is started
once for the module and shut down after it (the shared ``local_ray`` fixture,
``tests/ray_cluster.py``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray_boundary import BoundaryWatch  # noqa: E402
from ray_cluster import local_ray  # noqa: E402, F401  (the shared module fixture)

from fedrx.dp.accountants.mechanism import Mechanism  # noqa: E402
from fedrx.dp.accountants.registry import compute_epsilon  # noqa: E402
from fedrx.dp.audit import AuditResult, run_audit  # noqa: E402
from fedrx.dp.ledger import read_entries  # noqa: E402
from fedrx.errors import ConfigError  # noqa: E402
from fedrx.nodes import codec, ray_backend, ray_transport  # noqa: E402
from fedrx.nodes.ray_privacy import RemoteDP  # noqa: E402
from fedrx.nodes.simulate import SimulationConfig, run_simulation  # noqa: E402

pytestmark = pytest.mark.usefixtures("local_ray")  # every test here runs on the local Ray


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from fedrx.medrx.synth.config import SynthConfig
    from fedrx.medrx.synth.writer import generate

    data = tmp_path_factory.mktemp("synth") / "data"
    generate(SynthConfig(hospitals=4, patients=240, seed=7, catalogue="builtin"), data)
    return data


def _cfg(synth, out, protection: str, backend: str, **kw) -> SimulationConfig:
    base = dict(data=str(synth), rounds=2, protection=protection, seed=3, out=str(out),
                hidden=16, min_patients=3, backend=backend)
    base.update(kw)
    return SimulationConfig(**base)


def _records(doc):
    return [(r["round"], r["status"], r["model_hash"], r["contributors"], r["dropped"],
             r["metrics"]) for r in doc["rounds"]]


@pytest.fixture
def one_thread():
    """The in-process side on ONE torch thread, as each actor runs (a float reduction split
    over more threads may differ in its last bits; bit-identical records need the same
    thread count on both sides)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("protection, kw", [("none", {}), ("mask", {"rounding_seed": 11})])
def test_ray_backend_gives_the_in_process_round_records(synth, tmp_path,
                                                        protection, kw):
    local = run_simulation(_cfg(synth, tmp_path / "local", protection, "inprocess", **kw))
    remote = run_simulation(_cfg(synth, tmp_path / "ray", protection, "ray", **kw))
    assert len(local["rounds"]) == 2
    assert all(r["status"] == "completed" for r in remote["rounds"])
    assert _records(remote) == _records(local)
    assert remote["initial_model_hash"] == local["initial_model_hash"]
    sel_l, sel_r = (np.load(tmp_path / d / "selected_model.npy") for d in ("local", "ray"))
    assert np.array_equal(sel_l, sel_r)


@pytest.mark.usefixtures("one_thread")
def test_ray_backend_drop_is_the_in_process_drop(synth, tmp_path):
    """``--drop`` is applied inside the actor by the same fault plan: the same survivors."""
    kw = {"rounding_seed": 5, "drop": "hosp02@masked_input:1", "rounds": 1}
    local = run_simulation(_cfg(synth, tmp_path / "local", "mask", "inprocess", **kw))
    remote = run_simulation(_cfg(synth, tmp_path / "ray", "mask", "ray", **kw))
    assert "hosp02" in remote["rounds"][0]["dropped"]
    assert _records(remote) == _records(local)


def _dp_cfg(synth, out, backend: str, **kw) -> SimulationConfig:
    base = dict(dp=True, epsilon=8.0, accountant="rdp", personalize=False, budget_store="off",
                dp_batch=30)
    return _cfg(synth, out, kw.pop("protection", "mask"), backend, **(base | kw))


def _epsilons(doc) -> list[dict[str, tuple[float, float, bool]]]:
    return [{h: (p["epsilon"], p["delta"], p["refused"]) for h, p in r["privacy"].items()}
            for r in doc["rounds"]]


def _audited(run: Path) -> AuditResult:
    """What ``fedrx audit RUN`` checks (the same function), asserted clean and pinned."""
    result = run_audit(run)
    assert result.exit_code == 0, [str(f) for f in result.findings]
    assert result.pins == str(run.resolve() / "federation.json")
    assert all(h.signatures == "pinned" and h.chain and h.recomputed for h in result.hospitals)
    return result


def test_local_dp_on_ray_charges_what_the_in_process_run_charges(synth, tmp_path):
    """``--dp on``: each hospital's HospitalDP lives in its actor; the accountant (same
    mechanism, same steps) gives the in-process epsilons to the last bit, though the noise
    draws differ; the actors' signed ledgers are where ``fedrx audit`` looks and verify."""
    kw = {"protection": "none"}  # the accountant is blind to it; masking: the tests below
    local = run_simulation(_dp_cfg(synth, tmp_path / "local", "inprocess", **kw))
    remote = run_simulation(_dp_cfg(synth, tmp_path / "ray", "ray", **kw))
    assert [r["status"] for r in remote["rounds"]] == ["completed"] * 2
    assert _epsilons(remote) == _epsilons(local)
    assert remote["dp"] == local["dp"]  # mechanism and epsilon of every hospital
    assert all(0 < d["epsilon"] <= 8.0 for d in remote["dp"].values())
    for h in remote["dp"]:
        entries = read_entries(tmp_path / "ray" / "ledger" / f"{h}.jsonl")
        assert [e["round"] for e in entries] == [1, 2]
        assert all(e["signature"] and e["hospital"] == h for e in entries)
        assert remote["rounds"][1]["ledger_heads"][h] == entries[1]["entry_hash"]
        assert (tmp_path / "ray" / "identities" / f"{h}.pub.json").is_file()
    result = _audited(tmp_path / "ray")
    assert result.ledgers == 4 and result.entries == 8


def test_distributed_dp_on_ray(synth, tmp_path, monkeypatch):
    """``--dp distributed``: the discrete-Gaussian shares are drawn inside the actors (no
    noise draw, nor any hospital's noised share before masking, crosses) and only their
    masked sum is released; every round charges one step of the honest shares' sigma (the
    accountant replayed here); the record names the survivor floor; the audit is clean."""
    watch = BoundaryWatch()
    watch.install(monkeypatch)
    doc = run_simulation(_dp_cfg(synth, tmp_path / "ray", "ray", dp_mode="distributed",
                                 dp_k=1, rounds=2))
    watch.check({"clip_norm", "min_contributors", "noisy_shares"}, hospitals=4, dp=True)
    assert [r["status"] for r in doc["rounds"]] == ["completed"] * 2
    assert all(r["distributed"] == {"survivors": 4, "min_survivors": 3} for r in doc["rounds"])
    for h, d in doc["dp"].items():
        assert d["mechanism"] == "distributed" and d["share_kind"] == "discrete"
        assert d["shares"] == 4 and d["honest_shares"] == 3
        step = Mechanism(d["sample_rate"], d["charged_noise_multiplier"], 1)
        assert [r["privacy"][h]["epsilon"] for r in doc["rounds"]] == \
            [compute_epsilon([step] * r, d["delta"], "rdp") for r in (1, 2)]
        entries = read_entries(tmp_path / "ray" / "ledger" / f"{h}.jsonl")
        assert len(entries) == 2 and all(e["distributed"]["shares"] == 4 for e in entries)
    _audited(tmp_path / "ray")


@pytest.mark.slow
def test_ray_actors_carry_the_budget_of_earlier_runs_as_in_process(synth, tmp_path):
    """The driver's ``open_budgets`` writes each hospital's carry file into the run folder
    and the actor's ledger reads it there: after an earlier run on the same patients, a Ray
    run's ledgers compose the earlier charges exactly as the in-process run's do."""
    import shutil

    store = tmp_path / "store"
    run_simulation(_dp_cfg(synth, tmp_path / "first", "inprocess", protection="none",
                           rounds=1, epsilon=2.0, budget_store=str(store)))
    shutil.copytree(store, tmp_path / "store-ray")
    kw = dict(protection="none", rounds=1)
    local = run_simulation(_dp_cfg(synth, tmp_path / "local", "inprocess",
                                   budget_store=str(store), **kw))
    remote = run_simulation(_dp_cfg(synth, tmp_path / "ray", "ray",
                                    budget_store=str(tmp_path / "store-ray"), **kw))
    assert _epsilons(remote) == _epsilons(local)
    for h, d in remote["dp"].items():
        assert (tmp_path / "ray" / "budget" / f"{h}.json").is_file()
        # the noise calibrated to what remains after the carried spend: the in-process one
        assert d == local["dp"][h] and d["epsilon"] <= 8.0
    assert all(a.carried_runs == 1 for a in _audited(tmp_path / "ray").hospitals)


def test_the_driver_takes_only_public_figures_of_its_own_hospitals(monkeypatch):
    """``refresh_privacy``: one ``privacy()`` call per actor fills the RemoteDP proxies; an
    actor that sends a figure beyond the public ones (say, a noise vector), figures of a
    hospital it does not own, or none for one it owns is refused, one line each."""
    import json

    class Actor:  # the answer of its privacy() call
        def __init__(self, figures):
            self.figures = figures

        def privacy(self):
            return json.dumps(self.figures)

    monkeypatch.setattr(ray_backend, "call_actor", lambda method, verb, *a: method())
    monkeypatch.setattr(ray_backend, "fetch", lambda refs: list(refs))
    fig = {"epsilon": 1.5, "delta": 1e-5, "mode": "distributed", "min_survivors": 3,
           "describe": {"mechanism": "distributed", "k": 1}}

    def process(a_figs, b_figs):
        a, b = Actor(a_figs), Actor(b_figs)
        proc = ray_backend.RayProcess(SimulationConfig(dp=True), None, None, None, [a, b])
        for h, actor in (("h1", a), ("h2", a), ("h3", b)):
            proc.parties[h] = ray_backend.RemoteHospital(h, actor, RemoteDP(h))
        return proc

    proc = process({"h1": fig, "h2": fig | {"epsilon": 2.0}}, {"h3": fig})
    proc.refresh_privacy()
    assert [proc.parties[h].dp.epsilon() for h in ("h1", "h2", "h3")] == [1.5, 2.0, 1.5]
    dp = proc.parties["h1"].dp
    assert (dp.delta, dp.mode, dp.min_survivors()) == (1e-5, "distributed", 3)
    assert dp.describe() == fig["describe"] and dp.describe() is not dp.describe()
    for a_figs, b_figs, why in (
            ({"h1": fig | {"noise": [0.1, 0.2]}, "h2": fig}, {"h3": fig}, "malformed"),
            ({"h1": fig | {"epsilon": float("nan")}, "h2": fig}, {"h3": fig}, "malformed"),
            ({"h1": fig, "h2": fig, "h3": fig}, {"h3": fig}, "does not own"),
            ({"h1": fig}, {"h3": fig}, "no privacy figures of h2")):
        with pytest.raises(ConfigError, match=why):
            process(a_figs, b_figs).refresh_privacy()


def test_an_actor_that_cannot_see_the_run_folder_refuses_dp(synth, tmp_path, monkeypatch):
    """Ledgers are written by the actors into the run folder: an actor that does not see the
    federation file the driver wrote there (a cluster node without the shared folder:
    simulated by the driver writing it elsewhere) refuses to enroll, with one line, before
    any ledger exists."""
    elsewhere = tmp_path / "driver-only"
    real = ray_backend.write_run_federation
    monkeypatch.setattr(ray_backend, "write_run_federation",
                        lambda _run, fed: real(elsewhere, fed))
    with pytest.raises(ConfigError, match="not visible there") as exc:
        run_simulation(_dp_cfg(synth, tmp_path / "run", "ray", rounds=1))
    assert "\n" not in str(exc.value) and "mounts at the same path" in str(exc.value)
    assert (elsewhere / "federation.json").is_file()
    assert not (tmp_path / "run" / "ledger").exists()


def test_only_protocol_messages_and_public_data_cross_actor_boundaries(
        synth, tmp_path, monkeypatch):
    """A local-DP round with masking: record every argument the driver passes to an actor
    and every value it gets back; then fetch (test-only, through Ray's ``__ray_call__``) each
    actor's private keys (identity and ledger signing key), encoded records, and what
    probes inside it kept: each hospital's protected input (its update with the DP-SGD
    noise, before masking), that input's ring encoding and every Gaussian noise draw. None
    of them is in anything that crossed; only public privacy figures did
    (``tests/ray_boundary.py``)."""
    watch = BoundaryWatch()
    watch.install(monkeypatch)
    doc = run_simulation(_dp_cfg(synth, tmp_path / "ray", "ray", rounds=1))
    assert doc["rounds"][0]["status"] == "completed"
    messages = watch.check({"clip_norm", "threshold", "rounding_seed"}, hospitals=4, dp=True)
    assert messages > 4 * 4  # train, key, share and masked-input stages at least


@pytest.mark.slow
@pytest.mark.parametrize("leaked, match", [
    ("packed", "packed"),  # its DP-noised input as the ring vector, in place of the masked
    ("mask_secret", "a private key crossed"),  # its self-mask seed b in the first bytes
])
def test_the_boundary_check_catches_an_actor_that_leaks(synth, tmp_path, monkeypatch,
                                                         leaked, match):
    """The check above is not vacuous: a worker that sends, in place of its masked vector,
    its hospital's DP-noised input encoded as the ring vector (what a skipped mask would
    send), or that slips its self-mask seed ``b`` (drawn in share_keys) into the first bytes
    of its masked vector, is caught."""

    def leak(worker):  # nested: Ray ships it by value; runs inside each actor
        for party in worker.parties.values():
            def handle(stage, request, real=party.handle):
                reply = real(stage, request)
                if stage == "masked_input":
                    secret = worker.__dict__["_test_capture"][leaked][-1]
                    packed = secret if leaked == "packed" else secret + reply.packed[32:]
                    reply = dataclasses.replace(reply, packed=packed)
                return reply
            party.handle = handle

    watch = BoundaryWatch()
    watch.install(monkeypatch, then=leak)
    run_simulation(_dp_cfg(synth, tmp_path / "ray", "ray", rounds=1))
    with pytest.raises(AssertionError, match=match):
        watch.check({"clip_norm", "threshold", "rounding_seed"}, hospitals=4, dp=True)


def test_late_refusing_or_malformed_replies_are_dropouts():
    """The transport's gather, one streaming call per actor: a reply after the stage
    deadline, a refusal, bytes that are no protocol message, an item for a hospital the
    actor was not asked about (or a second one), an actor that fails mid-stage and one that
    ends its stream early all leave the hospitals concerned out of the replies (to the
    aggregator they dropped); the punctual ones are decoded."""
    import time

    from fedrx.nodes.ray_stage import decode_plan
    from fedrx.protocol.messages import EvalRequest, TrainAck

    class Fake:  # nested: Ray ships it by value
        def ping(self):
            return 1

        def handle_stage(self, stage, plan, *payloads):
            for h, _i in decode_plan(plan, len(payloads)):
                ok = codec.to_bytes(TrainAck(1, h, "trained"))
                if h == "late":
                    time.sleep(3.0)
                if h == "refuses":
                    yield h, b"", "refused: not this round"
                elif h == "garbage":
                    yield h, b"\x00\xffnot an envelope", ""
                elif h == "liar":  # answers for another actor's hospital, then twice
                    yield "ok", codec.to_bytes(TrainAck(1, "ok", "refused")), ""
                    yield h, ok, ""
                    yield h, codec.to_bytes(TrainAck(1, h, "refused")), ""
                elif h == "crashes":
                    raise RuntimeError("worker bug")
                elif h == "quits":
                    return
                else:
                    yield h, ok, ""

    names = ("late", "ok", "refuses", "garbage", "liar", "crashes", "quits")
    fake = ray.remote(num_cpus=0)(Fake)
    actors = {h: fake.remote() for h in names}  # one each: an actor answers in order
    ray.get([a.ping.remote() for a in actors.values()])  # started before the clock runs
    transport = ray_transport.RayTransport(actors, deadline_s=1.5)
    req = EvalRequest(1, np.zeros(3), "x" * 64)
    replies = transport.exchange("evaluate", 1, {h: req for h in (*names, "unknown")})
    assert set(replies) == {"ok", "liar"}
    assert replies["ok"] == TrainAck(1, "ok", "trained")  # not the liar's item for it
    assert replies["liar"] == TrainAck(1, "liar", "trained")  # its first item only
    (st,) = transport.take_stats()
    assert st.failures["late"] == "late (stage deadline)"
    assert st.failures["refuses"] == "refused: not this round"
    assert st.failures["garbage"].startswith("malformed reply")
    assert st.failures["unknown"] == "unknown hospital"
    assert st.failures["crashes"].startswith("worker failed")
    assert st.failures["quits"] == "no answer from its worker"
    assert st.asked == 8 and st.answered == 2
    for a in actors.values():
        ray.kill(a)
