"""fedrx simulate: end to end on real data, invalid configurations, partitioning."""

from __future__ import annotations

import json

import pytest
from test_cli import assert_one_line_error, run

from fedrx.errors import ConfigError
from fedrx.medrx.partition import partition
from fedrx.medrx.records import Cohort, Patient, Visit
from fedrx.nodes.simulate import SimulationConfig, run_simulation


def _cohort(sizes: dict[str, int]) -> Cohort:
    v = (Visit("v", "t", ("d",), (), ("L",)),)
    return Cohort("c", [Patient(f"{h}-{i}", h, v) for h, n in sizes.items() for i in range(n)])


def test_partition_single_site_iid_and_skew():
    c = _cohort({"x": 90})
    parts = partition(c, 3, seed=1)
    assert [len(p) for p in parts.values()] == [30, 30, 30]
    ids = [p.patient_id for ps in parts.values() for p in ps]
    assert len(set(ids)) == 90
    assert all(p.hospital == h for h, ps in parts.items() for p in ps)
    skew = partition(c, 3, seed=1, scheme="skew")
    sizes = [len(p) for p in skew.values()]
    assert sum(sizes) == 90 and sizes[0] > sizes[1] > sizes[2]
    with pytest.raises(ConfigError, match="too few"):
        partition(c, 40)
    with pytest.raises(ConfigError, match=">= 1"):
        partition(c, 0)


def test_partition_multi_site_merges_small_sites_and_refuses_too_many():
    c = _cohort({"a": 50, "b": 40, "c": 5, "d": 6, "e": 12})
    parts = partition(c, None, min_patients=20)
    assert sorted(len(p) for p in parts.values()) == [23, 40, 50]
    assert sum(len(p) for p in parts.values()) == 113
    assert [len(p) for p in partition(c, 2, min_patients=20).values()] in ([63, 50], [50, 63])
    with pytest.raises(ConfigError, match="asked for 4"):
        partition(c, 4, min_patients=20)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--hospitals", "0"], "--hospitals must be >= 1"),
        (["--hospitals", "500"], "too few for 500 hospitals"),
        (["--protection", "rot13"], "unknown protection 'rot13'"),
        (["--rounds", "-2"], "--rounds must be >= 1"),
        (["--drop", "h9@upload:1", "--hospitals", "3"], "unknown hospital 'h9'"),
        (["--drop", "h1@nowhere:1", "--hospitals", "3"], "unknown stage 'nowhere'"),
        (["--data", "eicu-demo", "--hospitals", "999"], "asked for 999"),
    ],
)
def test_invalid_configurations_give_one_line(mimic_demo, tmp_path, args, fragment):
    assert_one_line_error(run("simulate", "--out", str(tmp_path / "o"), *args), fragment)


