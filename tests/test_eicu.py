"""Tests of the eICU reader: the real open demo, plus tiny synthetic tables."""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections import Counter
from pathlib import Path

import pytest

from fedrx.errors import DataError
from fedrx.medrx.eicu import read_eicu
from fedrx.medrx.records import Cohort, sort_visits


def _demo_root() -> Path:
    env = os.environ.get("FEDRX_DATA_ROOT")
    if env:
        return Path(env) / "eicu-demo"
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eicu-demo"


DEMO = _demo_root()
needs_demo = pytest.mark.skipif(
    not (DEMO / "patient.csv.gz").is_file(),
    reason=f"eICU demo not found at {DEMO} (set FEDRX_DATA_ROOT to the folder holding eicu-demo/)",
)


@pytest.fixture(scope="module")
def demo() -> Cohort:
    return read_eicu(DEMO)


def _visits(cohort: Cohort) -> dict[str, tuple[str, str, object]]:
    return {v.visit_id: (p.patient_id, p.hospital, v) for p in cohort.patients for v in p.visits}


# --------------------------------------------------------------------------- the real demo


@needs_demo
def test_demo_counts(demo: Cohort) -> None:
    s = demo.stats
    assert demo.name == "eicu"
    assert s["stays_read"] == 2520
    assert s["patients"] == len(demo.patients) == 1841
    assert s["hospitals"] == len(demo.hospitals) == 186
    assert s["patients_multi_hospital"] == 19
    assert s["dropped_cross_hospital_stays"] == 26
    assert s["stays_kept"] == demo.n_visits == 2520 - 26
    assert s["medication_rows"] == 75604
    assert s["cancelled_medication_rows"] == 2636
    assert s["hospitals_without_medication"] == 42
    assert s["diagnosis_rows"] == 24978
    assert s["treatment_rows"] == 38290
    assert all(isinstance(v, int) for v in s.values())


@needs_demo
def test_demo_patient_in_one_hospital_and_sorted(demo: Cohort) -> None:
    ids = [p.patient_id for p in demo.patients]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    seen: set[str] = set()
    for p in demo.patients:
        assert p.visits, p.patient_id
        assert p.visits == sort_visits(p.visits)
        for v in p.visits:
            assert v.visit_id not in seen
            seen.add(v.visit_id)
    # every kept stay really belongs to its patient's hospital in patient.csv
    with gzip.open(DEMO / "patient.csv.gz", "rt", newline="") as fh:
        hosp = {r["patientunitstayid"]: r["hospitalid"] for r in csv.DictReader(fh)}
    for p in demo.patients:
        assert {hosp[v.visit_id] for v in p.visits} == {p.hospital}
    # 002-1039: stay 141765 (unitvisitnumber 1) comes before 141764 (unitvisitnumber 2)
    by_id = {p.patient_id: p for p in demo.patients}
    assert [v.visit_id for v in by_id["002-1039"].visits] == ["141765", "141764"]


@needs_demo
def test_demo_codes_format(demo: Cohort) -> None:
    for p in demo.patients:
        for v in p.visits:
            for code in v.diagnoses:
                assert "." not in code and code[0] in "0123456789VE", code
                assert 3 <= len(code) <= 5
            for code in v.procedures:
                assert 1 <= code.count("|") + 1 <= 3, code
            for code in v.labels:
                assert len(code) == 4 and code[0].isalpha() and code[1:3].isdigit()
            for seq in (v.diagnoses, v.procedures, v.labels):
                assert list(seq) == sorted(set(seq))


@needs_demo
def test_demo_icd10_only_rows_give_no_diagnosis(demo: Cohort) -> None:
    per_stay: dict[str, list[str]] = {}
    with gzip.open(DEMO / "diagnosis.csv.gz", "rt", newline="") as fh:
        for r in csv.DictReader(fh):
            per_stay.setdefault(r["patientunitstayid"], []).append(r["icd9code"])
    icd10_only = [
        sid
        for sid, fields in per_stay.items()
        if any(f.strip() for f in fields)
        and all(not f.strip() or f.strip()[0] in "ABCDFGHIJKLMNOPQRSTUZ" for f in fields)
    ]
    visits = _visits(demo)
    checked = [sid for sid in icd10_only if sid in visits]
    assert len(checked) == 3  # 2861097, 3331430, 1550318 (measured)
    for sid in checked:
        assert visits[sid][2].diagnoses == (), sid
    assert demo.stats["diagnosis_rows_without_icd9"] == 275
    assert demo.stats["diagnosis_rows_without_code"] == 3721


