"""Tests of the eICU code mapping (fedrx.medrx.eicu_codes): ICD field splitting, treatment
path truncation and the drug lexicon."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fedrx.errors import DataError
from fedrx.medrx.eicu_codes import (
    DEFAULT_LEXICON_PATH,
    load_lexicon,
    split_icd_codes,
    truncate_treatment,
)

# --------------------------------------------------------------------------- ICD splitting


@pytest.mark.parametrize(
    ("field", "icd9", "other"),
    [
        ("401.9, I10", ("4019",), ("I10",)),
        ("", (), ()),
        ("  ", (), ()),
        ("486, 486, 486, J18.9", ("486",), ("J18.9",)),
        ("276.2, E87.2", ("2762",), ("E87.2",)),  # ICD-10 E code: 2 digits
        ("276.1, E87.0, E87.1", ("2761",), ("E87.0", "E87.1")),
        ("E980.2, 965.00, T40.60", ("E9802", "96500"), ("T40.60",)),  # ICD-9 E code first
        ("518.4, E980.2, 965.00, T40.60", ("5184", "E9802", "96500"), ("T40.60",)),
        ("V62.84, R45.851", ("V6284",), ("R45.851",)),
        ("V08, Z21", ("V08",), ("Z21",)),
        ("S22.4", (), ("S22.4",)),  # ICD-10 only
        ("E87.1", (), ("E87.1",)),  # ICD-10 E code only
        ("R51", (), ("R51",)),
        ("31.1", (), ("31.1",)),  # ICD-9 PROCEDURE code, not a diagnosis
        ("250.13, E10.1", ("25013",), ("E10.1",)),
        ("584.9, E930.8, N17.9", ("5849", "E9308"), ("N17.9",)),
        ("I10, V62.84", (), ("I10", "V62.84")),  # V after ICD-10 = ICD-10 by position
        ("v62.84 , i10", ("V6284",), ("I10",)),
    ],
)
def test_split_icd_codes(field: str, icd9: tuple[str, ...], other: tuple[str, ...]) -> None:
    assert split_icd_codes(field) == (icd9, other)


def test_truncate_treatment() -> None:
    path = (
        "cardiovascular|arrhythmias|anticoagulant administration|"
        "low molecular weight heparin|enoxaparin"
    )
    assert truncate_treatment(path) == "cardiovascular|arrhythmias|anticoagulant administration"
    assert truncate_treatment(path, 1) == "cardiovascular"
    assert truncate_treatment(path, 10) == path
    assert truncate_treatment("a | b") == "a|b"
    assert truncate_treatment("") == ""


# --------------------------------------------------------------------------- lexicon


def test_shipped_lexicon_is_well_formed() -> None:
    with open(DEFAULT_LEXICON_PATH, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and list(rows[0]) == ["pattern", "atc3", "note"]
    assert len(rows) >= 300
    for row in rows:
        assert row["pattern"] == row["pattern"].upper().strip()
        assert len(row["atc3"]) == 4 and row["atc3"][0].isalpha() and row["atc3"][1:3].isdigit()
        assert row["note"].strip()
    assert len({r["pattern"] for r in rows}) == len(rows)


@pytest.mark.parametrize(
    ("name", "atc3"),
    [
        ("WARFARIN SODIUM 5 MG PO TABS", "B01A"),
        ("HEPARIN SOD (PORCINE)", "B01A"),
        ("ENOXAPARIN SODIUM 40 MG/0.4ML SC SOLN", "B01A"),
        ("ASPIRIN EC 81 MG PO TBEC", "B01A"),
        ("INSULIN-LISPRO (RDNA) *UNIT* INJ", "A10A"),
        ("furosemide", "C03C"),
        ("METOPROLOL TARTRATE 25 MG PO TABS", "C07A"),
        ("PANTOPRAZOLE SODIUM 40 MG IV SOLR", "A02B"),
        ("ACETAMINOPHEN 325 MG PO TABS", "N02B"),
        ("HYDROCODONE-ACETAMINOPHEN 5-325 MG PO TABS", "N02A"),  # longest pattern wins
        ("acetaminophen-oxyCODONE 325 mg-5 mg oral tablet", "N02A"),
        ("IPRATROPIUM-ALBUTEROL 0.5-2.5 (3) MG/3ML IN SOLN", "R03A"),
        ("ATROVENT", "R03B"),
        ("POTASSIUM CHLORIDE CRYS ER 20 MEQ PO TBCR", "A12B"),
        ("MAGNESIUM SULFATE IN D5W 1 GRAM/100 ML", "A12C"),
        ("VANCOmycin 1 GM in NS 250 mL IVPB", "J01X"),
        ("1000 ML FLEX CONT : SODIUM CHLORIDE 0.9 % IV SOLN", "B05B"),
        ("K-DUR", "A12B"),
        ("1 ML VIAL : DEXAMETHASONE SODIUM PHOSPHATE 4 MG/ML IJ SOLN", "H02A"),
        ("NSS INFUSION", "B05B"),
        ("TRANSDERM-SCOP", "A04A"),
        ("ZZZ UNKNOWN DRUG", None),
        ("", None),
    ],
)
def test_lexicon_matches(name: str, atc3: str | None) -> None:
    assert load_lexicon().match(name) == atc3


def test_lexicon_whole_words_only(tmp_path: Path) -> None:
    path = tmp_path / "lex.csv"
    path.write_text("pattern,atc3,note\nNS,B05B,x\nHEPARIN,B01A,x\nHEPARIN FLUSH,B05X,x\n")
    lex = load_lexicon(path)
    assert lex.match("NSS 0.9%") is None  # NS is not a word of NSS
    assert lex.match("LOWHEPARIN") is None
    assert lex.match("heparin/flush 10 unit") == "B05X"  # longest, punctuation-insensitive
    assert lex.match("heparin 5000 unit in NS") == "B01A"


def test_lexicon_rejects_bad_codes(tmp_path: Path) -> None:
    path = tmp_path / "lex.csv"
    path.write_text("pattern,atc3,note\nHEPARIN,B01AB01,too long\n")
    with pytest.raises(DataError, match="ATC level-3"):
        load_lexicon(path)
    path.write_text("pattern,atc3,note\nHEPARIN,B01A,x\nheparin,B01A,dup\n")
    with pytest.raises(DataError, match="twice"):
        load_lexicon(path)
    path.write_text("pattern,note\nHEPARIN,x\n")
    with pytest.raises(DataError, match="'atc3'"):
        load_lexicon(path)
