"""The Ray driver holds one model and the aggregate, not every hospital's update: each
masked input is decoded when its actor's reply is fetched, folded into the running sum and
dropped before the next one is decoded (:mod:`fedrx.nodes.ray_transport`,
:mod:`fedrx.secagg.absorb`)."""

from __future__ import annotations

import gc
import weakref

import pytest

ray = pytest.importorskip("ray")

from ray_cluster import local_ray  # noqa: E402, F401  (the shared module fixture)

from fedrx.nodes import codec  # noqa: E402
from fedrx.nodes.simulate import SimulationConfig, run_simulation  # noqa: E402
from fedrx.secagg.mask.messages import MaskedInput  # noqa: E402

pytestmark = pytest.mark.usefixtures("local_ray")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from fedrx.medrx.synth.config import SynthConfig
    from fedrx.medrx.synth.writer import generate

    data = tmp_path_factory.mktemp("synth") / "data"
    generate(SynthConfig(hospitals=6, patients=240, seed=4, catalogue="builtin"), data)
    return data


def test_ray_driver_never_holds_two_masked_inputs(synth, tmp_path, monkeypatch):
    live: weakref.WeakSet = weakref.WeakSet()
    alive_at_decode: list[int] = []
    real = codec.from_bytes

    def from_bytes(data, *a, **kw):
        msg = real(data, *a, **kw)
        if isinstance(msg, MaskedInput):
            gc.collect()
            alive_at_decode.append(len(live))
            live.add(msg)
        return msg

    monkeypatch.setattr(codec, "from_bytes", from_bytes)
    doc = run_simulation(SimulationConfig(
        data=str(synth), rounds=2, protection="mask", seed=2, out=str(tmp_path / "run"),
        hidden=16, min_patients=3, backend="ray", rounding_seed=3))
    assert [r["status"] for r in doc["rounds"]] == ["completed", "completed"]
    assert all(len(r["contributors"]) == 6 for r in doc["rounds"])
    # one decode per hospital and round; none of the earlier ones still alive at any of them
    assert alive_at_decode == [0] * 12


def test_stage_deadline_reaches_the_ray_transport(synth, tmp_path):
    """``--stage-deadline``: hospitals that have not answered in time have dropped (here a
    deadline no training can meet: the round aborts, the model is unchanged); it is refused
    in process, where it would mean nothing."""
    from fedrx.errors import ConfigError

    doc = run_simulation(SimulationConfig(
        data=str(synth), rounds=1, protection="mask", seed=2, out=str(tmp_path / "late"),
        hidden=16, min_patients=3, backend="ray", stage_deadline=1e-3, personalize=False))
    (rec,) = doc["rounds"]
    assert rec["status"] == "aborted" and rec["trained"] == []
    assert all(why == "train: late (stage deadline)" for why in rec["dropped"].values())
    assert len(rec["dropped"]) == 6
    assert rec["model_hash"] == doc["initial_model_hash"]
    with pytest.raises(ConfigError, match="--stage-deadline applies to --backend ray only"):
        SimulationConfig(data=str(synth), stage_deadline=5.0).validate()


def test_a_relative_data_path_reaches_actors_in_another_folder(synth, tmp_path, monkeypatch):
    """The actors do not share the driver's working folder (here: the driver moves to
    another one after the cluster started): a relative ``--data`` is made absolute before
    it is shipped, so every actor reads the same files."""
    import shutil

    shutil.copytree(synth, tmp_path / "rel-data")
    monkeypatch.chdir(tmp_path)
    doc = run_simulation(SimulationConfig(
        data="rel-data", rounds=1, protection="none", seed=2, out="out", hidden=16,
        min_patients=3, backend="ray", personalize=False))
    assert doc["rounds"][0]["status"] == "completed"
    assert len(doc["rounds"][0]["contributors"]) == 6