@needs_demo
def test_demo_hand_checked_stays(demo: Cohort) -> None:
    visits = _visits(demo)
    # 2958289: dx "578.9, K92.2", "", "518.82"; meds ACETAMINOPHEN, LACTATED RINGERS,
    # OXYCODONE, and two unnamed rows: HICL 2879 (prednisone elsewhere) and HICL 14778
    # (D5-1/2NS + KCl elsewhere).
    pid, hosp, v = visits["2958289"]
    assert (pid, hosp) == ("028-1004", "411")
    assert v.diagnoses == ("51882", "5789")
    assert v.labels == ("B05B", "H02A", "N02A", "N02B")
    assert v.procedures == (
        "cardiovascular|intravenous fluid|blood product administration",
        "pulmonary|ventilation and oxygenation|mechanical ventilation",
    )
    # 849186: only named drug is a CANCELLED magnesium oxide order; unnamed HICL 57
    # (ipratropium elsewhere) and 6545 (Pulmicort elsewhere) back-fill R03B.
    _, _, v = visits["849186"]
    assert v.diagnoses == ("51882", "99592")
    assert v.labels == ("R03B",)
    assert "A12C" not in v.labels
    # 141765: warfarin, aspirin, diltiazem, lisinopril, pantoprazole, tramadol,
    # atorvastatin, saline; no diagnosis rows at all.
    _, _, v = visits["141765"]
    assert v.diagnoses == ()
    assert v.labels == ("A02B", "B01A", "B05B", "C08D", "C09A", "C10A", "N02A")


@needs_demo
def test_demo_label_and_lexicon_coverage(demo: Cohort) -> None:
    s = demo.stats
    frac_labelled = s["visits_with_labels"] / s["stays_kept"]
    print(
        f"\neICU demo: {s['visits_with_labels']}/{s['stays_kept']} visits "
        f"({frac_labelled:.1%}) have >=1 ATC-3 label; {s['distinct_labels']} distinct labels"
    )
    assert s["visits_with_labels"] == sum(bool(v.labels) for p in demo.patients for v in p.visits)
    assert 0.70 <= frac_labelled <= 0.76  # measured 73.5%; 42 hospitals have no medication
    named = s["mapped_drug_rows"] + s["unmapped_drug_rows"]
    coverage = s["mapped_drug_rows"] / named
    print(f"lexicon covers {coverage:.2%} of {named} named, non-cancelled medication rows")
    assert coverage >= 0.99  # measured 99.9%
    assert s["hicl_backfilled_rows"] >= 20000  # measured 20,377
    assert 60 <= s["distinct_labels"] <= 90  # measured 78
    assert s["lexicon_patterns"] >= 300


@needs_demo
def test_demo_hospitals_without_medication_keep_visits(demo: Cohort) -> None:
    with gzip.open(DEMO / "medication.csv.gz", "rt", newline="") as fh:
        med_stays = {r["patientunitstayid"] for r in csv.DictReader(fh)}
    no_med = [
        h
        for h, patients in demo.by_hospital().items()
        if not any(v.visit_id in med_stays for p in patients for v in p.visits)
    ]
    assert len(no_med) == demo.stats["hospitals_without_medication"] == 42
    for h in no_med:
        for p in demo.by_hospital()[h]:
            assert all(v.labels == () for v in p.visits)


# --------------------------------------------------------------------------- synthetic tables

