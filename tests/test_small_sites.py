"""Every site its own hospital (issue 18: the eICU demo without merging): ``min_patients = 1``
keeps every site that has a patient, a hospital of 1 or 2 patients trains on all of them
and reports empty validation/test parts, and a federation with such hospitals completes
with them among the contributors and finite pooled metrics."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fedrx.errors import ConfigError
from fedrx.medrx.metrics import MetricSums
from fedrx.medrx.partition import partition
from fedrx.medrx.prepare import SPLIT_MIN_PATIENTS, prepare, split_hospital
from fedrx.medrx.records import Cohort, Patient, Visit, write_jsonl
from fedrx.medrx.split import split_patients
from fedrx.protocol.runner import RunHooks

_VISIT = (Visit("v", "t", ("d",), (), ("L",)),)


def _patients(site: str, n: int) -> list[Patient]:
    return [Patient(f"{site}-{i}", site, _VISIT) for i in range(n)]


def _cohort(sizes: dict[str, int]) -> Cohort:
    return Cohort("c", [p for h, n in sizes.items() for p in _patients(h, n)])


def _ids(patients: list[Patient]) -> list[str]:
    return [p.patient_id for p in patients]


# -- partition ------------------------------------------------------------------------------

def test_min_patients_1_keeps_every_site_as_its_own_hospital():
    c = _cohort({"a": 1, "b": 2, "c": 3, "d": 10, "e": 25})
    parts = partition(c, None, min_patients=1)
    assert sorted(parts) == ["a", "b", "c", "d", "e"]  # no group-... name
    assert {h: len(p) for h, p in parts.items()} == {"a": 1, "b": 2, "c": 3, "d": 10, "e": 25}
    assert all(p.hospital == h for h, ps in parts.items() for p in ps)
    # the default merging is unchanged: at 3, the 1- and 2-patient sites form one group
    merged = partition(c, None, min_patients=3)
    assert sorted(merged) == ["c", "d", "e", "group-a-and-1"]
    assert len(merged["group-a-and-1"]) == 3


@pytest.mark.parametrize("bad", [0, -2])
def test_min_patients_below_1_is_refused(bad):
    with pytest.raises(ConfigError, match="--min-patients must be >= 1"):
        partition(_cohort({"a": 5, "b": 5}), None, min_patients=bad)


# -- the per-hospital split ---------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2])
def test_a_hospital_of_1_or_2_patients_trains_on_all_of_them(n):
    pats = _patients("s", n)
    for seed in (0, 1, 5):
        s = split_hospital(pats, seed=seed)
        assert sorted(_ids(s.train)) == sorted(_ids(pats)) and s.val == [] and s.test == []


def test_the_split_from_3_patients_on_is_unchanged():
    # known answers of today's split (seed 0), and equality with split_patients in general
    s3, s7 = (split_hospital(_patients("s", n), seed=0) for n in (3, 7))
    assert (_ids(s3.train), _ids(s3.val), _ids(s3.test)) == (["s-2"], ["s-1"], ["s-0"])
    assert (_ids(s7.train), _ids(s7.val), _ids(s7.test)) == (
        ["s-0", "s-5", "s-6", "s-1", "s-2"], ["s-3"], ["s-4"])
    for n in range(SPLIT_MIN_PATIENTS, 41):
        for seed in (0, 3):
            pats = _patients("h7", n)
            assert split_hospital(pats, seed=seed) == split_patients(pats, seed=seed)


def test_split_hospital_refuses_several_hospitals():
    with pytest.raises(ConfigError, match="ONE hospital"):
        split_hospital(_patients("a", 2) + _patients("b", 2), seed=0)


# -- a federation with 1- and 2-patient hospitals -----------------------------------------

def write_tiny_sites(root: Path) -> Path:
    """A synthetic cohort (builtin catalogue, 90 patients) in which two sites hold 1 and 2
    patients: ``tiny1`` and ``tiny2`` are carved out of ``hosp03``; ``root/tiny.jsonl``."""
    from fedrx.medrx.datasets import load_dataset
    from fedrx.medrx.synth.config import SynthConfig
    from fedrx.medrx.synth.writer import generate

    generate(SynthConfig(hospitals=3, patients=90, seed=7, catalogue="builtin"), root / "s")
    patients = sorted(load_dataset(root / "s").patients, key=lambda p: p.patient_id)
    h3 = [p for p in patients if p.hospital == "hosp03"]
    site = {h3[0].patient_id: "tiny1", h3[1].patient_id: "tiny2", h3[2].patient_id: "tiny2"}
    out = [Patient(p.patient_id, site.get(p.patient_id, p.hospital), p.visits)
           for p in patients]
    write_jsonl(root / "tiny.jsonl", out)
    return root / "tiny.jsonl"


@pytest.fixture(scope="module")
def tiny_sites(tmp_path_factory):
    return write_tiny_sites(tmp_path_factory.mktemp("tiny"))


def _settings(data, **kw):
    base = dict(data=str(data), mappings="", min_visits=1, hospitals=None, seed=3,
                partition="iid", min_patients=1, model="mlp", hidden=16, vocabulary="data")
    return SimpleNamespace(**(base | kw))


def test_prepare_keeps_the_tiny_sites_with_train_only_splits(tiny_sites):
    prep = prepare(_settings(tiny_sites))
    assert sorted(prep.hospitals) == ["hosp01", "hosp02", "hosp03", "tiny1", "tiny2"]
    for h, n in (("tiny1", 1), ("tiny2", 2)):
        s, d = prep.splits[h], prep.hospitals[h]
        assert (len(s.train), len(s.val), len(s.test)) == (n, 0, 0)
        assert d.train.n_patients == n and len(d.val) == 0 and len(d.test) == 0
        # an empty part evaluates to zero-count sums, which pool to nothing
        w = prep.task.initial_weights(0)
        assert prep.task.evaluate(w, d, "test") == MetricSums()
        assert prep.task.evaluate(w, d, "val") == MetricSums()
    assert prep.task.pool_metrics([{"global": MetricSums().as_dict()}]) == {}
    assert prep.describe()["hospitals"]["tiny1"]["test_patients"] == 0


@pytest.mark.parametrize("protection", ["none", "mask"])
def test_a_federation_with_1_and_2_patient_hospitals_completes(tiny_sites, tmp_path,
                                                               protection):
    """Two rounds of the in-process federation (the runner ``fedrx simulate`` uses), with
    personalised evaluation: the tiny hospitals contribute; pooled metrics are finite and
    equal those of the other hospitals alone (the tiny ones add zero counts)."""
    from fedrx.nodes.simulate import SimulationConfig, start_process

    cfg = SimulationConfig(data=str(tiny_sites), min_patients=1, rounds=2, hidden=16, seed=3,
                           protection=protection, personalize=True, out=str(tmp_path / "o"),
                           rounding_seed=11 if protection == "mask" else None)
    prep = prepare(cfg)
    process, state = start_process(cfg, prep, tmp_path / "o")
    res = process.runner(prep.hospitals, cfg.rounds, personalize=True,
                         hooks=RunHooks(sorted(prep.hospitals))).run(state)
    assert [r["status"] for r in res.rounds] == ["completed", "completed"]
    for r in res.rounds:
        assert {"tiny1", "tiny2"} <= set(r["contributors"])
        assert r["contributors"] == sorted(prep.hospitals)
        for part in ("metrics", "val_metrics"):
            assert r[part] and all(math.isfinite(v) for v in r[part].values())
        assert r["hospital_metrics"]["tiny1"]["global"]["patients"] == 0
        big = [{"global": m["global"]} for h, m in r["hospital_metrics"].items()
               if not h.startswith("tiny")]
        assert r["metrics"] == prep.task.pool_metrics(big)
    assert r["metrics"]["patients"] == sum(len(s.test) for s in prep.splits.values())
    # personalised evaluation ran at the tiny hospitals too (empty part: zero counts)
    assert process.parties["tiny2"].personal[2]["patients"] == 0
    assert process.parties["hosp01"].personal[2]["patients"] > 0
    assert np.all(np.isfinite(res.state.weights))


def test_local_dp_refuses_a_1_patient_hospital_in_one_line(tiny_sites, tmp_path):
    """DP-SGD at a hospital of ONE training patient is refused before any round, naming the
    hospital (fedrx.dp.federated); nothing crashes."""
    from fedrx.nodes.simulate import SimulationConfig, start_process

    cfg = SimulationConfig(data=str(tiny_sites), min_patients=1, rounds=1, hidden=16,
                           dp=True, personalize=False, out=str(tmp_path / "o"))
    prep = prepare(cfg)
    with pytest.raises(ConfigError, match="hospital tiny1: DP needs at least 2") as err:
        start_process(cfg, prep, tmp_path / "o")
    assert "\n" not in str(err.value)


def test_local_dp_at_2_patient_hospitals_runs_and_checks_delta(tiny_sites, tmp_path):
    """Two hospitals of 2 training patients each under DP-SGD: the default delta (below
    1/N = 1/2) runs a round to completion; delta = 0.5 is refused by name (delta < 1/N)."""
    from fedrx.medrx.datasets import load_dataset
    from fedrx.nodes.simulate import SimulationConfig, start_process

    pats = load_dataset(tiny_sites).patients
    two = [p for p in pats if p.hospital == "tiny2"]
    two += [Patient(p.patient_id, "tiny3", p.visits)
            for p in [p for p in pats if p.hospital == "hosp01"][:2]]
    data = tmp_path / "two.jsonl"
    write_jsonl(data, two)
    cfg = SimulationConfig(data=str(data), min_patients=1, rounds=1, hidden=16, dp=True,
                           epsilon=8.0, accountant="rdp", personalize=False,
                           out=str(tmp_path / "ok"))
    prep = prepare(cfg)
    assert {h: d.train.n_patients for h, d in prep.hospitals.items()} == {"tiny2": 2,
                                                                           "tiny3": 2}
    process, state = start_process(cfg, prep, tmp_path / "ok")
    res = process.runner(prep.hospitals, 1, hooks=RunHooks(sorted(prep.hospitals))).run(state)
    assert res.rounds[0]["status"] == "completed"
    assert res.rounds[0]["contributors"] == ["tiny2", "tiny3"]
    assert all(0 < process.parties[h].dp.epsilon() <= 8.0 for h in ("tiny2", "tiny3"))
    bad = SimulationConfig(**{**cfg.__dict__, "delta": 0.5, "out": str(tmp_path / "bad")})
    with pytest.raises(ConfigError, match="1/N = 1/2 for hospital tiny2") as err:
        start_process(bad, prep, tmp_path / "bad")
    assert "\n" not in str(err.value)


def test_distributed_dp_with_1_and_2_patient_hospitals_completes(tiny_sites, tmp_path):
    """``--dp distributed`` (one DP-SGD step of the federation per round, noise shared under
    mask): hospitals of 1 and 2 training patients send their noisy shares like the others."""
    from fedrx.nodes.simulate import SimulationConfig, start_process

    cfg = SimulationConfig(data=str(tiny_sites), min_patients=1, rounds=1, hidden=16, dp=True,
                           dp_mode="distributed", dp_k=1, protection="mask", epsilon=8.0,
                           personalize=False, out=str(tmp_path / "o"))
    prep = prepare(cfg)
    process, state = start_process(cfg, prep, tmp_path / "o")
    res = process.runner(prep.hospitals, 1, hooks=RunHooks(sorted(prep.hospitals))).run(state)
    assert res.rounds[0]["status"] == "completed"
    assert {"tiny1", "tiny2"} <= set(res.rounds[0]["contributors"])
    assert np.all(np.isfinite(res.state.weights))


# -- the eICU demo ---------------------------------------------------------------------------

def test_eicu_demo_min_patients_1_gives_one_hospital_per_site_with_data(eicu_demo):
    from fedrx.medrx.datasets import load_dataset
    from fedrx.medrx.eicu import read_eicu

    raw = read_eicu(eicu_demo).by_hospital()
    cohort = load_dataset("eicu-demo")
    sites = cohort.by_hospital()
    assert len(raw) == 186 and set(sites) < set(raw)  # 42 sites with no drug label at all
    prep = prepare(_settings("eicu-demo", seed=0))
    assert sorted(prep.hospitals) == sorted(sites)  # every site with a patient, no group
    assert not any(h.startswith("group-") for h in prep.hospitals)
    assert len(prep.hospitals) == 144  # of the 186 sites, 42 record no medication
    for h, s in prep.splits.items():
        n = len(sites[h])
        assert len(s.train) + len(s.val) + len(s.test) == n
        assert (s.val == [] and s.test == []) == (n < SPLIT_MIN_PATIENTS)
    assert sorted(len(p) for p in sites.values())[:3] == [1, 1, 2]


def test_fedrx_simulate_min_patients_1_runs_every_site_and_refuses_0(tiny_sites, tmp_path):
    """The command line (``fedrx simulate --min-patients 1``, a real process): every site is
    its own hospital and contributes; 0 is one clear line and a non-zero exit."""
    import json
    import subprocess
    import sys

    def fedrx(*args):
        return subprocess.run([sys.executable, "-m", "fedrx.cli", *args], capture_output=True,
                              text=True, timeout=600)

    out = tmp_path / "run"
    ok = fedrx("simulate", "--data", str(tiny_sites), "--min-patients", "1", "--rounds", "1",
               "--protection", "mask", "--out", str(out))
    assert ok.returncode == 0, ok.stderr[-2000:]
    doc = json.loads((out / "results.json").read_text())
    assert sorted(doc["rounds"][0]["contributors"]) == ["hosp01", "hosp02", "hosp03",
                                                        "tiny1", "tiny2"]
    bad = fedrx("simulate", "--data", str(tiny_sites), "--min-patients", "0",
                "--out", str(tmp_path / "bad"))
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode != 0 and len(lines) == 1, bad.stderr
    assert lines[0] == "fedrx: error: --min-patients must be >= 1, got 0"
    assert not (tmp_path / "bad" / "results.json").exists()
