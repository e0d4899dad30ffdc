"""Vocabulary, encoding, split, model IO and centralized training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrx.errors import ConfigError, DataError
from fedrx.medrx.features import encode, input_width
from fedrx.medrx.model import MedRecMLP, build_model
from fedrx.medrx.modelio import load_into, save_model
from fedrx.medrx.records import Patient, Visit, read_jsonl, write_jsonl
from fedrx.medrx.split import split_patients
from fedrx.medrx.train import TrainConfig, train_centralized
from fedrx.medrx.vocab import Vocabulary, build_vocabulary


def pt(pid: str, hosp: str, visits: list[tuple[list[str], list[str], list[str]]]) -> Patient:
    return Patient(pid, hosp, tuple(
        Visit(f"{pid}-{i}", f"2100-01-{i + 1:02d}", tuple(d), tuple(p), tuple(lab))
        for i, (d, p, lab) in enumerate(visits)))


PATIENTS = [
    pt("1", "A", [(["d1", "d2"], ["p1"], ["L1", "L2"]), (["d1"], [], ["L2", "L3"])]),
    pt("2", "A", [(["d2", "dX"], ["p2"], ["L1"])]),
    pt("3", "B", [(["d1"], ["p1"], ["L3"])]),
]


def test_vocabulary_frequency_order_and_roundtrip(tmp_path):
    v = build_vocabulary(PATIENTS)
    assert v.diagnoses == ("d1", "d2", "dX")  # d1 x3, d2 x2, dX x1
    assert v.labels == ("L1", "L2", "L3")  # ties broken by code
    v.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == v
    assert build_vocabulary(PATIENTS, min_count=2).diagnoses == ("d1", "d2")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(DataError, match="duplicate"):
        Vocabulary(("a", "a"), (), ("L",))


def test_encoding_includes_previous_visit_labels():
    v = build_vocabulary(PATIENTS)
    t = encode(PATIENTS, v)
    d, p, nl = v.sizes
    assert t.x.shape == (4, input_width(v)) and t.y.shape == (4, nl)
    # patient 1 visit 2: dx d1, previous labels L1,L2, has_previous flag
    row = t.x[1]
    assert row[0] == 1 and row[1] == 0
    assert list(row[d + p : d + p + nl]) == [1, 1, 0] and row[-1] == 1
    assert list(t.y[1]) == [0, 1, 1]
    assert list(t.prev[0]) == [0, 0, 0] and t.x[0, -1] == 0
    assert [list(r) for r in t.patient_rows()] == [[0, 1], [2], [3]]


def test_split_is_patient_level_per_hospital_and_seeded():
    pats = [pt(str(i), "AB"[i % 2], [(["d"], [], ["L"])] * 2) for i in range(60)]
    s1, s2 = split_patients(pats, seed=3), split_patients(pats, seed=3)
    assert [p.patient_id for p in s1.test] == [p.patient_id for p in s2.test]
    assert [p.patient_id for p in split_patients(pats, seed=4).test] != [
        p.patient_id for p in s1.test]
    ids = [{p.patient_id for p in part} for part in (s1.train, s1.val, s1.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(map(len, ids)) == 60
    for h in "AB":
        assert {p.hospital for p in s1.test if p.hospital == h} == {h}
        assert len([p for p in s1.test if p.hospital == h]) == 5
    with pytest.raises(ConfigError):
        split_patients(pats, val_frac=0.6, test_frac=0.5)


def test_jsonl_roundtrip(tmp_path):
    write_jsonl(tmp_path / "r.jsonl", PATIENTS)
    assert list(read_jsonl(tmp_path / "r.jsonl")) == PATIENTS
    (tmp_path / "bad.jsonl").write_text('{"patient_id": 1}\n')
    with pytest.raises(DataError, match="malformed patient"):
        list(read_jsonl(tmp_path / "bad.jsonl"))


def test_model_io_roundtrip_without_pickle(tmp_path):
    torch.manual_seed(0)
    m = MedRecMLP(10, 4, hidden=8)
    digest = save_model(tmp_path / "m.npz", m, {"model": "mlp"})
    m2 = MedRecMLP(10, 4, hidden=8)
    load_into(m2, tmp_path / "m.npz")
    for a, b in zip(m.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert len(digest) == 64
    # numpy refuses object arrays: a pickled payload cannot be loaded
    np.save(tmp_path / "evil.npy", np.array([object()], dtype=object), allow_pickle=True)
    (tmp_path / "evil.npz").write_bytes((tmp_path / "evil.npy").read_bytes())
    with pytest.raises(DataError):
        load_into(m2, tmp_path / "evil.npz")
    # tampered weights are detected through the recorded hash
    arrays = dict(np.load(tmp_path / "m.npz"))
    arrays["head.bias"] = arrays["head.bias"] + 1
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(DataError, match="hash"):
        load_into(m2, tmp_path / "m.npz")
    save_model(tmp_path / "ok.npz", m, {})
    with pytest.raises(DataError, match="do not fit"):
        load_into(MedRecMLP(11, 4, hidden=8), tmp_path / "ok.npz")


def test_model_factory_and_config_validation():
    assert isinstance(build_model("mlp", 5, 3), MedRecMLP)
    with pytest.raises(ConfigError):
        build_model("transformer", 5, 3)
    for bad in (dict(epochs=0), dict(lr=0.0), dict(batch_size=0), dict(model="x")):
        with pytest.raises(ConfigError):
            TrainConfig(**bad).validate()


def test_mimic_demo_model_beats_copy_last_visit(mimic_demo):
    from fedrx.medrx.datasets import load_dataset
    from fedrx.medrx.metrics import load_ddi_pairs

    cohort = load_dataset("mimic3-demo")
    pairs = load_ddi_pairs(mimic_demo / "mappings" / "ddi_atc3_pairs_gamenet.csv")
    res, vocab, _ = train_centralized(cohort, TrainConfig(epochs=15, seed=0), pairs)
    test = res.test
    assert test["model"]["jaccard"] > test["copy_last_visit"]["jaccard"] + 0.1
    assert 0 <= test["model"]["ddi_rate"] < 0.2
    assert res.sizes["test_patients"] == 16 and res.sizes["labels"] == len(vocab.labels)


def test_task_hands_dp_its_model_loss_and_patient_grouping():
    """The task gives DP tensors, a per-visit loss and the patient of every visit; DP
    trains the model in place and returns its record; the task builds the result."""
    from fedrx.medrx.task import MedicationTask, make_hospital_data, per_visit_loss
    from fedrx.protocol.task import ClientOptimizer

    vocab = build_vocabulary(PATIENTS)
    task = MedicationTask(vocab, hidden=8)
    data = make_hospital_data("A", PATIENTS, [], [], vocab)
    seen = {}

    class RecordingDP:
        def train(self, model, loss_fn, inputs, targets, groups, *, n_groups, lr,
                  optimizer_factory, input_dtype=None):
            seen.update(loss_fn=loss_fn, rows=len(inputs), groups=list(groups),
                        n_groups=n_groups, lr=lr, input_dtype=input_dtype)
            assert inputs.dtype == torch.uint8 and targets.shape == (4, len(vocab.labels))
            opt = optimizer_factory(list(model.parameters()), lr)
            loss_fn(model(inputs.to(input_dtype)), targets).sum().backward()
            opt.step()
            return {"epsilon": 1.5}

    w0 = task.initial_weights(0)
    res = task.local_train(w0, data, ClientOptimizer("sgd", lr=0.5), seed=1, dp=RecordingDP())
    assert seen == {"loss_fn": per_visit_loss, "rows": 4, "groups": [0, 0, 1, 2],
                    "n_groups": 3, "lr": 0.5, "input_dtype": torch.float32}
    assert res.dp == {"epsilon": 1.5} and res.n_examples == 4
    assert res.weights.dtype == np.float32 and not np.array_equal(res.weights, w0)
    logits = torch.tensor([[0.0, 2.0]])
    assert per_visit_loss(logits, torch.tensor([[1.0, 0.0]])).shape == (1,)
    assert per_visit_loss(logits, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(
        (np.log(2) + np.log1p(np.exp(2.0))) / 2)


def test_hospital_refuses_a_model_that_does_not_fit_its_task_before_training():
    """A malicious aggregator sends weights of the wrong size with a CONSISTENT hash and
    vector length: the hospital refuses with a ProtocolError (no crash, nothing trained,
    no budget charged), for training and for evaluation requests alike."""
    from fedrx.errors import ProtocolError
    from fedrx.medrx.task import MedicationTask, make_hospital_data
    from fedrx.protocol.hospital import HospitalParty, HospitalState
    from fedrx.protocol.messages import EvalRequest, TrainRequest
    from fedrx.protocol.protection import NoProtection
    from fedrx.protocol.task import ClientOptimizer, model_hash

    patients = [pt(f"p{i}", "h", [(["401"], ["38"], ["B01A"]), (["250"], [], ["A10A"])])
                for i in range(6)]
    vocab = build_vocabulary(patients)
    task = MedicationTask(vocab, hidden=4)
    data = make_hospital_data("h", patients[:4], patients[4:5], patients[5:], vocab)
    party = HospitalParty("h", task, data, NoProtection(), ClientOptimizer())
    for bad in (np.zeros(task.spec.size + 3, np.float32), np.zeros(task.spec.size)):
        req = TrainRequest(b"s" * 32, 1, ("h",), bad, model_hash(bad), "none", bad.size + 1)
        with pytest.raises(ProtocolError, match="model has"):
            party.handle("train", req)
        assert party.log == [] and party.state is HospitalState.IDLE
        with pytest.raises(ProtocolError, match="model has"):
            party.handle("evaluate", EvalRequest(1, bad, model_hash(bad), "test", False))
    good = task.initial_weights(0)
    ack = party.handle("train", TrainRequest(b"s" * 32, 1, ("h",), good, model_hash(good),
                                             "none", good.size + 1))
    assert ack.status == "trained"


def test_hospital_refuses_unsorted_or_repeated_participants_before_training():
    """A crafted TrainRequest whose participant list is unsorted or repeats a hospital is
    refused before local training (the protection would otherwise fail after the hospital
    trained and paid for the round)."""
    from fedrx.errors import ProtocolError
    from fedrx.medrx.task import MedicationTask, make_hospital_data
    from fedrx.protocol.hospital import HospitalParty
    from fedrx.protocol.messages import TrainRequest
    from fedrx.protocol.protection import NoProtection
    from fedrx.protocol.task import ClientOptimizer, model_hash

    patients = [pt(f"p{i}", "h", [(["401"], ["38"], ["B01A"])]) for i in range(6)]
    vocab = build_vocabulary(patients)
    task = MedicationTask(vocab, hidden=4)
    party = HospitalParty("h", task, make_hospital_data("h", patients[:4], patients[4:5],
                                                        patients[5:], vocab),
                          NoProtection(), ClientOptimizer())
    w = task.initial_weights(0)
    for parts in (("z", "h"), ("h", "h", "z")):
        with pytest.raises(ProtocolError, match="sorted and distinct"):
            party.handle("train", TrainRequest(b"s" * 32, 1, parts, w, model_hash(w), "none",
                                               w.size + 1))
        assert party.log == []