PATIENT_HEADER = [
    "patientunitstayid",
    "patienthealthsystemstayid",
    "uniquepid",
    "hospitalid",
    "hospitaldischargeyear",
    "hospitaladmitoffset",
    "unitvisitnumber",
]
MED_HEADER = ["patientunitstayid", "drugordercancelled", "drugname", "drughiclseqno"]


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buf.getvalue().encode("utf-8")
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _tiny(root: Path, *, gz: bool = True, med_rows: list[list[object]] | None = None) -> Path:
    ext = ".csv.gz" if gz else ".csv"
    _write(
        root / f"patient{ext}",
        PATIENT_HEADER,
        [
            [10, 100, "p1", 1, 2014, 0, 1],
            [11, 100, "p1", 1, 2014, -300, 2],  # later unit stay of the same hospital stay
            [12, 200, "p1", 2, 2015, 0, 1],  # other hospital: dropped
            [20, 150, "p2", 2, 2014, 0, 1],
        ],
    )
    _write(
        root / f"diagnosis{ext}",
        ["patientunitstayid", "icd9code"],
        [[10, "401.9, I10"], [10, ""], [11, "S22.4"], [12, "486, J18.9"], [20, "V08, Z21"]],
    )
    _write(
        root / f"treatment{ext}",
        ["patientunitstayid", "treatmentstring"],
        [[10, "a|b|c|d"], [20, "x|y"]],
    )
    if med_rows is None:
        med_rows = [
            [10, "No", "HEPARIN 5000 UNIT/ML", "1"],
            [11, "No", "", "1"],  # backfilled from HICL 1 -> B01A
            [11, "Yes", "FUROSEMIDE", "2"],  # cancelled: skipped
            [11, "No", "", "99"],  # HICL never named: unresolved
            [20, "No", "MYSTERY DRUG", "3"],  # unmapped
            [20, "No", "", "3"],  # HICL 3 only carries an unmapped name: unresolved
        ]
    _write(root / f"medication{ext}", MED_HEADER, med_rows)
    return root


@pytest.mark.parametrize("gz", [True, False])
def test_tiny_cohort(tmp_path: Path, gz: bool) -> None:
    cohort = read_eicu(_tiny(tmp_path, gz=gz))
    by_id = {p.patient_id: p for p in cohort.patients}
    assert sorted(by_id) == ["p1", "p2"]
    p1, p2 = by_id["p1"], by_id["p2"]
    assert p1.hospital == "1" and p2.hospital == "2"
    assert [v.visit_id for v in p1.visits] == ["10", "11"]
    v10, v11 = p1.visits
    assert v10.diagnoses == ("4019",) and v10.procedures == ("a|b|c",)
    assert v10.labels == ("B01A",)
    assert v11.diagnoses == () and v11.labels == ("B01A",)
    assert p2.visits[0].diagnoses == ("V08",) and p2.visits[0].labels == ()
    s = cohort.stats
    assert s["stays_read"] == 4 and s["stays_kept"] == 3
    assert s["dropped_cross_hospital_stays"] == 1 and s["patients_multi_hospital"] == 1
    assert s["hicl_backfilled_rows"] == 1
    assert s["cancelled_medication_rows"] == 1
    assert s["unmapped_drug_rows"] == 1
    assert s["unresolved_unnamed_drug_rows"] == 2
    assert s["diagnosis_rows_not_kept"] == 1
    assert s["hospitals_without_medication"] == 0


def test_tiny_treatment_depth(tmp_path: Path) -> None:
    cohort = read_eicu(_tiny(tmp_path), treatment_depth=1)
    assert {c for p in cohort.patients for v in p.visits for c in v.procedures} == {"a", "x"}


def test_hicl_majority_vote(tmp_path: Path) -> None:
    rows = [
        [10, "No", "HEPARIN", "7"],
        [10, "No", "HEPARIN FLUSH", "7"],
        [20, "No", "FUROSEMIDE", "7"],
        [11, "No", "", "7"],
    ]
    cohort = read_eicu(_tiny(tmp_path, med_rows=rows))
    v11 = next(v for p in cohort.patients for v in p.visits if v.visit_id == "11")
    assert v11.labels == ("B01A",)  # 2 votes B01A vs 1 vote C03C


def test_cancelled_only_hospital(tmp_path: Path) -> None:
    rows = [[20, "Yes", "FUROSEMIDE", "2"], [10, "No", "FUROSEMIDE", "2"]]
    cohort = read_eicu(_tiny(tmp_path, med_rows=rows))
    assert cohort.stats["hospitals_without_medication"] == 1
    assert cohort.stats["cancelled_medication_rows"] == 1


