"""The canonical visit-record format that every EHR reader produces.

A :class:`Visit` is one hospital admission (MIMIC-III ``hadm_id``) or one ICU unit stay
(eICU ``patientunitstayid``). A :class:`Patient` holds that patient's visits in time
order. Codes are plain strings in their source vocabulary:

* diagnoses: ICD-9-CM codes without the dot (``"4019"``), as MIMIC-III stores them;
* procedures: ICD-9-CM procedure codes (MIMIC-III) or eICU treatment paths;
* labels: ATC level-3 classes (``"B01A"``), the prediction target.
* MIMIC-IV: ICD-9 codes as above (unprefixed); ICD-10 codes (ICD-10-CM diagnoses,
  ICD-10-PCS procedures) without the dot and prefixed ``"10:"`` (``"10:I10"``,
  ``"10:0DTJ4ZZ"``), so the two ICD versions never collide.

A :class:`Cohort` is everything a reader returned for one dataset: patients, each
tagged with the hospital that owns them. Every patient belongs to exactly one hospital.
Records serialise to JSON Lines (one patient per line) -- never pickle.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedrx.atomic import atomic_write_text
from fedrx.errors import DataError


@dataclass(frozen=True)
class Visit:
    """One visit. ``time`` is any sortable string (ISO date-time, or a zero-padded key)."""

    visit_id: str
    time: str
    diagnoses: tuple[str, ...]
    procedures: tuple[str, ...]
    labels: tuple[str, ...]

    def to_json(self) -> dict:
        return {
            "visit_id": self.visit_id,
            "time": self.time,
            "diagnoses": list(self.diagnoses),
            "procedures": list(self.procedures),
            "labels": list(self.labels),
        }

    @staticmethod
    def from_json(obj: dict) -> Visit:
        try:
            return Visit(
                visit_id=str(obj["visit_id"]),
                time=str(obj["time"]),
                diagnoses=tuple(str(c) for c in obj["diagnoses"]),
                procedures=tuple(str(c) for c in obj["procedures"]),
                labels=tuple(str(c) for c in obj["labels"]),
            )
        except (KeyError, TypeError) as exc:
            raise DataError(f"malformed visit record: missing or invalid field {exc}") from None


@dataclass(frozen=True)
class Patient:
    """A patient and their visits, sorted by ``(time, visit_id)``."""

    patient_id: str
    hospital: str
    visits: tuple[Visit, ...]

    def to_json(self) -> dict:
        return {
            "patient_id": self.patient_id,
            "hospital": self.hospital,
            "visits": [v.to_json() for v in self.visits],
        }

    @staticmethod
    def from_json(obj: dict) -> Patient:
        try:
            visits = tuple(Visit.from_json(v) for v in obj["visits"])
            return Patient(str(obj["patient_id"]), str(obj["hospital"]), visits)
        except (KeyError, TypeError) as exc:
            raise DataError(f"malformed patient record: missing or invalid field {exc}") from None


@dataclass
class Cohort:
    """All patients a reader produced, plus reader statistics for reporting."""

    name: str
    patients: list[Patient]
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def hospitals(self) -> list[str]:
        return sorted({p.hospital for p in self.patients})

    def by_hospital(self) -> dict[str, list[Patient]]:
        out: dict[str, list[Patient]] = {}
        for p in self.patients:
            out.setdefault(p.hospital, []).append(p)
        return dict(sorted(out.items()))

    @property
    def n_visits(self) -> int:
        return sum(len(p.visits) for p in self.patients)


def sort_visits(visits: Iterable[Visit]) -> tuple[Visit, ...]:
    return tuple(sorted(visits, key=lambda v: (v.time, v.visit_id)))


def gather_patients(
    by_patient: Mapping[str, Iterable[Visit]],
    hospital: str,
    min_visits: int,
    stats: MutableMapping[str, int],
    order: Callable[[str], Any] | None = None,
) -> list[Patient]:
    """A reader's kept visits (``patient id -> visits``, any order) as :class:`Patient` s of
    ``hospital``, patients in ``sorted(by_patient, key=order)`` order, visits sorted.

    A patient with fewer than ``min_visits`` visits is dropped and counted
    (``stats["patients_dropped_min_visits"]``, a ``defaultdict(int)``, incremented per
    drop); ``stats["patients"]`` and ``stats["visits"]`` are set to what is kept.
    """
    patients = []
    for pid in sorted(by_patient, key=order):
        visits = sort_visits(by_patient[pid])
        if len(visits) < min_visits:
            stats["patients_dropped_min_visits"] += 1
            continue
        patients.append(Patient(pid, hospital, visits))
    stats["patients"] = len(patients)
    stats["visits"] = sum(len(p.visits) for p in patients)
    return patients


def write_jsonl(path: Path, patients: Iterable[Patient]) -> None:
    """Write patients as JSON Lines, atomically."""
    text = "".join(json.dumps(p.to_json(), sort_keys=True) + "\n" for p in patients)
    atomic_write_text(Path(path), text)


def read_jsonl(path: Path) -> Iterator[Patient]:
    """Read patients written by :func:`write_jsonl`."""
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
                yield Patient.from_json(obj)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
