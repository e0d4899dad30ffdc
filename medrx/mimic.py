"""MIMIC-III reader: ADMISSIONS, DIAGNOSES_ICD, PROCEDURES_ICD, PRESCRIPTIONS -> Cohort.

Label mapping follows the published GAMENet/SafeDrug recipe:

1. ``PRESCRIPTIONS.ndc`` (11 digits, ``"0"`` or empty = unknown) -> RxCUI with the dict
   literal ``ndc2rxnorm_mapping.txt`` (loaded with :func:`ast.literal_eval`, never eval);
   NDCs mapping to ``''`` are dropped.
2. RxCUI -> ATC level 4 with ``ndc2atc_level4.csv`` (column ``ATC5`` holds the 5-character
   ATC-4 code); as in the recipe, the FIRST row of the file for each RxCUI wins.
3. ATC-4 -> ATC-3: the first four characters (``"B01AB"`` -> ``"B01A"``).

A visit is one admission (``hadm_id``) with at least one diagnosis; by default it must
also have at least one ATC-3 label (``require_labels``) -- visits without drugs carry no
training signal. Procedures may be empty, and ``PROCEDURES_ICD`` may be absent (some
sites do not record it); the reader counts that in ``Cohort.stats``. GAMENet also keeps
only patients with two or more visits; that is ``min_visits=2`` here (default 1, because
the 100-patient demo has few readmissions).

Visits are ordered by ``admittime``. ICD-9 codes are kept exactly as MIMIC-III stores
them (no dot). Patients are tagged with ``hospital`` (default: the folder name).
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import zlib
from collections import defaultdict
from collections.abc import Container, MutableMapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from fedrx.errors import DataError
from fedrx.medrx.records import Cohort, Visit, gather_patients
from fedrx.medrx.tables import find_table, iter_rows

NDC_RXNORM_FILE = "ndc2rxnorm_mapping.txt"
RXNORM_ATC_FILES = ("ndc2atc_level4.csv", "ndc2atc_level4.csv.gz")
DDI_FILE = "ddi_atc3_pairs_gamenet.csv"


@dataclass(frozen=True)
class DrugMapping:
    """NDC -> RxCUI -> ATC-3 mapping tables."""

    ndc_to_rxcui: dict[str, str]
    rxcui_to_atc4: dict[str, str]

    def atc3(self, ndc: str) -> str | None:
        """ATC-3 class of an 11-digit NDC, or None when the recipe cannot map it."""
        rx = self.ndc_to_rxcui.get(ndc)
        if not rx:
            return None
        atc4 = self.rxcui_to_atc4.get(rx)
        if not atc4 or len(atc4) < 4:
            return None
        return atc4[:4]


def _read_ndc_rxnorm(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    try:
        obj = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise DataError(f"{path.name}: not a Python dict literal of NDC -> RxCUI") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path.name}: expected a dict literal, found {type(obj).__name__}")
    return {str(k).strip(): str(v).strip() for k, v in obj.items()}


def _read_rxnorm_atc(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        raw = gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")  # noqa: SIM115
        with io.TextIOWrapper(raw, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = [h.strip().upper() for h in next(reader, [])]
            if "RXCUI" not in header or "ATC5" not in header:
                raise DataError(f"{path.name}: missing column(s) RXCUI and/or ATC5")
            i_rx, i_atc = header.index("RXCUI"), header.index("ATC5")
            for row in reader:
                if len(row) <= max(i_rx, i_atc):
                    continue
                rx, atc = row[i_rx].strip(), row[i_atc].strip()
                if rx and atc and rx not in out:
                    out[rx] = atc
    except DataError:
        raise
    except (OSError, EOFError, zlib.error, csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    return out


@lru_cache(maxsize=4)
def _load_mapping_cached(mappings_dir: str) -> DrugMapping:
    d = Path(mappings_dir)
    ndc_file = d / NDC_RXNORM_FILE
    if not ndc_file.is_file():
        raise DataError(f"drug mapping {NDC_RXNORM_FILE} not found in {d}")
    atc_file = next((d / f for f in RXNORM_ATC_FILES if (d / f).is_file()), None)
    if atc_file is None:
        raise DataError(f"drug mapping ndc2atc_level4.csv(.gz) not found in {d}")
    return DrugMapping(_read_ndc_rxnorm(ndc_file), _read_rxnorm_atc(atc_file))


def load_drug_mapping(mappings_dir: Path) -> DrugMapping:
    """Load (and cache) the NDC -> ATC-3 mapping from a ``mappings/`` folder."""
    return _load_mapping_cached(str(Path(mappings_dir).resolve()))


def default_mappings_dir(root: Path) -> Path:
    """``root/mappings`` if present, else the shared MIMIC-III demo's mappings folder."""
    local = Path(root) / "mappings"
    if local.is_dir():
        return local
    parent = Path(root).parent / "mappings"
    if parent.is_dir():
        return parent
    from fedrx.medrx.datasets import shared_data_root

    shared = shared_data_root()
    if shared is not None and (shared / "mimic3-demo" / "mappings").is_dir():
        return shared / "mimic3-demo" / "mappings"
    raise DataError(
        f"no drug mappings for {root}: pass --mappings DIR (holding {NDC_RXNORM_FILE} and "
        "ndc2atc_level4.csv) or set FEDRX_DATA_ROOT"
    )


