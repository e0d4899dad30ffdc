"""MIMIC-IV reader: the real demo (counts measured on it), hand-built tables and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from mimic_tables import write_mappings, write_tables

from fedrx.errors import DataError
from fedrx.medrx.mimic4 import icd_code, is_mimic4_folder, read_mimic4

ADM = "subject_id,hadm_id,admittime,dischtime\n"
PAT = "subject_id,gender,anchor_age\n"
DX = "subject_id,hadm_id,seq_num,icd_code,icd_version\n"
PX = "subject_id,hadm_id,seq_num,chartdate,icd_code,icd_version\n"
RX = "subject_id,hadm_id,starttime,drug,ndc\n"

TABLES = {
    "admissions": ADM + "7,100,2100-01-05 10:00:00,2100-01-09 10:00:00\n"
                        "7,101,2100-01-01 10:00:00,2100-01-02 10:00:00\n"
                        "8,102,2101-03-01 00:00:00,2101-03-02 00:00:00\n"
                        "9,103,2102-01-01 00:00:00,2102-01-02 00:00:00\n"
                        "9,104,2102-02-01 00:00:00,2102-02-02 00:00:00\n",
    "patients": PAT + "7,F,60\n8,M,70\n",
    "diagnoses_icd": DX + "7,100,2,4019,9\n7,100,1,42731,9\n7,100,3,4019,9\n"
                          "7,101,1,I10,10\n7,101,2,E11.9,10\n8,102,1,5849,9\n"
                          "9,104,1,V707,9\n9,104,2,V707,10\n9,104,3,X1,11\n9,999,1,4019,9\n",
    "procedures_icd": PX + "7,100,1,2100-01-06,3893,9\n7,101,1,2100-01-01,0DTJ4ZZ,10\n",
    "prescriptions": RX + "7,100,2100-01-05,Heparin,11111111111\n"
                          "7,100,2100-01-05,Mystery,22222222222\n"
                          "7,100,2100-01-05,NoNdc,0\n"
                          "7,101,2100-01-01,Statin,33333333333\n"
                          "7,101,2100-01-01,Blank,\n"
                          "8,102,2101-03-01,Unmapped,99999999999\n"
                          "9,104,2102-02-01,Heparin,11111111111\n"
                          "9,103,2102-01-01,Statin,33333333333\n"
                          "9,998,2102-01-01,Heparin,11111111111\n",
}


def write_mimic4(root: Path, *, upper: bool = False, gz: bool = False,
                 skip: tuple[str, ...] = (), tables: dict[str, str] | None = None) -> Path:
    """A MIMIC-IV folder ``root/hosp`` (``root/HOSP`` when ``upper``) plus ``root/mappings``."""
    hosp = root / ("HOSP" if upper else "hosp")
    hosp.mkdir(parents=True, exist_ok=True)
    write_tables(hosp, {n: t for n, t in {**TABLES, **(tables or {})}.items()
                        if n not in skip}, upper=upper, gz=gz)
    write_mappings(root)
    return root


@pytest.fixture(scope="module")
def demo_cohort(mimic4_demo: Path, mappings_dir: Path):
    return read_mimic4(mimic4_demo, mappings_dir)


def test_icd_code_convention():
    assert icd_code("4019", "9") == "4019"
    assert icd_code("401.9", "9") == "4019"
    assert icd_code(" I10 ", "10") == "10:I10"
    assert icd_code("0DTJ4ZZ", "10") == "10:0DTJ4ZZ"
    assert icd_code("V707", "9") != icd_code("V707", "10")
    assert icd_code("", "9") is None
    assert icd_code("4019", "11") is None


def test_demo_counts(demo_cohort):
    c = demo_cohort
    assert c.name == "mimic4"
    assert len(c.patients) == 100
    assert c.n_visits == 250
    s = c.stats
    assert s["admissions"] == 275
    assert s["patients_table_rows"] == 100
    assert s["admissions_unknown_subject"] == 0
    assert (s["diagnoses_icd9_rows"], s["diagnoses_icd10_rows"]) == (2193, 2313)
    assert (s["procedures_icd9_rows"], s["procedures_icd10_rows"]) == (401, 321)
    # each admission is coded in one ICD version: 145 kept visits ICD-9, 105 ICD-10
    assert (s["visits_icd9"], s["visits_icd10"], s["visits_mixed_icd"]) == (145, 105, 0)
    assert s["admissions_mixed_icd_versions"] == 0
    # 25 admissions have diagnoses but no prescription at all; none lacks diagnoses
    assert (s["visits_dropped_no_diagnosis"], s["visits_dropped_no_labels"]) == (0, 25)
    assert s["prescription_rows"] == 18087
    assert s["prescription_rows_no_ndc"] == 2610 + 21  # NDC "0" and empty
    assert s["prescription_rows_with_ndc"] == 15456
    assert (s["prescription_rows_mapped"], s["prescription_rows_unmapped"]) == (9380, 6076)
    assert s["prescription_rows_mapped"] / s["prescription_rows_with_ndc"] == pytest.approx(
        0.607, abs=0.001)
    assert (s["patients"], s["visits"]) == (100, 250)


def test_demo_codes_and_order(demo_cohort):
    ids = [p.patient_id for p in demo_cohort.patients]
    assert len(ids) == len(set(ids))
    dx10 = dx9 = 0
    px_codes: set[str] = set()
    labels: set[str] = set()
    for p in demo_cohort.patients:
        assert p.hospital == "mimic4"
        times = [v.time for v in p.visits]
        assert times == sorted(times)
        for v in p.visits:
            assert v.diagnoses and v.labels
            assert len({c.startswith("10:") for c in v.diagnoses}) == 1  # one version a visit
            assert all("." not in c and ":" not in c.removeprefix("10:") for c in v.diagnoses)
            dx10 += sum(c.startswith("10:") for c in v.diagnoses)
            dx9 += sum(not c.startswith("10:") for c in v.diagnoses)
            px_codes.update(v.procedures)
            labels.update(v.labels)
    assert dx9 > 0 and dx10 > 0
    assert "10:02H633Z" in px_codes  # an ICD-10-PCS procedure of the demo
    assert all(len(lab) == 4 for lab in labels)
    assert len(labels) == 106


def test_demo_hosp_folder_and_min_visits(mimic4_demo, mappings_dir, demo_cohort):
    assert read_mimic4(mimic4_demo / "hosp", mappings_dir).patients == demo_cohort.patients
    c2 = read_mimic4(mimic4_demo, mappings_dir, min_visits=2)
    assert (len(c2.patients), c2.n_visits) == (46, 196)
    assert c2.stats["patients_dropped_min_visits"] == 54


def test_is_mimic4_folder(mimic4_demo, mimic_demo, tmp_path):
    assert is_mimic4_folder(mimic4_demo)
    assert is_mimic4_folder(mimic4_demo / "hosp")
    assert not is_mimic4_folder(mimic_demo)  # MIMIC-III: icd9_code, no icd_version
    assert not is_mimic4_folder(tmp_path / "absent")
    (tmp_path / "file.csv").write_text("x\n")
    assert not is_mimic4_folder(tmp_path / "file.csv")
    assert not is_mimic4_folder(tmp_path)


def test_hand_built_tables(tmp_path):
    root = write_mimic4(tmp_path / "h")
    c = read_mimic4(root)  # mappings found in root/mappings
    by_id = {p.patient_id: p for p in c.patients}
    assert set(by_id) == {"7", "9"}  # 8's only visit has no mapped drug
    p7 = by_id["7"]
    assert [v.visit_id for v in p7.visits] == ["101", "100"]  # admittime order
    v101, v100 = p7.visits
    assert v101.diagnoses == ("10:I10", "10:E119")
    assert v101.procedures == ("10:0DTJ4ZZ",)
    assert v101.labels == ("C10A",)
    assert v100.diagnoses == ("42731", "4019")  # seq_num order, duplicate removed
    assert v100.procedures == ("3893",)
    assert v100.labels == ("B01A",)  # first RxCUI row wins; '' RxCUI and NDC '0' dropped
    (v104,) = by_id["9"].visits  # 103 has no diagnosis
    assert v104.diagnoses == ("V707", "10:V707")  # same string, two versions: no collision
    assert v104.procedures == ()
    s = c.stats
    assert s["admissions"] == 5
    assert (s["patients_table_rows"], s["admissions_unknown_subject"]) == (2, 2)
    assert (s["diagnoses_icd9_rows"], s["diagnoses_icd10_rows"]) == (5, 3)
    assert (s["diagnoses_icd_rows_bad_version"], s["diagnoses_icd_rows_skipped"]) == (1, 1)
    assert (s["procedures_icd9_rows"], s["procedures_icd10_rows"]) == (1, 1)
    assert s["admissions_mixed_icd_versions"] == 1
    assert (s["visits_icd9"], s["visits_icd10"], s["visits_mixed_icd"]) == (1, 1, 1)
    assert (s["visits_dropped_no_diagnosis"], s["visits_dropped_no_labels"]) == (1, 1)
    assert s["prescription_rows"] == 9
    assert s["prescription_rows_unknown_admission"] == 1
    assert (s["prescription_rows_no_ndc"], s["prescription_rows_with_ndc"]) == (2, 6)
    assert (s["prescription_rows_mapped"], s["prescription_rows_unmapped"]) == (4, 2)
    assert (s["patients"], s["visits"]) == (2, 3)


def test_upper_case_and_gzip_read_the_same(tmp_path):
    a = read_mimic4(write_mimic4(tmp_path / "a"))
    b = read_mimic4(write_mimic4(tmp_path / "b", upper=True, gz=True))
    assert a.patients == b.patients
    assert a.stats == b.stats
    assert is_mimic4_folder(tmp_path / "b") and is_mimic4_folder(tmp_path / "b" / "HOSP")


def test_optional_tables_are_counted(tmp_path):
    c = read_mimic4(write_mimic4(tmp_path / "h", skip=("procedures_icd", "patients")))
    assert all(v.procedures == () for p in c.patients for v in p.visits)
    assert c.stats["missing_table_procedures_icd"] == 1
    assert c.stats["missing_table_patients"] == 1
    assert c.n_visits == 3


def test_min_visits(tmp_path):
    root = write_mimic4(tmp_path / "h")
    c = read_mimic4(root, min_visits=2, hospital="site-a")
    assert [p.patient_id for p in c.patients] == ["7"]
    assert c.patients[0].hospital == "site-a" and c.name == "site-a"
    with pytest.raises(DataError, match="no usable visits"):
        read_mimic4(root, min_visits=3)
    with pytest.raises(DataError, match="min_visits must be >= 1"):
        read_mimic4(root, min_visits=0)


def _no_maps(root: Path) -> Path:
    empty = root / "empty_maps"
    empty.mkdir()
    return empty


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "skip, tables, mappings, message",
    [
        (("admissions",), None, None, "table 'admissions' not found"),
        (("diagnoses_icd",), None, None, "table 'diagnoses_icd' not found"),
        (("prescriptions",), None, None, "table 'prescriptions' not found"),
        ((), {"admissions": ADM}, None, "no admissions"),
        ((), {"diagnoses_icd": "subject_id,hadm_id,seq_num,icd9_code\n7,100,1,4019\n"}, None,
         "missing column.*icd_code"),
        ((), {"prescriptions": "subject_id,hadm_id,drug\n7,100,Heparin\n"}, None,
         "missing column.*ndc"),
        ((), {"prescriptions": RX + "7,100,x,Heparin,0\n7,101,x,Statin,\n"}, None,
         "no prescription row .* has an NDC"),
        ((), {"prescriptions": RX + "7,100,x,Mystery,99999999999\n"}, None,
         "none of 1 NDC rows maps to ATC-3"),
        ((), {"admissions": ADM + "7,100\n"}, None, "expected 4 fields, found 2"),
        ((), None, _no_maps, "drug mapping ndc2rxnorm_mapping.txt not found"),
    ],
)
def test_bad_input_gives_one_clear_data_error(tmp_path, gz, skip, tables, mappings, message):
    root = write_mimic4(tmp_path / "h", gz=gz, skip=skip, tables=tables)
    with pytest.raises(DataError, match=message) as info:
        read_mimic4(root, mappings(root) if mappings else None)
    assert "\n" not in str(info.value)


def test_wrong_layout(tmp_path):
    with pytest.raises(DataError, match="MIMIC-IV folder not found"):
        read_mimic4(tmp_path / "absent")
    (tmp_path / "f.csv").write_text("x\n")
    with pytest.raises(DataError, match="not a folder"):
        read_mimic4(tmp_path / "f.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="not the MIMIC-IV layout"):
        read_mimic4(empty)
    (empty / "hosp").mkdir()  # a hosp/ folder without tables
    with pytest.raises(DataError, match="table 'admissions' not found"):
        read_mimic4(empty)


def test_mimic3_layout_is_refused(mimic_demo, mappings_dir):
    with pytest.raises(DataError, match="DIAGNOSES_ICD.csv: missing column.*icd_code"):
        read_mimic4(mimic_demo, mappings_dir)


def test_corrupt_gzip(tmp_path):
    root = write_mimic4(tmp_path / "h", skip=("prescriptions",))
    (root / "hosp" / "prescriptions.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match="cannot read"):
        read_mimic4(root)
