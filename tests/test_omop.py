"""OMOP CDM reader: the MIMIC-IV OMOP demo (real counts), and hand-made exports for the
ICD-version rule, the drug routes, the site filter and every error path."""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import pytest

from fedrx.errors import DataError
from fedrx.medrx.omop import is_omop_folder, omop_sites, read_omop
from fedrx.medrx.tables import find_table, iter_rows

PERSON = ["person_id", "year_of_birth", "care_site_id", "person_source_value"]
VISIT = ["visit_occurrence_id", "person_id", "visit_start_date", "visit_start_datetime",
         "care_site_id"]
DETAIL = ["visit_detail_id", "person_id", "visit_detail_start_date",
          "visit_detail_start_datetime", "care_site_id", "visit_occurrence_id"]
COND = ["condition_occurrence_id", "person_id", "condition_type_concept_id",
        "visit_occurrence_id", "visit_detail_id", "condition_source_value",
        "condition_source_concept_id"]
PROC = ["procedure_occurrence_id", "person_id", "visit_occurrence_id", "visit_detail_id",
        "procedure_source_value", "procedure_source_concept_id"]
DRUG = ["drug_exposure_id", "person_id", "drug_concept_id", "visit_occurrence_id",
        "visit_detail_id", "drug_source_value", "drug_source_concept_id"]
CONCEPT = ["concept_id", "concept_name", "domain_id", "vocabulary_id", "concept_class_id",
           "standard_concept", "concept_code"]


