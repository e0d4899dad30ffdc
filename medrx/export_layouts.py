"""EHR export layouts known to :mod:`fedrx.medrx.export_split` and their detection.

A :class:`Layout` says which column ties a row to a patient (``key``), where the patients
are listed, and which tables are dictionaries shared by every hospital (copied whole).
:func:`detect_layouts` recognises a folder; :func:`inventory` lists what a split copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedrx.errors import DataError
from fedrx.medrx.mimic import is_mimic3_folder
from fedrx.medrx.tables import find_table

FORMATS = ("mimic3", "mimic4", "eicu", "omop")

_OMOP_SHARED = frozenset({
    "concept", "concept_ancestor", "concept_class", "concept_relationship", "concept_synonym",
    "domain", "drug_strength", "relationship", "vocabulary", "source_to_concept_map",
    "care_site", "location", "provider", "cdm_source", "metadata", "cohort_definition",
    "attribute_definition",
})


@dataclass(frozen=True)
class Layout:
    """How a layout's rows belong to patients. ``key``: the column rows are filtered by;
    ``patient_table`` / ``patient_col``: where the patients are listed."""

    name: str
    key: str
    patient_table: str
    patient_col: str
    shared: frozenset[str]
    subfolders: bool  # tables live in sub-folders (MIMIC-IV hosp/, icu/)
    shared_prefix: str | None = None  # MIMIC: every D_* table is a dictionary

    def is_shared(self, stem: str) -> bool:
        """True for a dictionary table (lower-case ``stem``), copied whole to every export."""
        return stem in self.shared or bool(self.shared_prefix
                                           and stem.startswith(self.shared_prefix))


LAYOUTS = {
    "mimic3": Layout("mimic3", "subject_id", "patients", "subject_id",
                     frozenset({"caregivers"}), False, "d_"),
    "mimic4": Layout("mimic4", "subject_id", "hosp/patients", "subject_id",
                     frozenset({"provider", "caregiver"}), True, "d_"),
    "omop": Layout("omop", "person_id", "person", "person_id", _OMOP_SHARED, False),
    "eicu": Layout("eicu", "patientunitstayid", "patient", "uniquepid", frozenset(), False),
}


def has_table(root: Path, name: str) -> bool:
    """True if ``root`` holds table ``name`` (any case, ``.csv`` or ``.csv.gz``); never raises."""
    try:
        return find_table(root, name, required=False) is not None
    except DataError:
        return False


def detect_layouts(src: Path) -> list[str]:
    """Every layout ``src`` matches (normally one), in :data:`FORMATS` order."""
    found = []
    hosp = [p for p in src.iterdir() if p.is_dir() and p.name.lower() == "hosp"]
    if is_mimic3_folder(src) and not hosp:
        found.append("mimic3")
    if any(has_table(h, "admissions") for h in hosp):
        found.append("mimic4")
    if has_table(src, "patient"):
        found.append("eicu")
    if has_table(src, "person") and has_table(src, "visit_occurrence"):
        found.append("omop")
    return found


def table_stem(path: Path) -> str:
    """``"d_icd_diagnoses"`` for ``D_ICD_DIAGNOSES.csv`` or ``d_icd_diagnoses.csv.gz``."""
    name = path.name.lower()
    return name[: -len(".csv.gz")] if name.endswith(".csv.gz") else name[: -len(".csv")]


def is_table(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith((".csv", ".csv.gz"))


def inventory(src: Path, layout: Layout) -> tuple[list[str], list[str], list[str]]:
    """``(tables, copied, not_copied)`` as paths relative to ``src`` (folders end in /).

    Tables are the ``.csv`` / ``.csv.gz`` files of ``src`` (and, for a layout with
    sub-folders, of each sub-folder holding one); licence files are copied; anything else
    (checksums of the whole source, READMEs, other folders) is not."""
    tables: list[str] = []
    copied: list[str] = []
    skipped: list[str] = []
    dirs = [src]
    for p in sorted(src.iterdir()):
        if p.is_dir():
            if layout.subfolders and any(is_table(q) for q in p.iterdir()):
                dirs.append(p)
            else:
                skipped.append(p.name + "/")
    for d in dirs:
        for p in sorted(d.iterdir()):
            rel = p.relative_to(src).as_posix()
            if p.is_dir():
                if d is not src:
                    skipped.append(rel + "/")
            elif is_table(p):
                tables.append(rel)
            elif p.name.lower().startswith(("license", "licence")):
                copied.append(rel)
            else:
                skipped.append(rel)
    return tables, copied, skipped


def table_path(root: Path, name: str) -> Path:
    """The path of table ``name`` (``sub/name`` for a sub-folder); DataError if absent."""
    folder, _, stem = name.rpartition("/")
    path = find_table(root / folder if folder else root, stem)
    assert path is not None  # noqa: S101  (required=True raises instead of returning None)
    return path