def test_simulate_none_with_dropout_writes_results(mimic_demo, tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('[simulate]\nhospitals = 3\nrounds = 2\nhidden = 16\nlocal_epochs = 1\n')
    proc = run("simulate", "--config", str(cfg), "--out", str(tmp_path / "o"),
               "--drop", "h2@upload:1")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert doc["config"]["hidden"] == 16 and len(doc["rounds"]) == 2
    r1, r2 = doc["rounds"]
    assert r1["contributors"] == ["h1", "h3"] and r2["contributors"] == ["h1", "h2", "h3"]
    assert r1["status"] == "completed" and r1["dropped"]["h2"].startswith("upload")
    # silent to the end of round 1, evaluation included; back in round 2
    assert set(r1["hospital_metrics"]) == {"h1", "h3"}
    assert set(doc["final"]["per_hospital"]) == {"h1", "h2", "h3"}
    # personalised metrics (a model fine-tuned on training patients without DP) stay at
    # the hospitals: nothing about them reaches the results (issue 16 item 5)
    assert "personalized" not in doc["final"]["per_hospital"]["h1"]
    assert 0 < doc["final"]["global"]["jaccard"] < 1
    assert (tmp_path / "o" / "summary.md").read_text().startswith("# fedrx simulation")


def test_simulation_is_deterministic_for_a_seed(mimic_demo, tmp_path):
    docs = []
    for i in range(2):
        cfg = SimulationConfig(hospitals=2, rounds=2, hidden=16, seed=7, personalize=False,
                               out=str(tmp_path / f"r{i}"))
        docs.append(run_simulation(cfg))
    assert docs[0]["final"]["model_hash"] == docs[1]["final"]["model_hash"]
    assert docs[0]["final"]["global"] == docs[1]["final"]["global"]


def test_model_selected_by_validation_not_test(mimic_demo, tmp_path):
    """Every round reports pooled VALIDATION metrics next to the test ones; the selected model
    is the round with the best validation Jaccard (earliest on ties), written to
    selected_model.npy, whose hash is that round's model hash."""
    import numpy as np

    from fedrx.protocol.results import select_round
    from fedrx.protocol.task import model_hash

    out = tmp_path / "sel"
    cfg = SimulationConfig(hospitals=3, rounds=4, hidden=16, seed=5, personalize=False,
                           out=str(out))
    doc = run_simulation(cfg)
    rounds = doc["rounds"]
    assert all(0 < r["val_metrics"]["jaccard"] < 1 for r in rounds)
    assert all(set(r["hospital_metrics"][h]) == {"global", "val"}
               for r in rounds for h in r["hospital_metrics"])
    best = max(rounds, key=lambda r: (r["val_metrics"]["jaccard"], -r["round"]))
    sel = doc["selected"]
    assert sel["round"] == best["round"] and sel["model_hash"] == best["model_hash"]
    assert sel["global"] == best["metrics"] and sel["val"] == best["val_metrics"]
    w = np.load(out / "selected_model.npy", allow_pickle=False)
    assert model_hash(w) == best["model_hash"]
    assert model_hash(np.load(out / "global_model.npy", allow_pickle=False)) == \
        doc["final"]["model_hash"]
    assert f"round {best['round']}" in (out / "summary.md").read_text()
    # the selection rule itself: highest validation Jaccard, earliest on ties, test ignored
    recs = [{"round": i + 1, "val_metrics": {"jaccard": v}, "metrics": {"jaccard": t},
             "model_hash": str(i)} for i, (v, t) in enumerate(
                 [(0.2, 0.9), (0.3, 0.1), (0.3, 0.5), (0.25, 0.99)])]
    assert select_round(recs)["round"] == 2
    assert select_round([{"round": 1, "val_metrics": {}, "metrics": {}}]) is None


def test_mask_matches_none_on_the_same_seed(mimic_demo, tmp_path):
    res = {}
    for prot in ("none", "mask"):
        cfg = SimulationConfig(hospitals=3, rounds=3, hidden=32, local_epochs=2, seed=3,
                               protection=prot, personalize=False, out=str(tmp_path / prot))
        res[prot] = run_simulation(cfg)
    assert abs(res["none"]["final"]["global"]["jaccard"]
               - res["mask"]["final"]["global"]["jaccard"]) < 0.01
    assert all(r["protection_stats"]["clipped_coordinates"] == 0 for r in res["mask"]["rounds"])


def test_eicu_real_hospitals(data_root, tmp_path):
    cfg = SimulationConfig(data="eicu-demo", hospitals=4, rounds=1, hidden=16,
                           personalize=False, out=str(tmp_path / "e"))
    doc = run_simulation(cfg)
    assert len(doc["hospitals"]) == 4
    assert sum(h["train_patients"] + h["val_patients"] + h["test_patients"]
               for h in doc["hospitals"].values()) > 1000
    assert doc["rounds"][0]["contributors"] == sorted(doc["hospitals"])


@pytest.mark.parametrize("stage", ["advertise_keys", "share_keys", "masked_input",
                                   "consistency_check", "unmask"])
def test_mask_with_a_dropout_at_each_stage_matches_none(mimic_demo, tmp_path, stage):
    """4 hospitals (t = 3): h2 drops at ``stage`` of round 1. Before its masked input is in,
    the round equals `none` without h2; after, it equals `none` with everyone."""
    common = dict(hospitals=4, rounds=2, hidden=16, local_epochs=1, seed=5, personalize=False)
    mask = run_simulation(SimulationConfig(protection="mask", drop=f"h2@{stage}:1",
                                           out=str(tmp_path / "m"), **common))
    r1 = mask["rounds"][0]
    assert r1["status"] == "completed" and r1["dropped"]["h2"].startswith(stage)
    contributed = stage in ("consistency_check", "unmask")
    assert ("h2" in r1["contributors"]) == contributed
    none = run_simulation(SimulationConfig(protection="none",
                                           drop="" if contributed else "h2@upload:1",
                                           out=str(tmp_path / "n"), **common))
    assert abs(mask["final"]["global"]["jaccard"] - none["final"]["global"]["jaccard"]) < 0.01