def _write(path: Path, header: list[str], rows: list[list[object]], *, gz: bool = False,
           upper: bool = False) -> None:
    head = [h.upper() for h in header] if upper else header
    opener = gzip.open if gz else open
    with opener(path, "wt", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(head)
        w.writerows(rows)


def write_omop(root: Path, *, gz: bool = False, upper: bool = False,
               drop: tuple[str, ...] = (), drugs: list[list[object]] | None = None) -> Path:
    """Persons -1 and 2; person 3 is unknown. Visits: -11 and 12 (person -1), 21 (person 2,
    diagnosis through visit_detail only), 22 (person 2, no drug rows), 31 (unknown person)."""
    root.mkdir(parents=True, exist_ok=True)
    tables: dict[str, tuple[list[str], list[list[object]]]] = {
        "person": (PERSON, [[-1, 1950, "", "a"], [2, 1960, "", "b"]]),
        "visit_occurrence": (VISIT, [
            [-11, -1, "2020-01-05", "2020-01-05 10:00:00", "700"],
            [12, -1, "2019-12-01", "", ""],
            [21, 2, "2021-03-01", "2021-03-01 08:00:00", ""],
            [22, 2, "2021-04-01", "2021-04-01 08:00:00", ""],
            [31, 3, "2021-05-01", "", ""],
        ]),
        "visit_detail": (DETAIL, [
            [901, 2, "2021-03-02", "2021-03-02 09:00:00", "800", 21],   # later: not the site
            [902, 2, "2021-03-01", "2021-03-01 08:00:00", "", 21],      # earliest, no site
            [903, 2, "2021-03-01", "2021-03-01 09:00:00", "801", 21],   # earliest with a site
            [904, -1, "2019-12-01", "2019-12-01 00:00:00", "800", 12],
        ]),
        "condition_occurrence": (COND, [
            [1, -1, 32821, -11, "", "401.9  ", 0],
            [2, -1, 32821, -11, "", "E8497", ""],             # either version: visit says 9
            [3, -1, 32817, -11, "", "SR (Sinus Rhythm)", ""],  # chart value: not ICD
            [4, -1, 32821, -11, "", "4019", ""],              # duplicate code, kept once
            [5, -1, 32821, 12, "", "I10", ""],
            [6, -1, 32821, 12, "", "E870", ""],               # either version: visit says 10
            [7, -1, 32821, 12, "", "E785", ""],               # E78.5: ICD-10 only
            [8, 2, 32821, "", 903, "25000", ""],              # visit through visit_detail
            [9, 2, 32821, 22, "", "V4582", ""],               # either, alone: unknown
            [10, 3, 32821, 31, "", "4280", ""],               # visit of an unknown person
            [11, 2, 32821, 999, "", "4280", ""],              # unknown visit
        ]),
        "procedure_occurrence": (PROC, [
            [1, -1, -11, "", "3893", ""], [2, -1, 12, "", "0DTJ4ZZ", ""],
            [3, -1, 12, "", "99219", ""], [4, -1, 12, "", "225459", ""],
        ]),
        "drug_exposure": (DRUG, drugs if drugs is not None else [
            [1, -1, 0, -11, "", "11111111111", ""],
            [2, -1, 0, -11, "", "Heparin Flush 10 mL", ""],
            [3, -1, 0, -11, "", "11111111111", ""],
            [4, -1, 0, 12, "", "33333-3333-33", ""],           # hyphenated 5-4-2 NDC
            [5, 2, 0, 21, "", "99999999999", ""],              # NDC without an RxCUI
            [6, 2, 0, 21, "", "0456-7890-12", ""],             # 4-4-2 -> 00456789012
        ]),
        "care_site": (["care_site_id", "care_site_name"], [["700", "Ward A"], ["800", "ICU"],
                                                            ["801", "Ward B"]]),
    }
    for name, (header, rows) in tables.items():
        if name in drop:
            continue
        fname = (name.upper() if upper else name) + (".csv.gz" if gz else ".csv")
        _write(root / fname, header, rows, gz=gz, upper=upper)
    maps = root / "mappings"
    maps.mkdir(exist_ok=True)
    (maps / "ndc2rxnorm_mapping.txt").write_text(
        "{'11111111111': '123', '33333333333': '456', '00456789012': '456'}")
    (maps / "ndc2atc_level4.csv").write_text(
        "YEAR,MONTH,NDC,RXCUI,ATC5\n2010,01,1,123,B01AB\n2010,01,2,456,C10AA\n")
    return root


def test_hand_made_export(tmp_path: Path) -> None:
    c = read_omop(write_omop(tmp_path / "x"))
    assert c.name == "omop" and c.hospitals == ["omop"]
    by_id = {p.patient_id: p for p in c.patients}
    assert set(by_id) == {"-1", "2"}
    p1 = by_id["-1"]
    assert [v.visit_id for v in p1.visits] == ["12", "-11"]          # time order
    v12, v11 = p1.visits
    assert v11.diagnoses == ("4019", "E8497") and v11.procedures == ("3893",)
    assert v12.diagnoses == ("10:I10", "10:E870", "10:E785")
    assert v12.procedures == ("10:0DTJ4ZZ",)
    assert v11.labels == ("B01A",) and v12.labels == ("C10A",)
    assert v12.time == "2019-12-01"                                 # date when no datetime
    (v21,) = by_id["2"].visits
    assert (v21.visit_id, v21.diagnoses, v21.labels) == ("21", ("25000",), ("C10A",))
    s = c.stats
    assert (s["persons"], s["visit_occurrences"], s["visits_unknown_person"]) == (2, 4, 1)
    assert (s["condition_rows"], s["condition_rows_unknown_visit"]) == (11, 2)
    assert (s["condition_rows_icd9"], s["condition_rows_icd10"]) == (4, 3)
    assert s["condition_rows_not_icd"] == 1
    assert s["condition_rows_icd_version_from_visit"] == 2
    assert s["condition_rows_icd_version_unknown"] == 1
    assert (s["procedure_rows_icd9"], s["procedure_rows_icd10"],
            s["procedure_rows_not_icd"]) == (1, 1, 2)
    assert (s["drug_rows"], s["drug_rows_mapped"], s["drug_rows_mapped_ndc"]) == (6, 4, 4)
    assert (s["drug_rows_no_ndc"], s["drug_rows_unmapped_ndc"]) == (1, 1)
    assert s["visits_dropped_no_diagnosis"] == 1                    # 22: only "V4582"
    assert (s["visits_icd9"], s["visits_icd10"], s["visits"], s["patients"]) == (2, 1, 3, 2)
    assert s["visits_site_from_visit_occurrence"] == 1
    assert s["visits_site_from_visit_detail"] == 2
    assert s["visits_site_from_none"] == 1


def test_upper_case_and_gzip_read_the_same(tmp_path: Path) -> None:
    a = read_omop(write_omop(tmp_path / "a"))
    b = read_omop(write_omop(tmp_path / "b", gz=True, upper=True))
    assert a.patients == b.patients and a.stats == b.stats


def test_visit_without_drug_rows_is_counted(tmp_path: Path) -> None:
    root = write_omop(tmp_path / "x", drugs=[[1, -1, 0, -11, "", "11111111111", ""]])
    c = read_omop(root)
    assert [v.visit_id for p in c.patients for v in p.visits] == ["-11"]
    assert c.stats["visits_dropped_no_drug_rows"] == 2                # 12 and 21


def test_min_visits(tmp_path: Path) -> None:
    c = read_omop(write_omop(tmp_path / "x"), min_visits=2)
    assert [p.patient_id for p in c.patients] == ["-1"]
    assert c.stats["patients_dropped_min_visits"] == 1
    with pytest.raises(DataError, match="min_visits"):
        read_omop(tmp_path / "x", min_visits=0)


def test_site_filter_by_id_and_name(tmp_path: Path) -> None:
    root = write_omop(tmp_path / "x")
    assert omop_sites(root) == {"700": 1, "800": 1, "801": 1}
    a = read_omop(root, site="801")                                  # 21: earliest detail
    assert a.hospitals == ["801"] and [p.patient_id for p in a.patients] == ["2"]
    assert a.stats["visits_dropped_other_site"] == 3
    b = read_omop(root, site="Ward A", hospital="h1")                # visit_occurrence's own
    assert b.hospitals == ["h1"]
    assert [v.visit_id for p in b.patients for v in p.visits] == ["-11"]
    c = read_omop(root, site="800")                                  # 12: from visit_detail
    assert [v.visit_id for p in c.patients for v in p.visits] == ["12"]


def test_unknown_site_names_the_sites(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        read_omop(write_omop(tmp_path / "x"), site="999")
    msg = str(e.value)
    assert "\n" not in msg and "'999' not found" in msg
    assert "700 (Ward A)" in msg and "801 (Ward B)" in msg


@pytest.mark.parametrize(("table", "message"), [
    ("drug_exposure", "OMOP export without drug_exposure"),
    ("person", "OMOP export without person"),
    ("visit_occurrence", "OMOP export without visit_occurrence"),
    ("condition_occurrence", "OMOP export without condition_occurrence"),
])
def test_missing_table(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_omop(write_omop(tmp_path / "x", drop=(table,)))


def test_missing_procedures_are_counted(tmp_path: Path) -> None:
    c = read_omop(write_omop(tmp_path / "x", drop=("procedure_occurrence",)))
    assert c.stats["missing_table_procedure_occurrence"] == 1
    assert all(v.procedures == () for p in c.patients for v in p.visits)


def test_no_drug_maps_to_atc3(tmp_path: Path) -> None:
    root = write_omop(tmp_path / "x", drugs=[[1, -1, 0, -11, "", "99999999999", ""],
                                             [2, -1, 0, 12, "", "Saline", ""]])
    with pytest.raises(DataError, match="no drug maps to ATC-3") as e:
        read_omop(root)
    assert "1 with an unmapped NDC, 1 without an NDC" in str(e.value)


def test_bad_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="OMOP folder not found"):
        read_omop(tmp_path / "absent")
    assert not is_omop_folder(tmp_path / "absent")
    assert not is_omop_folder(write_omop(tmp_path / "x", drop=("person",)))
    assert is_omop_folder(write_omop(tmp_path / "y", drop=("drug_exposure",)))


def _vocabulary(root: Path) -> None:
    """A tiny Athena-like vocabulary: an RxNorm drug under ATC 3rd class B01A; ICD and
    non-ICD source concepts."""
    _write(root / "concept.csv", CONCEPT, [
        [19019273, "aspirin 81 MG Oral Tablet", "Drug", "RxNorm", "Clinical Drug", "S",
         "243670"],
        [21600961, "ANTITHROMBOTIC AGENTS", "Drug", "ATC", "ATC 3rd", "C", "B01A"],
        [21604253, "ANALGESICS AND ANTIPYRETICS", "Drug", "ATC", "ATC 3rd", "C", "N02B"],
        [21600960, "ANTITHROMBOTIC AGENTS", "Drug", "ATC", "ATC 2nd", "C", "B01"],
        [45591453, "Long term use of aspirin", "Condition", "ICD10CM", "5-char billing code",
         "", "Z79.82"],
        [1567956, "Pedestrian injured", "Condition", "ICD10CM", "4-char billing code", "",
         "V00.1"],
        [44836914, "Hypertension", "Condition", "SNOMED", "Clinical Finding", "S", "38341003"],
    ])
    _write(root / "concept_ancestor.csv",
           ["ancestor_concept_id", "descendant_concept_id", "min_levels_of_separation",
            "max_levels_of_separation"],
           [[21600961, 19019273, 2, 2], [21604253, 19019273, 2, 2],
            [21600960, 19019273, 3, 3]])


def test_atc_hierarchy_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDRX_DATA_ROOT", str(tmp_path / "no-shared-data"))
    root = write_omop(tmp_path / "x", drugs=[[1, -1, 19019273, -11, "", "Aspirin 81", ""],
                                             [2, -1, 0, -11, "", "11111111111", ""]])
    (root / "mappings" / "ndc2rxnorm_mapping.txt").unlink()           # no NDC route at all
    _vocabulary(root)
    # conditions whose source concept decides: ICD10CM even for an "either" shape, SNOMED
    with open(root / "condition_occurrence.csv", "a", newline="") as fh:
        csv.writer(fh).writerows([[20, -1, 32821, -11, "", "Z79.82", 45591453],
                                  [21, -1, 32821, -11, "", "V001", 1567956],
                                  [22, -1, 32821, -11, "", "4011", 44836914]])
    c = read_omop(root)
    (v11,) = [v for p in c.patients for v in p.visits]
    assert v11.visit_id == "-11" and v11.labels == ("B01A", "N02B")
    # SNOMED "4011" skipped; "E8497" (either version) is dropped: its visit has 2 ICD-9 rows
    # ("4019" twice) and 2 ICD-10 rows, a tie
    assert v11.diagnoses == ("4019", "10:Z7982", "10:V001")
    s = c.stats
    assert (s["drug_rows_mapped_atc_hierarchy"], s["drug_rows_multiple_atc3"]) == (1, 1)
    assert (s["drug_rows_mapped_ndc"], s["drug_rows_unmapped_ndc"]) == (0, 1)
    assert s["ndc_mapping_missing"] == 1 and s["vocabulary_drug_concepts_with_atc3"] == 1
    assert s["condition_rows_not_icd"] == 2                          # chart value + SNOMED
    assert (s["condition_rows_icd_version_unknown"], s["visits_mixed_icd"]) == (2, 1)


def test_no_route_without_vocabulary_or_mappings(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDRX_DATA_ROOT", str(tmp_path / "no-shared-data"))
    root = write_omop(tmp_path / "x")
    (root / "mappings" / "ndc2rxnorm_mapping.txt").unlink()
    with pytest.raises(DataError, match="ndc2rxnorm_mapping.txt not found"):
        read_omop(root)
    shutil.rmtree(root / "mappings")
    with pytest.raises(DataError, match="no drug mappings for"):
        read_omop(root)


# --- the MIMIC-IV demo in OMOP CDM 5.3 (shared/data/omop-demo, see its SOURCE.md) ---

def test_demo_counts(omop_demo: Path) -> None:
    c = read_omop(omop_demo)
    s = c.stats
    assert (s["persons"], s["visit_occurrences"]) == (100, 852)
    assert (len(c.patients), c.n_visits) == (100, 251)
    # 3,833 billing diagnoses (ICD-9 1,852, ICD-10 1,981) and 12,608 ICU rhythm chart rows
    assert (s["condition_rows"], s["condition_rows_not_icd"]) == (16441, 12608)
    assert (s["condition_rows_icd9"], s["condition_rows_icd10"]) == (1852, 1981)
    assert (s["condition_rows_icd_version_from_visit"],
            s["condition_rows_icd_version_unknown"]) == (141, 0)
    # 305 ICD-10-PCS billing procedures; 32 CPT/HCPCS and 18,110 ICU item events skipped
    assert (s["procedure_rows_icd9"], s["procedure_rows_icd10"],
            s["procedure_rows_not_icd"]) == (0, 305, 18142)
    # 9,411 of 18,229 drug rows (61.7% of the 15,252 with an NDC) map to ATC-3
    assert (s["drug_rows"], s["drug_rows_mapped"], s["drug_rows_no_ndc"],
            s["drug_rows_unmapped_ndc"]) == (18229, 9411, 2977, 5841)
    assert (s["visits_dropped_no_diagnosis"], s["visits_dropped_no_drug_rows"],
            s["visits_dropped_no_mapped_drug"]) == (577, 24, 0)
    assert (s["visits_icd9"], s["visits_icd10"], s["visits_mixed_icd"]) == (145, 106, 0)
    assert (s["visits_site_from_visit_detail"], s["visits_site_from_none"]) == (275, 577)
    labels = {lab for p in c.patients for v in p.visits for lab in v.labels}
    assert len(labels) == 106
    for p in c.patients:
        assert p.hospital == "omop"
        assert list(p.visits) == sorted(p.visits, key=lambda v: (v.time, v.visit_id))


def test_demo_icd_versions_match_mimic4(omop_demo: Path, data_root: Path) -> None:
    """Every diagnosis, with the version the rule gave it, is a diagnoses_icd row of the
    same admission in mimic4-demo (which states icd_version)."""
    hosp = data_root / "mimic4-demo" / "hosp"
    if not hosp.is_dir():
        pytest.skip("mimic4-demo not found")
    truth: dict[str, set[str]] = {}
    path = find_table(hosp, "diagnoses_icd")
    assert path is not None
    for r in iter_rows(path, ("hadm_id", "icd_code", "icd_version")):
        code = r["icd_code"].strip()
        truth.setdefault(r["hadm_id"], set()).add(code if r["icd_version"] == "9"
                                                  else "10:" + code)
    path = find_table(omop_demo, "visit_occurrence")
    assert path is not None
    hadm = {r["visit_occurrence_id"]: r["visit_source_value"].split("|")[1]
            for r in iter_rows(path, ("visit_occurrence_id", "visit_source_value"))}
    c = read_omop(omop_demo)
    checked = 0
    for p in c.patients:
        for v in p.visits:
            assert set(v.diagnoses) <= truth[hadm[v.visit_id]], v.visit_id
            checked += len(v.diagnoses)
    assert checked > 3000


def test_demo_shape_rule_alone_gives_the_same_split(omop_demo: Path, tmp_path: Path) -> None:
    """Without concept.csv (whose local concepts mark the chart rows) the shape rule
    classifies every condition row the same way."""
    for f in omop_demo.iterdir():
        if f.name.endswith(".csv") and f.name != "concept.csv":
            (tmp_path / f.name).symlink_to(f)
    a, b = read_omop(omop_demo), read_omop(tmp_path)
    assert a.patients == b.patients
    assert {k: v for k, v in a.stats.items() if k.startswith("condition")} == \
        {k: v for k, v in b.stats.items() if k.startswith("condition")}


def test_demo_sites(omop_demo: Path) -> None:
    sites = omop_sites(omop_demo)
    assert (len(sites), sum(sites.values())) == (24, 275)
    ed = read_omop(omop_demo, site="Emergency Department")
    assert ed.hospitals == ["Emergency Department"]
    assert ed.stats["visits_dropped_other_site"] == 852 - 181
    assert (len(ed.patients), ed.n_visits) == (65, 157)
    with pytest.raises(DataError, match="not found") as e:
        read_omop(omop_demo, site="Cardiac Surgery Ward 9")
    assert "(Emergency Department)" in str(e.value) and "\n" not in str(e.value)
