"""Reader for the eICU Collaborative Research Database layout.

:func:`read_eicu` turns an eICU folder (the open demo or the full release) into the
canonical :class:`~fedrx.medrx.records.Cohort` named ``"eicu"``.

Tables (``NAME.csv.gz`` or ``NAME.csv``, file names and headers in any case):

* ``patient`` -- one row per ICU unit stay. Patient = ``uniquepid``, visit =
  ``patientunitstayid``, hospital = ``hospitalid``.
* ``diagnosis`` -- ``icd9code`` holds "ICD-9, ICD-10" strings; see
  :func:`~fedrx.medrx.eicu_codes.split_icd_codes`.
* ``treatment`` -- ``treatmentstring`` paths, truncated by
  :func:`~fedrx.medrx.eicu_codes.truncate_treatment`.
* ``medication`` -- ``drugname`` / ``drughiclseqno``, mapped to ATC level 3 through a
  curated lexicon (:class:`~fedrx.medrx.eicu_codes.DrugLexicon`,
  ``resources/eicu_drug_atc3.csv``).

All four tables must exist; ``patient`` must have at least one row, the other three may
hold only a header. ``hospital.csv`` is not needed. Every problem with the input
(missing file or column, corrupt gzip, bad value) is a :class:`~fedrx.errors.DataError`
naming the file and the problem.

Invariants of the returned cohort:

* every patient belongs to exactly one hospital: the hospital of the patient's FIRST
  stay; stays of that patient at other hospitals are dropped (counted in
  ``stats["dropped_cross_hospital_stays"]``);
* visits are sorted by :attr:`Visit.time`, a zero-padded key built from
  (``hospitaldischargeyear``, ``patienthealthsystemstayid``, minutes from hospital
  admission to unit admission = ``-hospitaladmitoffset``, ``unitvisitnumber``), ties
  broken by the stay id;
* diagnoses are ICD-9-CM codes without the dot (``"4019"``), procedures are treatment
  paths of at most ``treatment_depth`` levels, labels are ATC-3 classes (``"B01A"``);
  each is a sorted tuple without duplicates;
* every kept stay is a visit, even one with no codes or labels;
* patients are ordered by ``patient_id``.

Tables are streamed with the :mod:`csv` module; only per-stay code sets are held in
memory, so the full eICU release (about 200k stays, 7M medication rows) fits easily.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from fedrx.errors import ConfigError, DataError
from fedrx.medrx.eicu_codes import load_lexicon, split_icd_codes, truncate_treatment
from fedrx.medrx.records import Cohort, Patient, Visit, sort_visits
from fedrx.medrx.tables import find_table, iter_columns

PATIENT_COLUMNS = (
    "patientunitstayid",
    "patienthealthsystemstayid",
    "uniquepid",
    "hospitalid",
    "hospitaldischargeyear",
    "hospitaladmitoffset",
    "unitvisitnumber",
)
DIAGNOSIS_COLUMNS = ("patientunitstayid", "icd9code")
TREATMENT_COLUMNS = ("patientunitstayid", "treatmentstring")
MEDICATION_COLUMNS = ("patientunitstayid", "drugname", "drughiclseqno", "drugordercancelled")
_TIME_BIAS = 10**9  # keeps the (possibly negative) minutes field non-negative in the key


def _int_field(path: Path, line: int, column: str, value: str) -> int:
    value = value.strip()
    if not value:
        return 0
    try:
        return int(float(value)) if "." in value else int(value)
    except ValueError:
        raise DataError(
            f"{path}:{line}: column {column!r} is not a number: {value[:40]!r}"
        ) from None


# --------------------------------------------------------------------------- reader


@dataclass
class _Stay:
    patient: str
    hospital: str
    time: str


def _read_patients(path: Path, stats: Counter[str]) -> dict[str, _Stay]:
    """All stays of the patient table, keyed by stay id, hospital not yet reconciled."""
    stays: dict[str, _Stay] = {}
    for line, (stay, hss, pid, hosp, year, admitoff, uvn) in iter_columns(path, PATIENT_COLUMNS):
        stay, pid, hosp = stay.strip(), pid.strip(), hosp.strip()
        for col, val in (("patientunitstayid", stay), ("uniquepid", pid), ("hospitalid", hosp)):
            if not val:
                raise DataError(f"{path}:{line}: column {col!r} is empty")
        if stay in stays:
            raise DataError(f"{path}:{line}: patientunitstayid {stay} appears twice")
        if not (year.strip() and hss.strip() and admitoff.strip() and uvn.strip()):
            stats["stays_missing_time_fields"] += 1
        y = _int_field(path, line, "hospitaldischargeyear", year)
        h = _int_field(path, line, "patienthealthsystemstayid", hss)
        m = -_int_field(path, line, "hospitaladmitoffset", admitoff) + _TIME_BIAS
        u = _int_field(path, line, "unitvisitnumber", uvn)
        if min(y, h, m, u) < 0:
            raise DataError(f"{path}:{line}: negative or out-of-range time field")
        stays[stay] = _Stay(pid, hosp, f"{y:04d}-{h:012d}-{m:012d}-{u:04d}")
    if not stays:
        raise DataError(f"{path} has no rows")
    return stays


def _assign_hospitals(stays: dict[str, _Stay], stats: Counter[str]) -> dict[str, _Stay]:
    """Keep, for every patient, only the stays at the hospital of their first stay."""
    first: dict[str, tuple[str, str, str]] = {}
    hospitals_of: dict[str, set[str]] = {}
    for sid, s in stays.items():
        key = (s.time, sid, s.hospital)
        if s.patient not in first or key < first[s.patient]:
            first[s.patient] = key
        hospitals_of.setdefault(s.patient, set()).add(s.hospital)
    stats["patients_multi_hospital"] = sum(len(h) > 1 for h in hospitals_of.values())
    kept = {sid: s for sid, s in stays.items() if s.hospital == first[s.patient][2]}
    stats["dropped_cross_hospital_stays"] = len(stays) - len(kept)
    return kept


def read_eicu(
    root: Path,
    *,
    lexicon_path: Path | None = None,
    treatment_depth: int = 3,
) -> Cohort:
    """Read an eICU folder into a :class:`Cohort` named ``"eicu"``.

    ``lexicon_path`` replaces the shipped drug lexicon. ``treatment_depth`` is how many
    levels of ``treatmentstring`` are kept: 3 levels ("cardiovascular|arrhythmias|
    anticoagulant administration") keeps the procedure vocabulary at a few hundred codes
    (the demo has ~400 3-level paths vs ~1,200 full paths), which a per-hospital model
    can actually learn; deeper levels are mostly drug or dose detail already covered by
    the medication labels.

    Labels: a non-cancelled medication row (``drugordercancelled`` != "Yes") whose
    ``drugname`` matches the lexicon gives its ATC-3 class. A row with an empty
    ``drugname`` takes the majority class (ties: smallest code) of its
    ``drughiclseqno`` among the named, mapped rows of the same medication table.
    Unmatched names are counted in ``stats["unmapped_drug_rows"]``, never an error.
    Rows of any table whose stay is not kept (absent from ``patient``, or dropped as a
    cross-hospital stay) are skipped and counted in ``stats["<table>_rows_not_kept"]``.
    See the module docstring for the invariants of the result.
    """
    if not isinstance(treatment_depth, int) or treatment_depth < 1:
        raise ConfigError(f"treatment_depth must be a positive integer, got {treatment_depth!r}")
    root = Path(root)
    paths = {
        t: find_table(root, t) for t in ("patient", "diagnosis", "treatment", "medication")
    }
    lexicon = load_lexicon(lexicon_path)
    stats: Counter[str] = Counter()

    all_stays = _read_patients(paths["patient"], stats)
    stats["stays_read"] = len(all_stays)
    stays = _assign_hospitals(all_stays, stats)
    del all_stays

    diagnoses: dict[str, set[str]] = {}
    for _line, (sid, field) in iter_columns(paths["diagnosis"], DIAGNOSIS_COLUMNS):
        stats["diagnosis_rows"] += 1
        sid = sid.strip()
        if sid not in stays:
            stats["diagnosis_rows_not_kept"] += 1
            continue
        if not field.strip():
            stats["diagnosis_rows_without_code"] += 1
            continue
        icd9, _other = split_icd_codes(field)
        if not icd9:
            stats["diagnosis_rows_without_icd9"] += 1
            continue
        diagnoses.setdefault(sid, set()).update(icd9)

    procedures: dict[str, set[str]] = {}
    for _line, (sid, tpath) in iter_columns(paths["treatment"], TREATMENT_COLUMNS):
        stats["treatment_rows"] += 1
        sid = sid.strip()
        if sid not in stays:
            stats["treatment_rows_not_kept"] += 1
            continue
        code = truncate_treatment(tpath, treatment_depth)
        if code:
            procedures.setdefault(sid, set()).add(code)

    labels: dict[str, set[str]] = {}
    hicl_votes: dict[str, Counter[str]] = {}
    pending: Counter[tuple[str, str]] = Counter()  # (stay, hicl) -> unnamed rows
    stays_with_medication: set[str] = set()
    rows = iter_columns(paths["medication"], MEDICATION_COLUMNS)
    for _line, (sid, name, hicl, cancelled) in rows:
        stats["medication_rows"] += 1
        if cancelled.strip().lower() == "yes":
            stats["cancelled_medication_rows"] += 1
            continue
        sid, name, hicl = sid.strip(), name.strip(), hicl.strip()
        known = sid in stays
        if known:
            stays_with_medication.add(sid)
        else:
            stats["medication_rows_not_kept"] += 1
        if name:
            atc = lexicon.match(name)
            if atc is None:
                if known:
                    stats["unmapped_drug_rows"] += 1
                continue
            if hicl:
                hicl_votes.setdefault(hicl, Counter())[atc] += 1
            if known:
                stats["mapped_drug_rows"] += 1
                labels.setdefault(sid, set()).add(atc)
        elif known:
            if hicl:
                pending[(sid, hicl)] += 1
            else:
                stats["unresolved_unnamed_drug_rows"] += 1

    hicl_atc = {
        h: min(votes.items(), key=lambda kv: (-kv[1], kv[0]))[0] for h, votes in hicl_votes.items()
    }
    for (sid, hicl), n in pending.items():
        atc = hicl_atc.get(hicl)
        if atc is None:
            stats["unresolved_unnamed_drug_rows"] += n
        else:
            stats["hicl_backfilled_rows"] += n
            labels.setdefault(sid, set()).add(atc)
    del pending, hicl_votes

    per_patient: dict[str, list[Visit]] = {}
    hospital_of: dict[str, str] = {}
    for sid, s in stays.items():
        visit = Visit(
            visit_id=sid,
            time=s.time,
            diagnoses=tuple(sorted(diagnoses.get(sid, ()))),
            procedures=tuple(sorted(procedures.get(sid, ()))),
            labels=tuple(sorted(labels.get(sid, ()))),
        )
        per_patient.setdefault(s.patient, []).append(visit)
        hospital_of[s.patient] = s.hospital
    patients = [
        Patient(pid, hospital_of[pid], sort_visits(per_patient[pid])) for pid in sorted(per_patient)
    ]

    hospitals = {s.hospital for s in stays.values()}
    with_med = {stays[sid].hospital for sid in stays_with_medication}
    visits = [v for p in patients for v in p.visits]
    stats["stays_kept"] = len(stays)
    stats["patients"] = len(patients)
    stats["hospitals"] = len(hospitals)
    stats["hospitals_without_medication"] = len(hospitals - with_med)
    stats["visits_with_medication_rows"] = len(stays_with_medication)
    stats["visits_with_diagnoses"] = sum(bool(v.diagnoses) for v in visits)
    stats["visits_with_procedures"] = sum(bool(v.procedures) for v in visits)
    stats["visits_with_labels"] = sum(bool(v.labels) for v in visits)
    stats["distinct_diagnoses"] = len({c for v in visits for c in v.diagnoses})
    stats["distinct_procedures"] = len({c for v in visits for c in v.procedures})
    stats["distinct_labels"] = len({c for v in visits for c in v.labels})
    stats["lexicon_patterns"] = lexicon.size
    for key in (
        "stays_missing_time_fields",
        "cancelled_medication_rows",
        "mapped_drug_rows",
        "unmapped_drug_rows",
        "hicl_backfilled_rows",
        "unresolved_unnamed_drug_rows",
        "diagnosis_rows_without_code",
        "diagnosis_rows_without_icd9",
    ):
        stats.setdefault(key, 0)
    return Cohort(
        name="eicu", patients=patients, stats={k: int(v) for k, v in sorted(stats.items())}
    )
