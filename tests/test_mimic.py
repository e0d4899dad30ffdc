"""MIMIC-III reader: the real demo, and hand-built fixtures for the mapping recipe and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from mimic_tables import write_mappings, write_tables

from fedrx.errors import DataError
from fedrx.medrx.datasets import load_dataset
from fedrx.medrx.mimic import read_mimic3

ADM = "row_id,subject_id,hadm_id,admittime,dischtime\n"
DX = "row_id,subject_id,hadm_id,seq_num,icd9_code\n"
RX = "row_id,subject_id,hadm_id,startdate,drug,ndc\n"


def write_mimic(root: Path, *, upper: bool = False, procedures: bool = True,
                gz: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    tables = {
        "ADMISSIONS": ADM + "1,7,100,2100-01-05 10:00:00,2100-01-09 10:00:00\n"
                            "2,7,101,2100-01-01 10:00:00,2100-01-02 10:00:00\n"
                            "3,8,102,2101-03-01 00:00:00,2101-03-02 00:00:00\n",
        "DIAGNOSES_ICD": DX + "1,7,100,2,4019\n2,7,100,1,42731\n3,7,101,1,2500\n"
                              "4,8,102,1,5849\n5,7,100,3,4019\n",
        "PRESCRIPTIONS": RX + "1,7,100,2100-01-05,Heparin,11111111111\n"
                              "2,7,100,2100-01-05,Mystery,22222222222\n"
                              "3,7,100,2100-01-05,NoNdc,0\n"
                              "4,7,101,2100-01-01,Statin,33333333333\n"
                              "5,8,102,2101-03-01,Unmapped,99999999999\n",
    }
    if procedures:
        tables["PROCEDURES_ICD"] = DX + "1,7,100,1,3893\n"
    write_tables(root, tables, upper=upper, gz=gz)
    write_mappings(root)
    return root


def test_recipe_on_hand_built_tables(tmp_path):
    c = read_mimic3(write_mimic(tmp_path / "h1"))
    assert c.name == "h1"
    by_id = {p.patient_id: p for p in c.patients}
    # patient 8's only visit has no mappable drug: dropped; patient 7 keeps both visits
    assert set(by_id) == {"7"}
    p = by_id["7"]
    assert [v.visit_id for v in p.visits] == ["101", "100"]  # admittime order
    v100 = p.visits[1]
    assert v100.diagnoses == ("42731", "4019")  # seq_num order, duplicates removed
    assert v100.procedures == ("3893",)
    # first RxCUI row wins (B01AB, not C09AA); '' RxCUI and NDC '0' dropped
    assert v100.labels == ("B01A",)
    assert p.visits[0].labels == ("C10A",)
    assert c.stats["prescription_rows_no_ndc"] == 1
    assert c.stats["prescription_rows_unmapped"] == 2
    assert c.stats["visits_dropped_no_labels"] == 1


def test_upper_case_headers_and_gzip(tmp_path):
    a = read_mimic3(write_mimic(tmp_path / "a"))
    b = read_mimic3(write_mimic(tmp_path / "b", upper=True, gz=True), hospital="a")
    assert a.patients == b.patients


def test_missing_procedures_table_is_allowed(tmp_path):
    c = read_mimic3(write_mimic(tmp_path / "h", procedures=False))
    assert all(v.procedures == () for p in c.patients for v in p.visits)
    assert c.stats["missing_table_procedures_icd"] == 1


def test_min_visits(tmp_path):
    root = write_mimic(tmp_path / "h")
    assert len(read_mimic3(root, min_visits=2).patients) == 1
    with pytest.raises(DataError, match="no usable visits"):
        read_mimic3(root, min_visits=3)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: (r / "diagnoses_icd.csv").write_text("row_id,hadm_id,seq_num\n1,100,1\n"),
         "missing column.*icd9_code"),
        (lambda r: (r / "prescriptions.csv").unlink(), "'PRESCRIPTIONS' not found"),
        (lambda r: (r / "admissions.csv").write_text(ADM), "no admissions"),
        (lambda r: (r / "admissions.csv").write_bytes(b""), "empty"),
        (lambda r: (r / "prescriptions.csv").write_bytes(b"\xff\xfe\x00bad"), "not UTF-8"),
        (lambda r: (r / "mappings" / "ndc2rxnorm_mapping.txt").write_text("__import__('os')"),
         "dict literal"),
    ],
)
def test_bad_input_gives_clear_data_error(tmp_path, mutate, message):
    root = write_mimic(tmp_path / "h")
    mutate(root)
    with pytest.raises(DataError, match=message):
        read_mimic3(root)


def test_corrupt_gzip(tmp_path):
    root = write_mimic(tmp_path / "h")
    (root / "prescriptions.csv").unlink()
    (root / "prescriptions.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match="cannot read"):
        read_mimic3(root)


def test_unknown_layout(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="unknown layout"):
        load_dataset(tmp_path / "x")
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "missing")


def test_multi_hospital_folder(tmp_path):
    write_mimic(tmp_path / "fed" / "hospA")
    b = write_mimic(tmp_path / "fed" / "hospB")
    for name in ("admissions", "diagnoses_icd", "procedures_icd", "prescriptions"):
        f = b / f"{name}.csv"
        lines = f.read_text().splitlines()
        # hospital-unique patient ids at hospital B
        out = [lines[0]] + [",".join(c if i != 1 else "9" + c for i, c in
                                     enumerate(ln.split(","))) for ln in lines[1:]]
        f.write_text("\n".join(out) + "\n")
    c = load_dataset(tmp_path / "fed")
    assert c.hospitals == ["hospA", "hospB"]


def test_patient_in_two_hospitals_is_rejected(tmp_path):
    write_mimic(tmp_path / "fed" / "hospA")
    write_mimic(tmp_path / "fed" / "hospB")
    with pytest.raises(DataError, match="exactly one hospital"):
        load_dataset(tmp_path / "fed")


def test_real_mimic3_demo(mimic_demo):
    c = load_dataset("mimic3-demo")
    assert c.stats["admissions"] == 129
    assert len(c.patients) == 94 and c.n_visits == 122
    assert c.hospitals == ["mimic3"]
    labels = {lab for p in c.patients for v in p.visits for lab in v.labels}
    assert len(labels) == 106 and all(len(lab) == 4 for lab in labels)
    for p in c.patients:
        times = [v.time for v in p.visits]
        assert times == sorted(times)
        for v in p.visits:
            assert v.labels and v.diagnoses and all("." not in d for d in v.diagnoses)
    v = next(v for p in c.patients for v in p.visits if v.visit_id == "142345")
    assert v.diagnoses[:3] == ("99591", "99662", "5672")
    # atorvastatin (NDC 00071015623 -> RxCUI 617318 -> C10AA) and aspirin
    assert "C10A" in v.labels and "B01A" in v.labels and len(v.labels) == 20


def test_demo_headers_upper_case_copy(mimic_demo, tmp_path):
    """Users' full MIMIC-III has UPPER-case file names and headers: same result."""
    dst = tmp_path / "MIMIC"
    dst.mkdir()
    for name in ("ADMISSIONS", "DIAGNOSES_ICD", "PROCEDURES_ICD", "PRESCRIPTIONS"):
        text = (mimic_demo / f"{name}.csv").read_text()
        head, body = text.split("\n", 1)
        (dst / f"{name}.csv").write_text(head.upper() + "\n" + body)
    a = load_dataset("mimic3-demo")
    b = read_mimic3(dst, mimic_demo / "mappings", hospital="mimic3")
    assert a.patients == b.patients
