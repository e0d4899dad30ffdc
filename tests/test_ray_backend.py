"""``fedrx simulate --backend ray``: the same round records as the in-process backend, and
nothing but protocol messages and public data crossing an actor boundary.

A local Ray with 2 CPUs (no dashboard, a small object store, a temporary folder) is started
once for the module and shut down after it (the shared ``local_ray`` fixture,
``tests/ray_cluster.py``).
"""

from __future__ import annotations

import base64
import dataclasses
import json

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray_cluster import local_ray  # noqa: E402, F401  (the shared module fixture)

from fedrx.nodes import codec, ray_backend, ray_transport  # noqa: E402
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


def test_ray_backend_drop_is_the_in_process_drop(synth, tmp_path):
    """``--drop`` is applied inside the actor by the same fault plan: the same survivors."""
    kw = {"rounding_seed": 5, "drop": "hosp02@masked_input:1", "rounds": 1}
    local = run_simulation(_cfg(synth, tmp_path / "local", "mask", "inprocess", **kw))
    remote = run_simulation(_cfg(synth, tmp_path / "ray", "mask", "ray", **kw))
    assert "hosp02" in remote["rounds"][0]["dropped"]
    assert _records(remote) == _records(local)


def _walk(obj, seen_types: set[str]):
    """Every value inside a decoded protocol message (dataclasses, containers)."""
    seen_types.add(type(obj).__name__)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _walk(getattr(obj, f.name), seen_types)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(k, seen_types)
            yield from _walk(v, seen_types)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _walk(v, seen_types)
    else:
        yield obj


def test_only_protocol_messages_and_public_data_cross_actor_boundaries(
        synth, tmp_path, monkeypatch):
    """Record every argument the driver passes to an actor and every value it gets back;
    then fetch (test-only, through Ray's ``__ray_call__``) each actor's private keys and
    encoded records and check none of them is in anything that crossed."""
    sent: list = []
    received: list = []
    actors: list = []
    real_call, real_fetch = ray_transport.call_actor, ray_transport.fetch

    def call(method, verb, *args):
        sent.extend(ray.get(a) if isinstance(a, ray.ObjectRef) else a for a in args)
        out = real_call(method, verb, *args)
        if verb == "remote" and method is not None and hasattr(out, "handle"):
            actors.append(out)
        return out

    def fetch(refs):
        out = real_fetch(refs)
        received.extend(out)
        return out

    for mod in (ray_transport, ray_backend):
        monkeypatch.setattr(mod, "call_actor", call)
        monkeypatch.setattr(mod, "fetch", fetch)
    secrets: list[bytes] = []
    records: list[bytes] = []
    real_close = ray_backend.RayProcess.close

    def close(self):  # before the actors are killed: what the test must not find
        for a in self.actors:
            keys, recs = ray.get(a.__ray_call__.remote(_private_view))
            secrets.extend(keys)
            records.extend(recs)
        real_close(self)

    def _private_view(worker):  # nested: Ray ships it by value
        """Runs INSIDE an actor (test only): its hospitals' raw private keys and the bytes of
        their encoded training records (feature and label matrices)."""
        keys, records = [], []
        for ident in worker.identities.values():
            keys.append(ident._sign.private_bytes_raw())
            keys.append(ident.seal_private().private_bytes_raw())
        for data in worker.data.values():
            records.extend([data.train.x.tobytes(), data.train.y.tobytes()])
        return keys, records

    monkeypatch.setattr(ray_backend.RayProcess, "close", close)
    run_simulation(_cfg(synth, tmp_path / "ray", "mask", "ray", rounds=1))
    assert len(actors) == 2 and len(secrets) == 4 * 2 and len(records) == 4 * 2
    allowed = (str, bytes, int, tuple)
    flat: list = []
    for v in sent + received:
        assert isinstance(v, allowed), type(v)
        flat.extend(v if isinstance(v, tuple) else (v,))
    messages = 0
    blobs: list[bytes] = []
    for v in flat:
        assert isinstance(v, str | bytes | int), type(v)
        if isinstance(v, bytes) and v:
            msg = codec.from_bytes(v)  # every byte string is a wire-codec protocol message
            messages += 1
            types: set[str] = set()
            for leaf in _walk(msg, types):
                if isinstance(leaf, bytes):
                    blobs.append(leaf)
                elif isinstance(leaf, np.ndarray):
                    blobs.append(leaf.tobytes())
            assert not types & {"Identity", "HospitalData", "Patient", "Visit",
                                "Ed25519PrivateKey", "X25519PrivateKey"}, types
            blobs.append(v)
        elif isinstance(v, str) and v.startswith("{"):
            doc = json.loads(v)
            if "config" in doc:  # the build description: settings and hospital ids only
                assert set(doc) == {"config", "hospitals", "params"}
                assert set(doc["params"]) <= {"clip_norm", "threshold", "rounding_seed"}
                assert set(doc["config"]) == {f.name for f in
                                              dataclasses.fields(SimulationConfig)}
            blobs.append(v.encode())
    assert messages > 4 * 4  # train, key, share and masked-input stages at least
    for key in secrets:  # raw, hex or base64 (a JSON string would carry it encoded)
        assert len(key) == 32
        forms = (key, key.hex().encode(), base64.b64encode(key)[:40],
                 base64.urlsafe_b64encode(key)[:40])
        assert not any(f in b for f in forms for b in blobs), \
            "a private key crossed an actor boundary"
    for rec in records:
        assert not any(rec in b for b in blobs), "a hospital's records crossed"



def test_late_refusing_or_malformed_replies_are_dropouts():
    """The transport's gather: a reply after the stage deadline, a refusal and bytes that
    are no protocol message all leave the hospital out of the replies (to the aggregator it
    dropped); the punctual one is decoded."""
    import time

    from fedrx.protocol.messages import EvalRequest, TrainAck

    class Fake:  # nested: Ray ships it by value
        def ping(self):
            return 1

        def handle(self, stage, hospital, request):
            if hospital == "late":
                time.sleep(3.0)
            if hospital == "refuses":
                return b"", "refused: not this round"
            if hospital == "garbage":
                return b"\x00\xffnot an envelope", ""
            return codec.to_bytes(TrainAck(1, hospital, "trained")), ""

    names = ("late", "ok", "refuses", "garbage")
    fake = ray.remote(num_cpus=0)(Fake)
    actors = {h: fake.remote() for h in names}  # one each: an actor answers in order
    ray.get([a.ping.remote() for a in actors.values()])  # started before the clock runs
    transport = ray_transport.RayTransport(actors, deadline_s=1.5)
    req = EvalRequest(1, np.zeros(3), "x" * 64)
    replies = transport.exchange("evaluate", 1, {h: req for h in (*names, "unknown")})
    assert set(replies) == {"ok"} and replies["ok"] == TrainAck(1, "ok", "trained")
    (st,) = transport.take_stats()
    assert st.failures["late"] == "late (stage deadline)"
    assert st.failures["refuses"] == "refused: not this round"
    assert st.failures["garbage"].startswith("malformed reply")
    assert st.failures["unknown"] == "unknown hospital"
    assert st.asked == 5 and st.answered == 1
    for a in actors.values():
        ray.kill(a)
