"""MIMIC-IV reader: ``hosp/`` admissions, diagnoses, procedures, prescriptions -> Cohort.

Layout: a folder holding ``hosp/`` (as PhysioNet ships MIMIC-IV), or the ``hosp/`` folder
itself, with the tables ``admissions``, ``diagnoses_icd`` and ``prescriptions`` (required),
``procedures_icd`` and ``patients`` (optional; their absence is counted in ``Cohort.stats``).
Each table is ``NAME.csv`` or ``NAME.csv.gz``, file names and headers in any case.

Code convention (MIMIC-IV mixes ICD-9 and ICD-10; ``icd_version`` says which a row holds):

* ICD-9 codes (``icd_version`` 9) exactly as MIMIC-III stores them: no dot, no prefix
  (``"4019"``, procedure ``"3961"``), so MIMIC-III and MIMIC-IV ICD-9 codes coincide;
* ICD-10 codes (``icd_version`` 10: ICD-10-CM diagnoses, ICD-10-PCS procedures) without
  the dot and prefixed ``"10:"`` (``"10:I10"``, ``"10:0DTJ4ZZ"``), so the two versions never
  collide (ICD-9 ``"V707"`` and an ICD-10 ``"V707"`` are different diseases);
* labels are ATC level-3 classes (``"B01A"``), mapped from ``prescriptions.ndc`` exactly as
  for MIMIC-III (:func:`fedrx.medrx.mimic.load_drug_mapping`: NDC -> RxCUI -> ATC-4 ->
  ATC-3). Drug mappings come from ``mappings_dir``, else ``hosp/mappings``, the MIMIC-IV
  folder's ``mappings/``, else the shared MIMIC-III demo's (``default_mappings_dir``).

A visit is one admission (``hadm_id``) with at least one diagnosis and at least one
mapped ATC-3 label (as :func:`fedrx.medrx.mimic.read_mimic3` with ``require_labels``);
visits are ordered by ``admittime`` (ties by ``hadm_id``), a patient is a ``subject_id``
(unique in the cohort) and patients with fewer than ``min_visits`` visits are dropped.
Diagnoses and procedures keep ``seq_num`` order without duplicates; labels are sorted.

Nothing is dropped silently: ``Cohort.stats`` counts diagnosis/procedure rows per ICD
version, kept visits coded in ICD-9 / ICD-10 / both (``visits_icd9``, ``visits_icd10``,
``visits_mixed_icd``), admissions mixing versions (``admissions_mixed_icd_versions``;
PhysioNet codes each admission in one version), prescription rows with and without an
NDC and NDC rows mapped / unmapped to ATC-3, visits dropped for lack of a diagnosis or a
mapped drug, and rows naming an unknown admission. Every problem with the input (wrong
layout, missing table or column, no drug mapping files, no NDC mapping to ATC-3, unreadable
file) is one :class:`~fedrx.errors.DataError` line.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from fedrx.errors import DataError
from fedrx.medrx.mimic import default_mappings_dir, load_drug_mapping, prescription_labels
from fedrx.medrx.records import Cohort, Visit, gather_patients
from fedrx.medrx.tables import find_table, iter_rows

ICD10_PREFIX = "10:"
"""Prefix of ICD-10 codes in canonical records (ICD-9 codes are unprefixed)."""


def icd_code(code: str, version: str) -> str | None:
    """Canonical form of a MIMIC-IV ``(icd_code, icd_version)``; None if unusable.

    ``("4019", "9")`` -> ``"4019"``; ``("I10", "10")`` -> ``"10:I10"``. Dots are removed.
    None for an empty code or a version other than 9 or 10.
    """
    code = code.strip().replace(".", "")
    if not code:
        return None
    version = version.strip()
    if version == "9":
        return code
    if version == "10":
        return ICD10_PREFIX + code
    return None


def _hosp_dir(path: Path) -> Path:
    """The folder holding the ``hosp`` tables: ``path/hosp`` or ``path`` itself."""
    if not path.exists():
        raise DataError(f"MIMIC-IV folder not found: {path}")
    if not path.is_dir():
        raise DataError(f"{path}: not a folder (expected a MIMIC-IV folder holding hosp/)")
    subs = sorted(p for p in path.iterdir() if p.is_dir() and p.name.lower() == "hosp")
    if subs:
        return subs[0]
    if find_table(path, "admissions", required=False) is not None:
        return path
    raise DataError(f"{path}: not the MIMIC-IV layout (no hosp/ folder and no admissions table)")


def _has_column(path: Path, column: str) -> bool:
    try:
        next(iter_rows(path, (column,)), None)
    except DataError:
        return False
    return True


def is_mimic4_folder(path: Path) -> bool:
    """True for a folder holding ``hosp/`` with an admissions table, or the hosp folder itself.

    A folder without ``hosp/`` counts only if its ``diagnoses_icd`` table has the MIMIC-IV
    ``icd_version`` column, so a MIMIC-III folder (``icd9_code``) is not taken for one.
    Never raises.
    """
    path = Path(path)
    try:
        if not path.is_dir():
            return False
        subs = [p for p in path.iterdir() if p.is_dir() and p.name.lower() == "hosp"]
        if any(find_table(s, "admissions", required=False) for s in subs):
            return True
        if find_table(path, "admissions", required=False) is None:
            return False
        dx = find_table(path, "diagnoses_icd", required=False)
        return dx is not None and _has_column(dx, "icd_version")
    except (DataError, OSError):
        return False


def _read_admissions(hosp: Path, stats: dict[str, int]) -> dict[str, tuple[str, str]]:
    """``hadm_id -> (subject_id, admittime)``; duplicates and gaps counted in ``stats``."""
    path = find_table(hosp, "admissions")
    assert path is not None
    out: dict[str, tuple[str, str]] = {}
    for row in iter_rows(path, ("subject_id", "hadm_id", "admittime")):
        hadm, subject = row["hadm_id"].strip(), row["subject_id"].strip()
        if not hadm or not subject:
            stats["admissions_rows_no_id"] += 1
            continue
        if hadm in out:
            stats["admissions_rows_duplicate_hadm_id"] += 1
            continue
        time = row["admittime"].strip()
        if not time:
            stats["admissions_no_admittime"] += 1
        out[hadm] = (subject, time)
    stats["admissions"] = len(out)
    if not out:
        raise DataError(f"{path}: no admissions (empty hospital)")
    return out


def _check_patients(hosp: Path, admissions: dict[str, tuple[str, str]],
                    stats: dict[str, int]) -> None:
    """Count admissions whose subject the (optional) patients table lacks."""
    path = find_table(hosp, "patients", required=False)
    if path is None:
        stats["missing_table_patients"] = 1
        return
    known = {row["subject_id"].strip() for row in iter_rows(path, ("subject_id",))}
    stats["patients_table_rows"] = len(known)
    stats["admissions_unknown_subject"] = sum(
        subject not in known for subject, _ in admissions.values())


def _read_codes(hosp: Path, table: str, admissions: dict[str, tuple[str, str]],
                stats: dict[str, int], versions: dict[str, set[str]] | None,
                *, required: bool) -> dict[str, tuple[str, ...]]:
    """``hadm_id -> canonical codes`` in ``seq_num`` order, duplicates removed.

    Rows are counted per ICD version (``{table}_icd9_rows``...); rows with an unknown
    admission or an empty code (``{table}_rows_skipped``) or a version other than 9/10
    (``{table}_rows_bad_version``) are skipped. ``versions`` collects each admission's
    ICD versions when given.
    """
    path = find_table(hosp, table, required=required)
    name = table.lower()
    if path is None:
        stats[f"missing_table_{name}"] = 1
        return {}
    base = name.removesuffix("_icd")
    seq: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for row in iter_rows(path, ("hadm_id", "icd_code", "icd_version")):
        hadm, version = row["hadm_id"].strip(), row["icd_version"].strip()
        code = icd_code(row["icd_code"], version)
        if hadm not in admissions or not row["icd_code"].strip():
            stats[f"{name}_rows_skipped"] += 1
            continue
        if code is None:
            stats[f"{name}_rows_bad_version"] += 1
            continue
        stats[f"{base}_icd{version}_rows"] += 1
        if versions is not None:
            versions[hadm].add(version)
        try:
            s = int(row.get("seq_num") or 0)
        except ValueError:
            s = 0
        seq[hadm].append((s, code))
    out: dict[str, tuple[str, ...]] = {}
    for hadm, items in seq.items():
        items.sort()
        out[hadm] = tuple(dict.fromkeys(c for _, c in items))
    return out


def _read_labels(hosp: Path, mappings: Path, admissions: dict[str, tuple[str, str]],
                 stats: dict[str, int]) -> dict[str, set[str]]:
    """``hadm_id -> ATC-3 labels`` from ``prescriptions.ndc``; every row is counted."""
    mapping = load_drug_mapping(mappings)
    path = find_table(hosp, "prescriptions")
    assert path is not None
    labels = prescription_labels(path, mapping, admissions, stats)
    stats["prescription_rows_with_ndc"] = stats.get("prescription_rows", 0) - sum(
        stats.get(f"prescription_rows_{k}", 0) for k in ("unknown_admission", "no_ndc"))
    stats["prescription_rows_mapped"] = \
        stats["prescription_rows_with_ndc"] - stats.get("prescription_rows_unmapped", 0)
    if not stats["prescription_rows_with_ndc"]:
        raise DataError(f"{path}: no prescription row of a known admission has an NDC "
                        "(the ATC-3 labels come from prescriptions.ndc)")
    if not stats["prescription_rows_mapped"]:
        raise DataError(f"{path}: none of {stats['prescription_rows_with_ndc']} NDC rows maps "
                        f"to ATC-3 through the drug mappings in {mappings}")
    return labels


def read_mimic4(
    path: Path,
    mappings_dir: Path | None = None,
    *,
    hospital: str = "mimic4",
    min_visits: int = 1,
) -> Cohort:
    """Read one MIMIC-IV folder (holding ``hosp/``, or ``hosp/`` itself) into a Cohort.

    All patients are tagged ``hospital`` (MIMIC-IV is one centre and has no site column).
    """
    if min_visits < 1:
        raise DataError(f"min_visits must be >= 1, got {min_visits}")
    hosp = _hosp_dir(Path(path))
    stats: dict[str, int] = defaultdict(int)
    admissions = _read_admissions(hosp, stats)  # the layout first, then the mappings
    mappings = Path(mappings_dir) if mappings_dir else default_mappings_dir(hosp)
    _check_patients(hosp, admissions, stats)
    versions: dict[str, set[str]] = defaultdict(set)
    diagnoses = _read_codes(hosp, "diagnoses_icd", admissions, stats, versions, required=True)
    procedures = _read_codes(hosp, "procedures_icd", admissions, stats, None, required=False)
    labels = _read_labels(hosp, mappings, admissions, stats)
    stats["admissions_mixed_icd_versions"] = sum(len(v) > 1 for v in versions.values())

    for key in ("visits_dropped_no_diagnosis", "visits_dropped_no_labels",
                "visits_icd9", "visits_icd10", "visits_mixed_icd"):
        stats[key] = 0
    by_patient: dict[str, list[Visit]] = defaultdict(list)
    for hadm, (subject, admittime) in admissions.items():
        dx = diagnoses.get(hadm, ())
        if not dx:
            stats["visits_dropped_no_diagnosis"] += 1
            continue
        if not labels.get(hadm):
            stats["visits_dropped_no_labels"] += 1
            continue
        v = versions[hadm]
        stats["visits_mixed_icd" if len(v) > 1 else f"visits_icd{next(iter(v))}"] += 1
        by_patient[subject].append(Visit(hadm, admittime, dx, procedures.get(hadm, ()),
                                         tuple(sorted(labels[hadm]))))
    patients = gather_patients(by_patient, hospital, min_visits, stats,
                               order=lambda s: (len(s), s))
    if not patients:
        raise DataError(f"{path}: no usable visits (no patient has {min_visits} or more "
                        "admissions with diagnoses and mapped prescriptions)")
    return Cohort(name=hospital, patients=patients, stats=dict(stats))