def prescription_labels(path: Path, mapping: DrugMapping, admissions: Container[str],
                        stats: MutableMapping[str, int]) -> dict[str, set[str]]:
    """``hadm_id -> ATC-3 labels`` of a prescriptions table (MIMIC-III or MIMIC-IV) through
    its NDC column. Rows are counted in ``stats`` (a ``defaultdict(int)``):
    ``prescription_rows``, and the skipped ones by reason: ``_unknown_admission`` (not in
    ``admissions``), ``_no_ndc`` (empty or "0"), ``_unmapped`` (no ATC-3 for the NDC)."""
    labels: dict[str, set[str]] = defaultdict(set)
    for row in iter_rows(path, ("hadm_id", "ndc")):
        stats["prescription_rows"] += 1
        hadm, ndc = row["hadm_id"].strip(), row["ndc"].strip()
        if hadm not in admissions:
            stats["prescription_rows_unknown_admission"] += 1
            continue
        if not ndc or ndc == "0":
            stats["prescription_rows_no_ndc"] += 1
            continue
        atc3 = mapping.atc3(ndc)
        if atc3 is None:
            stats["prescription_rows_unmapped"] += 1
            continue
        labels[hadm].add(atc3)
    return labels


def read_mimic3(
    root: Path,
    mappings_dir: Path | None = None,
    hospital: str | None = None,
    *,
    min_visits: int = 1,
    require_labels: bool = True,
) -> Cohort:
    """Read one MIMIC-III-layout folder into a :class:`Cohort` (one hospital)."""
    root = Path(root)
    if min_visits < 1:
        raise DataError(f"min_visits must be >= 1, got {min_visits}")
    hospital = hospital or root.resolve().name
    stats: dict[str, int] = defaultdict(int)

    # the layout first (a missing table or column is the more basic mistake), then mappings
    adm_path = find_table(root, "ADMISSIONS")
    assert adm_path is not None
    admissions: dict[str, tuple[str, str]] = {}
    for row in iter_rows(adm_path, ("subject_id", "hadm_id", "admittime")):
        hadm = row["hadm_id"].strip()
        if not hadm:
            continue
        admissions[hadm] = (row["subject_id"].strip(), row["admittime"].strip())
    stats["admissions"] = len(admissions)
    if not admissions:
        raise DataError(f"{adm_path.name}: no admissions (empty hospital)")
    mapping = load_drug_mapping(mappings_dir or default_mappings_dir(root))

    def codes(table: str, required: bool) -> dict[str, list[str]]:
        path = find_table(root, table, required=required)
        out: dict[str, list[str]] = defaultdict(list)
        if path is None:
            stats[f"missing_table_{table.lower()}"] = 1
            return out
        seq: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for row in iter_rows(path, ("hadm_id", "icd9_code")):
            code = row["icd9_code"].strip().replace(".", "")
            hadm = row["hadm_id"].strip()
            if not code or hadm not in admissions:
                stats[f"{table.lower()}_rows_skipped"] += 1
                continue
            try:
                s = int(row.get("seq_num") or 0)
            except ValueError:
                s = 0
            seq[hadm].append((s, code))
        for hadm, items in seq.items():
            items.sort()
            seen: dict[str, None] = {}
            for _, c in items:
                seen.setdefault(c, None)
            out[hadm] = list(seen)
        return out

    diagnoses = codes("DIAGNOSES_ICD", True)
    procedures = codes("PROCEDURES_ICD", False)

    rx_path = find_table(root, "PRESCRIPTIONS")
    assert rx_path is not None
    labels = prescription_labels(rx_path, mapping, admissions, stats)

    by_patient: dict[str, list[Visit]] = defaultdict(list)
    for hadm, (subject, admittime) in admissions.items():
        dx = diagnoses.get(hadm, [])
        lab = labels.get(hadm, set())
        if not dx:
            stats["visits_dropped_no_diagnosis"] += 1
            continue
        if require_labels and not lab:
            stats["visits_dropped_no_labels"] += 1
            continue
        by_patient[subject].append(
            Visit(hadm, admittime, tuple(dx), tuple(procedures.get(hadm, [])), tuple(sorted(lab)))
        )
    patients = gather_patients(by_patient, hospital, min_visits, stats,
                               order=lambda s: (len(s), s))
    if not patients:
        raise DataError(f"{root}: no usable visits (empty hospital: no admission has "
                        "diagnoses and mappable prescriptions)")
    return Cohort(name=hospital, patients=patients, stats=dict(stats))


def is_mimic3_folder(path: Path) -> bool:
    """True if ``path`` holds an ADMISSIONS table (case-insensitive, .csv or .csv.gz)."""
    try:
        return find_table(Path(path), "ADMISSIONS", required=False) is not None
    except DataError:
        return False
