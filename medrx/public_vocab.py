"""A public vocabulary: built from the code systems themselves, never from patients.

A vocabulary built from the hospitals' data reveals which codes occur at which hospital
(threat_model.md P29). This one is fixed before any hospital looks at its data:

* diagnoses: every ICD-9-CM category (3 digits ``001``-``999``, ``V01``-``V91``, and the
  4-character E-code categories ``E000``-``E999``) and every ICD-10-CM category shape
  (``10:`` + a letter and two digits, ``10:A00``-``10:Z99``);
* procedures: every ICD-9-CM procedure category (2 digits ``00``-``99``) and every ICD-10-PCS
  section + body-system pair (``10:`` + 2 characters of the PCS alphabet, which has no I, O);
* labels: the ATC level-3 classes of the drug-mapping tables (NDC -> ATC, public reference
  data, not patient data) and of the eICU drug lexicon shipped with fedrx.

:func:`to_categories` maps a cohort's codes onto it by truncation (the rule above; an
ICD-9 code is stored without its dot, an ICD-10 code with the ``10:`` prefix, see
:mod:`fedrx.medrx.records`). Codes of no public code system (e.g. eICU treatment paths) have
no category: they are dropped from the features and COUNTED in the returned statistics.
"""

from __future__ import annotations

import csv
import gzip
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from importlib import resources
from pathlib import Path

from fedrx.errors import DataError
from fedrx.medrx.records import Cohort, Patient
from fedrx.medrx.vocab import Vocabulary

ICD10 = "10:"
PCS_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
_ICD9_DX = re.compile(r"^(?:\d{3}|V\d{2}|E\d{3})")
_ICD10_DX = re.compile(r"^[A-Z]\d[0-9A-Z]")
_ICD9_PX = re.compile(r"^\d{2}")
_PCS = re.compile(rf"^[{PCS_ALPHABET}]{{2}}")
_ATC3 = re.compile(r"^[A-Z]\d{2}[A-Z]$")


def dx_category(code: str) -> str | None:
    """The public diagnosis category of a code, or None if it is no ICD code."""
    if code.startswith(ICD10):
        m = _ICD10_DX.match(code[len(ICD10):])
        return ICD10 + m.group(0)[:3] if m else None
    m = _ICD9_DX.match(code)
    return m.group(0) if m else None


def px_category(code: str) -> str | None:
    """The public procedure category of a code, or None if it is no ICD procedure code."""
    if code.startswith(ICD10):
        m = _PCS.match(code[len(ICD10):])
        return ICD10 + m.group(0) if m else None
    m = _ICD9_PX.match(code)
    return m.group(0) if m and code.isdigit() else None


def diagnosis_categories() -> tuple[str, ...]:
    icd9 = ([f"{i:03d}" for i in range(1, 1000)] + [f"V{i:02d}" for i in range(1, 92)]
            + [f"E{i:03d}" for i in range(1000)])
    icd10 = [f"{ICD10}{c}{i:02d}" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" for i in range(100)]
    return tuple(icd9 + icd10)


def procedure_categories() -> tuple[str, ...]:
    return tuple([f"{i:02d}" for i in range(100)]
                 + [f"{ICD10}{a}{b}" for a in PCS_ALPHABET for b in PCS_ALPHABET])


def lexicon_atc3() -> set[str]:
    """ATC-3 classes of the eICU drug lexicon shipped with fedrx."""
    text = resources.files("fedrx.medrx").joinpath("resources/eicu_drug_atc3.csv").read_text()
    return {r["atc3"] for r in csv.DictReader(text.splitlines()) if _ATC3.match(r["atc3"])}


def mapping_atc3(mappings_dir: Path) -> set[str]:
    """ATC-3 classes of the public NDC -> ATC table (``ndc2atc_level4.csv[.gz]``, column
    ATC5: the first 4 characters are the ATC-3 class) and of ``atc3_label_vocab.csv``."""
    out: set[str] = set()
    d = Path(mappings_dir)
    table = next((d / n for n in ("ndc2atc_level4.csv.gz", "ndc2atc_level4.csv")
                  if (d / n).is_file()), None)
    if table is None:
        raise DataError(f"{d}: no ndc2atc_level4.csv(.gz) to take the ATC-3 classes from")
    opener = gzip.open if table.suffix == ".gz" else open
    try:
        with opener(table, "rt", encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                atc = (row.get("ATC5") or row.get("atc5") or "")[:4]
                if _ATC3.match(atc):
                    out.add(atc)
        labels = d / "atc3_label_vocab.csv"
        if labels.is_file():
            with open(labels, encoding="utf-8", newline="") as fh:
                out |= {r["atc3"] for r in csv.DictReader(fh) if _ATC3.match(r["atc3"])}
    except (OSError, KeyError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(f"cannot read the ATC classes of {table}: {exc}") from None
    return out


def public_vocabulary(atc3: Iterable[str]) -> Vocabulary:
    """The public vocabulary with labels ``atc3`` (sorted; invalid class codes refused)."""
    labels = sorted(set(atc3))
    bad = [c for c in labels if not _ATC3.match(c)]
    if bad or not labels:
        raise DataError(f"not ATC-3 classes: {', '.join(bad[:5]) or '(none given)'}")
    return Vocabulary(diagnosis_categories(), procedure_categories(), tuple(labels))


def to_categories(cohort: Cohort) -> tuple[Cohort, dict[str, int]]:
    """``cohort`` with every diagnosis and procedure code replaced by its public category
    (duplicates within a visit merged, order kept); labels unchanged. Returns the counts of
    codes mapped and of codes of no public code system (dropped)."""
    stats: Counter[str] = Counter()

    def cats(codes: tuple[str, ...], fn, kind: str) -> tuple[str, ...]:
        out: dict[str, None] = {}
        for c in codes:
            cat = fn(c)
            if cat is None:
                stats[f"{kind}_codes_without_public_category"] += 1
            else:
                stats[f"{kind}_codes_mapped_to_categories"] += 1
                out[cat] = None
        return tuple(out)

    patients = []
    for p in cohort.patients:
        visits = tuple(replace(v, diagnoses=cats(v.diagnoses, dx_category, "dx"),
                               procedures=cats(v.procedures, px_category, "px"))
                       for v in p.visits)
        patients.append(Patient(p.patient_id, p.hospital, visits))
    return Cohort(cohort.name, patients, {**cohort.stats, **stats}), dict(stats)