def test_upper_case_headers_and_file_names(tmp_path: Path) -> None:
    _tiny(tmp_path, gz=False)
    for table in ("patient", "diagnosis", "treatment", "medication"):
        src = tmp_path / f"{table}.csv"
        text = src.read_text()
        header, rest = text.split("\n", 1)
        src.unlink()
        (tmp_path / f"{table.upper()}.csv").write_text(header.upper() + "\n" + rest)
    cohort = read_eicu(tmp_path)
    assert cohort.stats["stays_kept"] == 3


def test_header_only_tables_are_allowed(tmp_path: Path) -> None:
    _tiny(tmp_path)
    _write(tmp_path / "medication.csv.gz", MED_HEADER, [])
    _write(tmp_path / "diagnosis.csv.gz", ["patientunitstayid", "icd9code"], [])
    cohort = read_eicu(tmp_path)
    assert cohort.stats["visits_with_labels"] == 0
    assert cohort.stats["hospitals_without_medication"] == 2


def test_missing_column(tmp_path: Path) -> None:
    _tiny(tmp_path)
    _write(tmp_path / "medication.csv.gz", ["patientunitstayid", "drugname"], [[10, "X"]])
    with pytest.raises(DataError, match=r"medication\.csv\.gz.*'drughiclseqno'"):
        read_eicu(tmp_path)


@pytest.mark.parametrize("table", ["patient", "diagnosis", "treatment", "medication"])
def test_missing_file(tmp_path: Path, table: str) -> None:
    _tiny(tmp_path)
    (tmp_path / f"{table}.csv.gz").unlink()
    with pytest.raises(DataError, match=f"'{table}' not found"):
        read_eicu(tmp_path)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_eicu(tmp_path / "nope")


def test_corrupt_gzip(tmp_path: Path) -> None:
    _tiny(tmp_path)
    (tmp_path / "treatment.csv.gz").write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataError, match=r"cannot read .*treatment\.csv\.gz"):
        read_eicu(tmp_path)


def test_truncated_gzip(tmp_path: Path) -> None:
    _tiny(tmp_path)
    path = tmp_path / "diagnosis.csv.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataError, match=r"cannot read .*diagnosis\.csv\.gz"):
        read_eicu(tmp_path)


def test_empty_files(tmp_path: Path) -> None:
    _tiny(tmp_path)
    (tmp_path / "medication.csv.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(DataError, match=r"medication\.csv\.gz is empty"):
        read_eicu(tmp_path)
    _tiny(tmp_path)
    _write(tmp_path / "patient.csv.gz", PATIENT_HEADER, [])
    with pytest.raises(DataError, match=r"patient\.csv\.gz has no rows"):
        read_eicu(tmp_path)


def test_bad_values(tmp_path: Path) -> None:
    _tiny(tmp_path)
    _write(tmp_path / "patient.csv.gz", PATIENT_HEADER, [[10, 100, "p1", 1, "twenty", 0, 1]])
    with pytest.raises(DataError, match="hospitaldischargeyear"):
        read_eicu(tmp_path)
    _write(tmp_path / "patient.csv.gz", PATIENT_HEADER, [[10, 100, "p1", "", 2014, 0, 1]])
    with pytest.raises(DataError, match="'hospitalid' is empty"):
        read_eicu(tmp_path)
    _write(tmp_path / "patient.csv.gz", PATIENT_HEADER, [[10, 100, "p1", 1, 2014, 0, 1]] * 2)
    with pytest.raises(DataError, match="appears twice"):
        read_eicu(tmp_path)
    _write(tmp_path / "patient.csv.gz", PATIENT_HEADER, [[10, 100, "p1"]])
    with pytest.raises(DataError, match="row has 3 fields"):
        read_eicu(tmp_path)


def test_custom_lexicon(tmp_path: Path) -> None:
    _tiny(tmp_path)
    lex = tmp_path / "lex.csv"
    lex.write_text("pattern,atc3,note\nMYSTERY DRUG,Z99Z,test\n")
    cohort = read_eicu(tmp_path, lexicon_path=lex)
    labels = Counter(c for p in cohort.patients for v in p.visits for c in v.labels)
    assert labels == Counter({"Z99Z": 1})  # stay 20: named row + HICL-3 backfill, same visit
    assert cohort.stats["hicl_backfilled_rows"] == 1
    with pytest.raises(DataError, match="lexicon not found"):
        read_eicu(tmp_path, lexicon_path=tmp_path / "missing.csv")
