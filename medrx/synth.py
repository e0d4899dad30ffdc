"""Seeded synthetic multi-hospital EHR in the MIMIC-III layout, for medication recommendation.

The task: predict a visit's set of ATC-3 drug classes from its ICD-9 diagnosis and
procedure codes (and the previous visit's drugs). :func:`generate` writes, per hospital
``hosp01``, ``hosp02``, ... the four MIMIC-III tables the readers use (``ADMISSIONS``,
``DIAGNOSES_ICD``, ``PROCEDURES_ICD``, ``PRESCRIPTIONS``, real column layout, lower-case
headers), a ``mappings/`` folder in the GAMENet format (NDC -> RxCUI dict literal,
RxCUI -> ATC-4 CSV, DDI pairs, label vocabulary) and ``SYNTH.json``.

All codes are real: ICD-9 diagnoses/procedures from the MIMIC-III demo dictionaries
(preferring codes the demo actually uses), ATC-3 labels from GAMENet's vocabulary and
real 11-digit NDCs whose RxCUI maps (unambiguously) to those labels. Drug names come from
the demo's PRESCRIPTIONS where the NDC occurs there, else a placeholder ``"Rx <atc4>
<rxcui>"``.

Generative model (all draws from one ``numpy.random.Generator(PCG64(seed))``):

* ``n_clusters`` latent disease clusters, each with a sparse distribution over
  diagnoses (a chapter-coherent block of codes plus common comorbidities), procedures
  and drug classes;
* each patient has 1-3 chronic clusters drawn from the hospital's case mix
  (``Dirichlet(case_mix_skew * n_clusters * popularity)``), which drift between visits
  (``drift``), plus an acute cluster per visit (probability ``acute_prob``);
* a visit's diagnoses/procedures are noisy-OR emissions of its active clusters plus
  uniform noise codes;
* its drugs are a noisy-OR of: indications of the present diagnoses and procedures (the
  strong, learnable signal), latent cluster drugs, routine ward drugs, persistence of the
  previous visit's drugs (``persistence``) and noise -- so copy-last-visit is a
  reasonable but clearly beatable baseline;
* hospital skew: sizes (``size_skew``, power law), case mix (``case_mix_skew``),
  prescribing habits (``prescribing_skew``: a hospital replaces a drug class by its own
  preferred class of the same ATC-2 therapeutic group), label propensity (``label_skew``:
  per-hospital logit shifts) and missing tables (``missing_tables``).

Generation is deterministic for a seed: the same config writes byte-identical files.
"""

from __future__ import annotations

import ast
import csv
import datetime as _dt
import gzip
import io
import json
import math
import os
import shutil
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedrx.errors import ConfigError, DataError

__all__ = [
    "MIN_PATIENTS_PER_HOSPITAL",
    "OPTIONAL_TABLES",
    "SynthConfig",
    "SynthSummary",
    "find_mimic3_demo",
    "generate",
]

MIN_PATIENTS_PER_HOSPITAL = 10
MAX_HOSPITALS = 99
OPTIONAL_TABLES = ("DIAGNOSES_ICD", "PROCEDURES_ICD", "PRESCRIPTIONS")

ADMISSIONS_COLUMNS = (
    "row_id", "subject_id", "hadm_id", "admittime", "dischtime", "deathtime",
    "admission_type", "admission_location", "discharge_location", "insurance", "language",
    "religion", "marital_status", "ethnicity", "edregtime", "edouttime", "diagnosis",
    "hospital_expire_flag", "has_chartevents_data",
)
DIAGNOSES_COLUMNS = ("row_id", "subject_id", "hadm_id", "seq_num", "icd9_code")
PROCEDURES_COLUMNS = DIAGNOSES_COLUMNS
PRESCRIPTIONS_COLUMNS = (
    "row_id", "subject_id", "hadm_id", "icustay_id", "startdate", "enddate", "drug_type",
    "drug", "drug_name_poe", "drug_name_generic", "formulary_drug_cd", "gsn", "ndc",
    "prod_strength", "dose_val_rx", "dose_unit_rx", "form_val_disp", "form_unit_disp",
    "route",
)
TABLE_COLUMNS = {
    "ADMISSIONS": ADMISSIONS_COLUMNS,
    "DIAGNOSES_ICD": DIAGNOSES_COLUMNS,
    "PROCEDURES_ICD": PROCEDURES_COLUMNS,
    "PRESCRIPTIONS": PRESCRIPTIONS_COLUMNS,
}

_NDC_RXNORM = "ndc2rxnorm_mapping.txt"
_NDC_ATC = "ndc2atc_level4.csv.gz"
_DDI = "ddi_atc3_pairs_gamenet.csv"
_VOCAB = "atc3_label_vocab.csv"

# Routine ward drug classes (MIMIC's most frequent ATC-3 labels), used when available.
_ROUTINE = ("N02B", "A02B", "B01A", "A06A", "N02A", "C07A", "A04A", "C03C", "N05B", "J01D")

# Patient-level categorical attributes (values and rough frequencies of the demo).
_INSURANCE = (("Medicare", 0.6), ("Private", 0.25), ("Medicaid", 0.1), ("Government", 0.05))
_LANGUAGE = (("ENGL", 0.55), ("", 0.3), ("SPAN", 0.1), ("RUSS", 0.03), ("PORT", 0.02))
_RELIGION = (
    ("CATHOLIC", 0.4), ("NOT SPECIFIED", 0.15), ("UNOBTAINABLE", 0.12),
    ("PROTESTANT QUAKER", 0.12), ("JEWISH", 0.08), ("OTHER", 0.05),
    ("EPISCOPALIAN", 0.03), ("BUDDHIST", 0.02), ("MUSLIM", 0.03),
)
_MARITAL = (
    ("MARRIED", 0.45), ("SINGLE", 0.25), ("WIDOWED", 0.12), ("", 0.08),
    ("DIVORCED", 0.07), ("SEPARATED", 0.02), ("UNKNOWN (DEFAULT)", 0.01),
)
_ETHNICITY = (
    ("WHITE", 0.7), ("BLACK/AFRICAN AMERICAN", 0.09), ("UNKNOWN/NOT SPECIFIED", 0.07),
    ("HISPANIC/LATINO - PUERTO RICAN", 0.05), ("ASIAN", 0.04), ("OTHER", 0.03),
    ("HISPANIC OR LATINO", 0.02),
)
_ADM_TYPE = (("EMERGENCY", 0.8), ("ELECTIVE", 0.15), ("URGENT", 0.05))
_ADM_LOC_EMERG = (
    ("EMERGENCY ROOM ADMIT", 0.65), ("TRANSFER FROM HOSP/EXTRAM", 0.2),
    ("CLINIC REFERRAL/PREMATURE", 0.1), ("TRANSFER FROM SKILLED NUR", 0.05),
)
_ADM_LOC_ELECT = (("PHYS REFERRAL/NORMAL DELI", 0.9), ("CLINIC REFERRAL/PREMATURE", 0.1))
_DISCH_LOC = (
    ("HOME", 0.3), ("HOME HEALTH CARE", 0.25), ("SNF", 0.25),
    ("REHAB/DISTINCT PART HOSP", 0.12), ("ICF", 0.03), ("LONG TERM CARE HOSPITAL", 0.05),
)
_FLUIDS = (  # unmapped rows (ndc "0"), as MIMIC records base solutions
    ("BASE", "NS", "", "", "NS1000", "", "0", "1000mL Bag", "1000", "ml", "1000", "ml", "IV"),
    ("BASE", "D5W", "", "", "D5W250", "", "0", "250 mL Bag", "250", "ml", "250", "ml", "IV"),
    ("BASE", "SW", "", "", "SW100", "", "0", "100mL Bag", "100", "ml", "100", "ml", "IV"),
)


# --------------------------------------------------------------------------- config


@dataclass
class SynthConfig:
    """Parameters of the synthetic cohort. Probabilities are in [0, 1]; skews are >= 0.

    * ``hospitals``: number of hospitals (1..99), named ``hosp01``, ``hosp02``, ...
    * ``patients``: total patients over all hospitals (at least
      ``MIN_PATIENTS_PER_HOSPITAL`` per hospital).
    * ``seed``: the only source of randomness.
    * ``size_skew``: 0 = equal sizes; ``s > 0`` = hospital ``i`` gets a share
      proportional to ``(i + 1) ** -s`` (``hosp01`` largest).
    * ``case_mix_skew``: Dirichlet concentration per cluster of a hospital's case mix;
      smaller = more non-IID (0.05 ~ each hospital sees a few clusters; ``inf`` = IID).
    * ``prescribing_skew``: probability that a hospital replaces a drug class by its own
      preferred alternative from the same ATC-2 group (always, for that hospital).
    * ``label_skew``: std of per-(hospital, label) logit shifts of drug probabilities.
    * ``missing_tables``: ``((hospital, table), ...)`` with hospital a 0-based index or a
      name like ``"hosp02"`` and table one of ``OPTIONAL_TABLES``; or a probability that
      each hospital lacks ``PROCEDURES_ICD``. ``missing_mode``: ``"header"`` (the file
      holds only its header) or ``"absent"`` (no file).
    * ``mean_visits`` / ``max_visits``: visits per patient are ``min(Geometric(1 /
      mean_visits), max_visits)`` (so >= 1, mean slightly below ``mean_visits``).
    * ``n_clusters``, ``n_diagnosis_codes``, ``n_procedure_codes``, ``n_labels``: sizes
      of the latent structure and of the code subsets drawn from the real vocabularies.
    * ``persistence``: probability a drug class of the previous visit is given again.
    * ``drift``: per-visit probability that one chronic cluster is replaced.
    * ``acute_prob``: per-visit probability of an extra acute (one-visit) cluster.
    * ``noise_diagnoses`` / ``noise_procedures`` / ``noise_labels``: mean number of
      uniformly random extra codes per visit.
    * ``unmapped_rx_prob``: per-visit probability of extra unmapped (``ndc="0"``) fluid rows.
    """

    hospitals: int = 5
    patients: int = 5000
    seed: int = 0
    size_skew: float = 0.5
    case_mix_skew: float = 1.0
    prescribing_skew: float = 0.1
    label_skew: float = 0.25
    missing_tables: tuple[tuple[int | str, str], ...] | float = ()
    missing_mode: str = "header"
    mean_visits: float = 2.5
    max_visits: int = 10
    n_clusters: int = 20
    n_diagnosis_codes: int = 300
    n_procedure_codes: int = 100
    n_labels: int = 100
    persistence: float = 0.2
    drift: float = 0.25
    acute_prob: float = 0.85
    noise_diagnoses: float = 1.5
    noise_procedures: float = 0.3
    noise_labels: float = 1.0
    unmapped_rx_prob: float = 0.5

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        ints = ("hospitals", "patients", "seed", "max_visits", "n_clusters",
                "n_diagnosis_codes", "n_procedure_codes", "n_labels")
        for name in ints:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ConfigError(f"synth: {name} must be an integer, got {v!r}")
        if not 1 <= self.hospitals <= MAX_HOSPITALS:
            raise ConfigError(f"synth: hospitals must be in 1..{MAX_HOSPITALS}, "
                              f"got {self.hospitals}")
        need = self.hospitals * MIN_PATIENTS_PER_HOSPITAL
        if self.patients < need:
            raise ConfigError(
                f"synth: patients={self.patients} is too few for {self.hospitals} hospitals "
                f"(need at least {MIN_PATIENTS_PER_HOSPITAL} per hospital = {need})"
            )
        if self.seed < 0:
            raise ConfigError(f"synth: seed must be >= 0, got {self.seed}")
        for name in ("size_skew", "case_mix_skew", "prescribing_skew", "label_skew",
                     "mean_visits", "persistence", "drift", "acute_prob", "noise_diagnoses",
                     "noise_procedures", "noise_labels", "unmapped_rx_prob"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
                raise ConfigError(f"synth: {name} must be a number, got {v!r}")
            if math.isnan(v) or v < 0:
                raise ConfigError(f"synth: {name} must be >= 0, got {v}")
        for name in ("size_skew", "prescribing_skew", "label_skew", "mean_visits",
                     "persistence", "drift", "acute_prob", "noise_diagnoses",
                     "noise_procedures", "noise_labels", "unmapped_rx_prob"):
            if math.isinf(getattr(self, name)):
                raise ConfigError(f"synth: {name} must be finite")
        if self.case_mix_skew <= 0:
            raise ConfigError("synth: case_mix_skew (Dirichlet concentration) must be > 0 "
                              "(use a small value like 0.05 for strongly non-IID case mix)")
        for name in ("prescribing_skew", "persistence", "drift", "acute_prob",
                     "unmapped_rx_prob"):
            if getattr(self, name) > 1:
                raise ConfigError(f"synth: {name} is a probability, must be <= 1, "
                                  f"got {getattr(self, name)}")
        if self.mean_visits < 1:
            raise ConfigError(f"synth: mean_visits must be >= 1, got {self.mean_visits}")
        if self.max_visits < 1:
            raise ConfigError(f"synth: max_visits must be >= 1, got {self.max_visits}")
        if self.n_clusters < 2:
            raise ConfigError(f"synth: n_clusters must be >= 2, got {self.n_clusters}")
        for name, lo in (("n_diagnosis_codes", 20), ("n_procedure_codes", 5), ("n_labels", 10)):
            if getattr(self, name) < lo:
                raise ConfigError(f"synth: {name} must be >= {lo}, got {getattr(self, name)}")
        if self.missing_mode not in ("header", "absent"):
            raise ConfigError(f"synth: missing_mode must be 'header' or 'absent', "
                              f"got {self.missing_mode!r}")
        self.missing_by_hospital()  # validates missing_tables

    def missing_by_hospital(self, rng: np.random.Generator | None = None) -> dict[int, set[str]]:
        """Resolve ``missing_tables`` to ``{hospital index: {TABLE, ...}}``.

        A probability needs ``rng`` to draw from; without it only the range is checked.
        """
        spec = self.missing_tables
        out: dict[int, set[str]] = {}
        if isinstance(spec, bool):
            raise ConfigError("synth: missing_tables must be pairs or a probability, not a bool")
        if isinstance(spec, (int, float, np.floating, np.integer)):
            p = float(spec)
            if math.isnan(p) or not 0 <= p <= 1:
                raise ConfigError(f"synth: missing_tables probability must be in [0, 1], got {p}")
            if rng is not None:
                for h in np.flatnonzero(rng.random(self.hospitals) < p):
                    out[int(h)] = {"PROCEDURES_ICD"}
            return out
        try:
            pairs = [tuple(x) for x in spec]
        except TypeError:
            raise ConfigError("synth: missing_tables must be a sequence of (hospital, table) "
                              "pairs or a probability") from None
        names = {_hospital_name(i): i for i in range(self.hospitals)}
        for pair in pairs:
            if len(pair) != 2:
                raise ConfigError(f"synth: missing_tables entry {pair!r} is not a "
                                  "(hospital, table) pair")
            hosp, table = pair
            if isinstance(hosp, str):
                if hosp not in names:
                    last = _hospital_name(self.hospitals - 1)
                    raise ConfigError(f"synth: missing_tables names unknown hospital {hosp!r} "
                                      f"(have {_hospital_name(0)}..{last})")
                idx = names[hosp]
            elif isinstance(hosp, (int, np.integer)) and not isinstance(hosp, bool):
                idx = int(hosp)
                if not 0 <= idx < self.hospitals:
                    raise ConfigError(f"synth: missing_tables hospital index {idx} out of range "
                                      f"0..{self.hospitals - 1} (indices are 0-based)")
            else:
                raise ConfigError(f"synth: missing_tables hospital must be an index or name, "
                                  f"got {hosp!r}")
            t = str(table).upper().removesuffix(".CSV")
            if t not in OPTIONAL_TABLES:
                raise ConfigError(f"synth: missing_tables table {table!r} must be one of "
                                  f"{', '.join(OPTIONAL_TABLES)}")
            out.setdefault(idx, set()).add(t)
        return out

    def to_json(self) -> dict:
        d = asdict(self)
        spec = self.missing_tables
        if not isinstance(spec, (int, float)):
            d["missing_tables"] = [list(p) for p in spec]
        if math.isinf(self.case_mix_skew):
            d["case_mix_skew"] = "inf"
        return d


@dataclass
class SynthSummary:
    """What :func:`generate` wrote. Counts are patients/visits (admissions) per hospital."""

    hospitals: list[str]
    patients: dict[str, int]
    visits: dict[str, int]
    out_dir: Path
    missing_tables: dict[str, list[str]] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    mean_diagnoses: float = 0.0
    mean_procedures: float = 0.0
    mean_labels: float = 0.0

    @property
    def total_patients(self) -> int:
        return sum(self.patients.values())

    @property
    def total_visits(self) -> int:
        return sum(self.visits.values())

    def to_json(self) -> dict:
        d = asdict(self)
        del d["out_dir"]  # keep SYNTH.json byte-identical wherever it is written
        return d


def _hospital_name(i: int) -> str:
    return f"hosp{i + 1:02d}"


# --------------------------------------------------------------------------- sources


def find_mimic3_demo() -> Path:
    """The shared ``mimic3-demo`` folder.

    ``$FEDRX_DATA_ROOT/mimic3-demo`` if the variable is set, else the first
    ``shared/data/mimic3-demo`` found walking up from this file and from the cwd.
    """
    env = os.environ.get("FEDRX_DATA_ROOT")
    if env:
        cand = Path(env).expanduser() / "mimic3-demo"
        if cand.is_dir():
            return cand
        raise DataError(f"FEDRX_DATA_ROOT={env} holds no mimic3-demo/ folder")
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        for parent in (start, *start.parents):
            cand = parent / "shared" / "data" / "mimic3-demo"
            if cand.is_dir():
                return cand
    raise DataError("shared MIMIC-III demo data not found: set FEDRX_DATA_ROOT to the folder "
                    "holding mimic3-demo/ (with D_ICD_*.csv and mappings/)")


def _resolve_source_dirs(mappings_dir: Path | None) -> tuple[Path, Path]:
    """(demo folder with D_ICD_*.csv, mappings folder) from a mappings or demo folder."""
    if mappings_dir is None:
        demo = find_mimic3_demo()
        return demo, demo / "mappings"
    p = Path(mappings_dir)
    if (p / _NDC_RXNORM).is_file():
        return p.parent, p
    if (p / "mappings" / _NDC_RXNORM).is_file():
        return p, p / "mappings"
    raise DataError(f"{p}: no {_NDC_RXNORM} here or in {p}/mappings (pass the real "
                    "mimic3-demo mappings folder, or set FEDRX_DATA_ROOT)")


@dataclass(frozen=True)
class _Drug:
    ndc: str  # 11 digits
    rxcui: str
    atc4: str
    meta: tuple[str, ...]  # PRESCRIPTIONS columns drug_type .. route (13 values)
    atc_rows: tuple[tuple[str, ...], ...]  # real ndc2atc_level4 rows for this RxCUI


@dataclass(frozen=True)
class _Sources:
    dx_codes: tuple[str, ...]
    dx_titles: tuple[str, ...]
    dx_freq: tuple[float, ...]
    px_codes: tuple[str, ...]
    labels: tuple[str, ...]
    label_freq: tuple[float, ...]
    drugs: tuple[tuple[_Drug, ...], ...]  # per label, 1-3 drugs
    ddi_text: str
    vocab_text: str


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse {path}: {exc}") from None


def _rank_codes(dictionary: list[str], used: Counter, n: int) -> list[str]:
    """Up to ``n`` dictionary codes: most used in the demo first, then the rest in order."""
    known = set(dictionary)
    ranked = [c for c, _ in sorted(used.items(), key=lambda kv: (-kv[1], kv[0])) if c in known]
    if len(ranked) < n:
        chosen = set(ranked)
        ranked += [c for c in dictionary if c not in chosen][: n - len(ranked)]
    return ranked[:n]


@lru_cache(maxsize=4)
def _load_sources(demo_dir: str, map_dir: str, n_dx: int, n_px: int, n_labels: int) -> _Sources:
    demo, maps = Path(demo_dir), Path(map_dir)
    dx_dict = _read_csv(demo / "D_ICD_DIAGNOSES.csv")
    px_dict = _read_csv(demo / "D_ICD_PROCEDURES.csv")
    titles = {r["icd9_code"]: r["short_title"] for r in dx_dict}
    dx_used: Counter = Counter()
    px_used: Counter = Counter()
    if (demo / "DIAGNOSES_ICD.csv").is_file():
        dx_used = Counter(r["icd9_code"] for r in _read_csv(demo / "DIAGNOSES_ICD.csv"))
    if (demo / "PROCEDURES_ICD.csv").is_file():
        px_used = Counter(r["icd9_code"] for r in _read_csv(demo / "PROCEDURES_ICD.csv"))
    dx_codes = _rank_codes([r["icd9_code"] for r in dx_dict], dx_used, n_dx)
    px_codes = _rank_codes([r["icd9_code"] for r in px_dict], px_used, n_px)
    if len(dx_codes) < 20 or len(px_codes) < 5:
        raise DataError(f"{demo}: too few ICD-9 codes in D_ICD_DIAGNOSES/D_ICD_PROCEDURES")
    dx_freq = [float(dx_used.get(c, 0)) + 0.5 for c in dx_codes]

    # Drug mappings: NDC -> RxCUI (dict literal), RxCUI -> ATC-4 (real rows).
    try:
        ndc2rx = ast.literal_eval((maps / _NDC_RXNORM).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read {maps / _NDC_RXNORM}: {exc.strerror}") from None
    except (ValueError, SyntaxError):
        raise DataError(f"{maps / _NDC_RXNORM}: not a dict literal") from None
    if not isinstance(ndc2rx, dict):
        raise DataError(f"{maps / _NDC_RXNORM}: not a dict literal")
    wanted_rx = {str(v) for v in ndc2rx.values() if v}
    rx_rows: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    try:
        with gzip.open(maps / _NDC_ATC, "rt", encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            if [h.upper() for h in header] != ["YEAR", "MONTH", "NDC", "RXCUI", "ATC5"]:
                raise DataError(f"{maps / _NDC_ATC}: unexpected header {header}")
            for row in reader:
                if len(row) == 5 and row[3] in wanted_rx:
                    rx_rows[row[3]].append(tuple(row))
    except OSError as exc:
        raise DataError(f"cannot read {maps / _NDC_ATC}: {exc}") from None
    vocab_rows = _read_csv(maps / _VOCAB)
    vocab = [r["atc3"] for r in vocab_rows]
    vocab_set = set(vocab)

    # Metadata of real prescriptions, by NDC (most frequent row wins).
    meta_by_ndc: dict[str, tuple[str, ...]] = {}
    ndc_use: Counter = Counter()
    if (demo / "PRESCRIPTIONS.csv").is_file():
        counts: Counter = Counter()
        for r in _read_csv(demo / "PRESCRIPTIONS.csv"):
            if r.get("ndc") and r["ndc"] != "0":
                counts[tuple(r[c] for c in PRESCRIPTIONS_COLUMNS[6:])] += 1
                ndc_use[r["ndc"]] += 1
        for meta, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            meta_by_ndc.setdefault(meta[6], meta)

    # Candidate drugs: NDCs whose RxCUI maps to exactly one ATC-3 label of the vocabulary.
    by_label: dict[str, list[_Drug]] = defaultdict(list)
    for ndc in sorted(ndc2rx):
        rx = str(ndc2rx[ndc])
        rows = rx_rows.get(rx)
        if not rows or len(ndc) != 11 or not ndc.isdigit():
            continue
        atc3s = {r[4][:4] for r in rows}
        if len(atc3s) != 1 or rows[0][4][:4] not in vocab_set or len(rows[0][4]) != 5:
            continue
        atc4 = rows[0][4]
        meta = meta_by_ndc.get(ndc) or (
            "MAIN", f"Rx {atc4} {rx}", f"Rx {atc4} {rx}", f"Rx {atc4} {rx}",
            f"{atc4}{rx}"[:10], "", ndc, "1 unit", "1", "unit", "1", "unit", "PO",
        )
        by_label[atc4[:4]].append(_Drug(ndc, rx, atc4, meta, tuple(rows[:3])))
    # Labels: those with real prescription metadata first (by demo use), then the rest.
    use_by_label: Counter = Counter()
    for lab, ds in by_label.items():
        use_by_label[lab] = sum(ndc_use.get(d.ndc, 0) for d in ds)
    order = sorted(by_label, key=lambda lab: (-use_by_label[lab], vocab.index(lab)))
    labels = order[:n_labels]
    if len(labels) < 10:
        raise DataError(f"{maps}: fewer than 10 ATC-3 labels reachable through the mappings")
    drugs = []
    for lab in labels:
        cands = sorted(by_label[lab], key=lambda d: (-ndc_use.get(d.ndc, 0), d.ndc))
        picked: list[_Drug] = []
        seen_rx: set[str] = set()
        for d in cands:
            if d.rxcui not in seen_rx:
                picked.append(d)
                seen_rx.add(d.rxcui)
            if len(picked) == 3:
                break
        drugs.append(tuple(picked))
    label_freq = [float(use_by_label[lab]) + 5.0 for lab in labels]
    try:
        ddi_text = (maps / _DDI).read_text(encoding="utf-8")
        vocab_text = (maps / _VOCAB).read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read drug mapping files in {maps}: {exc.strerror}") from None
    return _Sources(
        tuple(dx_codes), tuple(titles.get(c, "") for c in dx_codes), tuple(dx_freq),
        tuple(px_codes), tuple(labels), tuple(label_freq), tuple(drugs), ddi_text, vocab_text,
    )


# --------------------------------------------------------------------------- model


def _pick(rng: np.random.Generator, table: tuple[tuple[str, float], ...], n: int) -> np.ndarray:
    vals = np.array([v for v, _ in table], dtype=object)
    w = np.array([p for _, p in table], dtype=float)
    return vals[rng.choice(len(vals), size=n, p=w / w.sum())]


def _hospital_sizes(cfg: SynthConfig) -> list[int]:
    h = cfg.hospitals
    w = np.arange(1, h + 1, dtype=float) ** -cfg.size_skew
    w /= w.sum()
    spare = cfg.patients - h * MIN_PATIENTS_PER_HOSPITAL
    raw = spare * w
    sizes = np.floor(raw).astype(int)
    rem = spare - int(sizes.sum())
    order = np.argsort(-(raw - sizes), kind="stable")
    sizes[order[:rem]] += 1
    return [int(s) + MIN_PATIENTS_PER_HOSPITAL for s in sizes]


@dataclass
class _Model:
    dx_logq: np.ndarray  # (C, D) log(1 - P[dx | cluster])
    px_logq: np.ndarray  # (C, P)
    ind_dx: np.ndarray  # (D, L) log(1 - P[drug | dx])
    ind_px: np.ndarray  # (P, L)
    clus_drug: np.ndarray  # (C, L)
    base: np.ndarray  # (L,) log(1 - P[routine / background drug])
    dx_pop: np.ndarray  # (D,) noise distribution
    px_pop: np.ndarray
    lab_pop: np.ndarray
    cluster_pop: np.ndarray  # (C,)


def _build_model(rng: np.random.Generator, cfg: SynthConfig, src: _Sources) -> _Model:
    n_c, n_d, n_p, n_l = cfg.n_clusters, len(src.dx_codes), len(src.px_codes), len(src.labels)
    dx_pop = np.asarray(src.dx_freq)
    dx_pop = dx_pop / dx_pop.sum()
    lab_pop = np.asarray(src.label_freq) ** 0.4  # flattened: real usage is very skewed
    lab_pop = lab_pop / lab_pop.sum()
    px_pop = 1.0 / np.arange(1, n_p + 1) ** 0.7
    px_pop /= px_pop.sum()
    common = np.argsort(-dx_pop, kind="stable")[:30]
    by_code = np.argsort(np.asarray(src.dx_codes), kind="stable")  # chapter order
    p_dx = np.zeros((n_c, n_d))
    p_px = np.zeros((n_c, n_p))
    k_drug = np.zeros((n_c, n_l))
    owner_drugs: list[np.ndarray] = []
    for c in range(n_c):
        # Chapter-coherent block of codes plus a few common comorbidities.
        width = min(int(rng.integers(6, 10)), n_d // 3)
        start = int(rng.integers(0, n_d - 2 * width + 1))
        block = by_code[start : start + 2 * width]
        core = rng.choice(block, size=width, replace=False)
        comorb = rng.choice(common, size=int(rng.integers(2, 5)), replace=False)
        p_dx[c, core] = rng.beta(1.2, 3.0, size=core.size) * 0.8 + 0.05
        p_dx[c, core[:2]] = rng.uniform(0.6, 0.9, size=2)  # defining codes
        p_dx[c, comorb] = np.maximum(p_dx[c, comorb], rng.uniform(0.1, 0.35, comorb.size))
        pxs = rng.choice(n_p, size=int(rng.integers(2, 6)), replace=False, p=px_pop)
        p_px[c, pxs] = rng.uniform(0.1, 0.5, size=pxs.size)
        drugs = rng.choice(n_l, size=int(rng.integers(6, 10)), replace=False, p=lab_pop)
        owner_drugs.append(drugs)
        k_drug[c, drugs[:3]] = rng.uniform(0.1, 0.3, size=3)  # latent, not explained by codes
    # Indications: each diagnosis/procedure triggers 0-2 drug classes of a cluster using it.
    ind_dx = np.zeros((n_d, n_l))
    for d in range(n_d):
        users = np.flatnonzero(p_dx[:, d] > 0)
        if users.size == 0:
            if rng.random() < 0.3:
                ind_dx[d, rng.choice(n_l, p=lab_pop)] = rng.uniform(0.3, 0.7)
            continue
        for c in rng.choice(users, size=min(users.size, 2), replace=False):
            k = 1 + int(rng.random() < 0.4)
            labs = rng.choice(owner_drugs[c], size=k, replace=False)
            ind_dx[d, labs] = np.maximum(ind_dx[d, labs], rng.uniform(0.35, 0.75, size=k))
    ind_px = np.zeros((n_p, n_l))
    periop = rng.choice(n_l, size=6, replace=False, p=lab_pop)
    for p in range(n_p):
        users = np.flatnonzero(p_px[:, p] > 0)
        pool = owner_drugs[int(users[0])] if users.size else periop
        labs = np.unique(np.concatenate([
            rng.choice(pool, size=1), rng.choice(periop, size=int(rng.integers(0, 2)))
        ]))
        ind_px[p, labs] = rng.uniform(0.35, 0.7, size=labs.size)
    base = np.full(n_l, 0.004)
    routine = [src.labels.index(x) for x in _ROUTINE if x in src.labels]
    if len(routine) < 5:
        routine += [int(i) for i in np.argsort(-lab_pop, kind="stable")[:8] if i not in routine]
    routine = routine[:8]
    base[routine] = rng.uniform(0.15, 0.45, size=len(routine))
    cluster_pop = rng.dirichlet(np.full(n_c, 2.0))
    with np.errstate(divide="ignore"):
        return _Model(
            np.log1p(-p_dx), np.log1p(-p_px), np.log1p(-ind_dx), np.log1p(-ind_px),
            np.log1p(-k_drug), np.log1p(-base), dx_pop, px_pop, lab_pop, cluster_pop,
        )


@dataclass
class _Hospital:
    case_mix: np.ndarray  # (C,)
    shift: np.ndarray  # (L,) logit shifts
    subst: np.ndarray  # (L,) label -> recorded label
    ndc_pref: np.ndarray  # (L,) preferred drug index per label


def _build_hospitals(rng: np.random.Generator, cfg: SynthConfig, model: _Model,
                     src: _Sources) -> list[_Hospital]:
    n_l = len(src.labels)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, lab in enumerate(src.labels):
        groups[lab[:3]].append(i)
    out = []
    for _ in range(cfg.hospitals):
        if math.isinf(cfg.case_mix_skew):
            mix = model.cluster_pop.copy()
        else:
            alpha = cfg.case_mix_skew * cfg.n_clusters * model.cluster_pop
            mix = rng.dirichlet(np.maximum(alpha, 1e-3))
            mix = np.maximum(mix, 1e-12)
            mix /= mix.sum()
        shift = rng.normal(0.0, 1.0, size=n_l) * cfg.label_skew
        subst = np.arange(n_l)
        sources: set[int] = set()
        targets: set[int] = set()
        for li in rng.permutation(n_l).tolist():
            alts = [a for a in groups[src.labels[li][:3]]
                    if a != li and a not in sources and a not in targets]
            if li in targets or not alts or rng.random() >= cfg.prescribing_skew:
                continue
            a = int(rng.choice(alts))
            subst[li] = a
            sources.add(li)
            targets.add(a)
        pref = np.array([int(rng.integers(len(d))) for d in src.drugs])
        out.append(_Hospital(mix, shift, subst, pref))
    return out


def _gumbel_pick(rng: np.random.Generator, logp: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """One category per row from rows of log-probabilities, never an excluded one."""
    g = logp - np.log(-np.log(rng.random(logp.shape)))
    g[exclude] = -np.inf
    return np.argmax(g, axis=1)


def _noise(rng: np.random.Generator, mat: np.ndarray, mean: float, pop: np.ndarray) -> None:
    counts = np.asarray(rng.poisson(mean, size=mat.shape[0]))
    total = int(counts.sum())
    if total:
        rows = np.repeat(np.arange(mat.shape[0]), counts)
        mat[rows, rng.choice(mat.shape[1], size=total, p=pop)] = True


def _simulate(rng: np.random.Generator, cfg: SynthConfig, model: _Model,
              hosps: list[_Hospital], hosp_of: np.ndarray, n_visits: np.ndarray
              ) -> list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Per patient, per visit: (dx indices, px indices, label indices), vectorised by step."""
    n = hosp_of.size
    n_c = cfg.n_clusters
    log_mix = np.log(np.stack([h.case_mix for h in hosps]))[hosp_of]  # (N, C)
    shift = np.stack([h.shift for h in hosps])
    # Chronic clusters: 1-3 per patient, drawn without replacement from the case mix.
    k = rng.choice(3, size=n, p=[0.6, 0.3, 0.1]) + 1
    chronic = np.zeros((n, n_c), dtype=bool)
    for j in range(3):
        pick = _gumbel_pick(rng, log_mix, chronic)
        rows = np.flatnonzero(k > j)
        chronic[rows, pick[rows]] = True
    prev = np.zeros((n, len(model.base)), dtype=bool)
    out: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(n)]
    log_persist = math.log1p(-cfg.persistence) if cfg.persistence < 1 else -50.0
    for t in range(int(n_visits.max())):
        idx = np.flatnonzero(n_visits > t)
        m = idx.size
        if t > 0:  # drift: replace one chronic cluster by a new draw from the case mix
            drift = idx[rng.random(m) < cfg.drift]
            if drift.size:
                sub = chronic[drift]
                g = np.where(sub, rng.random(sub.shape), -1.0)
                drop = np.argmax(g, axis=1)
                new = _gumbel_pick(rng, log_mix[drift], sub)
                chronic[drift, drop] = False
                chronic[drift, new] = True
        active = chronic[idx].copy()
        u = rng.random(m)
        for cut in (cfg.acute_prob, 0.4 * cfg.acute_prob):  # 0-2 acute clusters
            acute_rows = np.flatnonzero(u < cut)
            if acute_rows.size:
                acute = _gumbel_pick(rng, log_mix[idx[acute_rows]], active[acute_rows])
                active[acute_rows, acute] = True
        act = active.astype(float)
        p_dx = -np.expm1(act @ model.dx_logq)
        dx = rng.random(p_dx.shape) < p_dx
        _noise(rng, dx, cfg.noise_diagnoses, model.dx_pop)
        empty = ~dx.any(axis=1)
        dx[empty, np.argmax(p_dx[empty], axis=1)] = True
        p_px = -np.expm1(act @ model.px_logq)
        px = rng.random(p_px.shape) < p_px
        _noise(rng, px, cfg.noise_procedures, model.px_pop)
        empty = ~px.any(axis=1)
        px[empty, np.argmax(p_px[empty], axis=1)] = True
        logq = (dx.astype(float) @ model.ind_dx + px.astype(float) @ model.ind_px
                + act @ model.clus_drug + model.base + prev[idx] * log_persist)
        p = np.clip(-np.expm1(logq), 1e-6, 1 - 1e-6)
        logit = np.log(p) - np.log1p(-p) + shift[hosp_of[idx]]
        p = 1.0 / (1.0 + np.exp(-logit))
        drugs = rng.random(p.shape) < p
        _noise(rng, drugs, cfg.noise_labels, model.lab_pop)
        empty = ~drugs.any(axis=1)
        drugs[empty, np.argmax(p[empty], axis=1)] = True
        recorded = np.zeros_like(drugs)
        for h, hosp in enumerate(hosps):
            rows = np.flatnonzero(hosp_of[idx] == h)
            if rows.size:
                sub = drugs[rows]
                rec = np.zeros_like(sub)
                r, c = np.nonzero(sub)
                rec[r, hosp.subst[c]] = True
                recorded[rows] = rec
        prev[idx] = recorded
        for j, i in enumerate(idx.tolist()):
            d = np.flatnonzero(dx[j])
            out[i].append((rng.permutation(d), np.flatnonzero(px[j]),
                           np.flatnonzero(recorded[j])))
    return out


# --------------------------------------------------------------------------- output


def _fmt(ts: np.ndarray) -> list[str]:
    """datetime64[m] -> 'YYYY-MM-DD HH:MM:00'."""
    s = np.datetime_as_string(ts, unit="m")
    return [x.replace("T", " ") + ":00" for x in s.tolist()]


def _ndc_dashed_to_11(ndc: str) -> str:
    parts = ndc.split("-")
    if len(parts) != 3:
        return ""
    a, b, c = parts
    return a.zfill(5) + b.zfill(4) + c.zfill(2)


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _write_mappings(out: Path, src: _Sources) -> None:
    out.mkdir(parents=True, exist_ok=True)
    items = []
    rows: list[tuple[str, ...]] = []
    for drugs in src.drugs:
        for d in drugs:
            items.append(f"'{d.ndc}': u'{d.rxcui}'")
            own = [r for r in d.atc_rows if _ndc_dashed_to_11(r[2]) == d.ndc]
            rows.extend(own or d.atc_rows[:1])
            rows.extend(r for r in d.atc_rows[:2] if r not in own)
    (out / _NDC_RXNORM).write_text("{" + ", ".join(items) + "}", encoding="utf-8")
    seen: set[tuple[str, ...]] = set()
    buf = io.StringIO()
    buf.write('"YEAR","MONTH","NDC","RXCUI","ATC5"\n')
    for r in rows:
        if r in seen:
            continue
        seen.add(r)
        buf.write(f'{r[0]},{r[1]},"{r[2]}",{r[3]},"{r[4]}"\n')
    with open(out / _NDC_ATC, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(buf.getvalue().encode("utf-8"))
    (out / _DDI).write_text(src.ddi_text, encoding="utf-8")
    (out / _VOCAB).write_text(src.vocab_text, encoding="utf-8")


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"output {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise DataError(f"output folder {out_dir} is not empty (pass overwrite=True / "
                            "--overwrite to replace it)")
        for child in out_dir.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create output folder {out_dir}: {exc.strerror}") from None


def generate(config: SynthConfig, out_dir: Path, mappings_dir: Path | None = None,
             *, overwrite: bool = False) -> SynthSummary:
    """Generate the synthetic cohort under ``out_dir``; return what was written.

    ``mappings_dir`` is the real drug-mapping folder (``mimic3-demo/mappings``) or the
    ``mimic3-demo`` folder itself; ``None`` locates it (``FEDRX_DATA_ROOT``, else a
    ``shared/data`` folder above this file or the cwd). The ICD-9 dictionaries are read
    from the ``mimic3-demo`` folder. Raises :class:`ConfigError` for an invalid config
    and :class:`DataError` if the sources are missing or ``out_dir`` is a non-empty
    folder and ``overwrite`` is false (with ``overwrite`` its contents are replaced).

    Invariants of the output: ``subject_id``/``hadm_id`` unique across hospitals; a
    patient's admissions are in time order and do not overlap; every admission has >= 1
    diagnosis, >= 1 procedure and >= 1 prescription with a mappable NDC (unless its table
    is configured missing); ``row_id`` is unique per table across hospitals.
    """
    if not isinstance(config, SynthConfig):
        raise ConfigError(f"synth: expected a SynthConfig, got {type(config).__name__}")
    config.validate()
    out_dir = Path(out_dir)
    demo, maps = _resolve_source_dirs(mappings_dir)
    src = _load_sources(str(demo.resolve()), str(maps.resolve()), config.n_diagnosis_codes,
                        config.n_procedure_codes, config.n_labels)
    _prepare_out_dir(out_dir, overwrite)

    rng = np.random.Generator(np.random.PCG64(config.seed))
    model = _build_model(rng, config, src)
    hosps = _build_hospitals(rng, config, model, src)
    missing = config.missing_by_hospital(rng)
    sizes = _hospital_sizes(config)
    names = [_hospital_name(i) for i in range(config.hospitals)]
    hosp_of = np.repeat(np.arange(config.hospitals), sizes)
    n = int(hosp_of.size)
    n_visits = np.minimum(rng.geometric(1.0 / config.mean_visits, size=n), config.max_visits)
    records = _simulate(rng, config, model, hosps, hosp_of, n_visits)

    # Identifiers: subject ids increase with random gaps; hadm ids are a random sample.
    subject_ids = 10000 + np.cumsum(rng.integers(1, 4, size=n))
    total_visits = int(n_visits.sum())
    hadm_space = max(900000, 4 * total_visits)
    hadm_ids = 100000 + rng.choice(hadm_space, size=total_visits, replace=False)
    # Times (minutes): first admission in years 2100-2200, then LOS and gaps.
    first = np.datetime64("2100-01-01T00:00") + rng.integers(
        0, 100 * 365 * 1440, size=n).astype("timedelta64[m]")
    los = (rng.lognormal(math.log(5.0), 0.6, size=total_visits) * 1440).astype(np.int64) + 180
    gap = (rng.exponential(200.0, size=total_visits) * 1440).astype(np.int64) + 2 * 1440
    owner = np.repeat(np.arange(n), n_visits)
    starts_of = np.concatenate([[0], np.cumsum(n_visits)[:-1]])
    step = los + gap
    step_cum = np.cumsum(step)
    before = step_cum - step  # sum of steps before this visit (global)
    offset = before - before[starts_of][owner]
    admit = first[owner] + offset.astype("timedelta64[m]")
    disch = admit + los.astype("timedelta64[m]")
    admit_s, disch_s = _fmt(admit), _fmt(disch)
    ed_s = _fmt(admit - rng.integers(60, 360, size=total_visits).astype("timedelta64[m]"))
    edout_s = _fmt(admit + rng.integers(10, 120, size=total_visits).astype("timedelta64[m]"))
    day0 = admit.astype("datetime64[D]")
    los_days = (disch.astype("datetime64[D]") - day0).astype(int)

    adm_type = _pick(rng, _ADM_TYPE, total_visits)
    loc_em = _pick(rng, _ADM_LOC_EMERG, total_visits)
    loc_el = _pick(rng, _ADM_LOC_ELECT, total_visits)
    disch_loc = _pick(rng, _DISCH_LOC, total_visits)
    dies = rng.random(n) < 0.1
    pat_attrs = [_pick(rng, t, n) for t in (_INSURANCE, _LANGUAGE, _RELIGION, _MARITAL,
                                             _ETHNICITY)]
    u_visit = rng.random((total_visits, 2))

    counters = {"ADMISSIONS": 0, "DIAGNOSES_ICD": 0, "PROCEDURES_ICD": 0, "PRESCRIPTIONS": 0}
    row_base = {"ADMISSIONS": 12000, "DIAGNOSES_ICD": 110000, "PROCEDURES_ICD": 3900,
                "PRESCRIPTIONS": 30000}
    summary = SynthSummary(hospitals=names, patients={}, visits={}, out_dir=out_dir,
                           labels=list(src.labels))
    sum_dx = sum_px = sum_lab = 0
    day_str: dict[int, str] = {}

    def day(d: int) -> str:
        s = day_str.get(d)
        if s is None:
            s = (_dt.date(1970, 1, 1) + _dt.timedelta(days=d)).isoformat() + " 00:00:00"
            day_str[d] = s
        return s

    patient_start = 0
    for h, name in enumerate(names):
        hdir = out_dir / name
        hdir.mkdir(parents=True, exist_ok=True)
        hosp = hosps[h]
        adm_rows: list[tuple] = []
        dx_rows: list[tuple] = []
        px_rows: list[tuple] = []
        rx_rows: list[tuple] = []
        n_vis = 0
        for i in range(patient_start, patient_start + sizes[h]):
            subj = int(subject_ids[i])
            v0 = int(starts_of[i])
            nv = int(n_visits[i])
            for t, (dxs, pxs, labs) in enumerate(records[i]):
                v = v0 + t
                hadm = int(hadm_ids[v])
                last_death = bool(dies[i]) and t == nv - 1
                a_type = str(adm_type[v])
                em = a_type != "ELECTIVE"
                counters["ADMISSIONS"] += 1
                adm_rows.append((
                    row_base["ADMISSIONS"] + counters["ADMISSIONS"], subj, hadm,
                    admit_s[v], disch_s[v], disch_s[v] if last_death else "", a_type,
                    str(loc_em[v]) if em else str(loc_el[v]),
                    "DEAD/EXPIRED" if last_death else str(disch_loc[v]),
                    *(str(a[i]) for a in pat_attrs),
                    ed_s[v] if em and a_type == "EMERGENCY" else "",
                    edout_s[v] if em and a_type == "EMERGENCY" else "",
                    src.dx_titles[int(dxs[0])].upper(), int(last_death), 1,
                ))
                for s, d in enumerate(dxs.tolist(), 1):
                    counters["DIAGNOSES_ICD"] += 1
                    dx_rows.append((row_base["DIAGNOSES_ICD"] + counters["DIAGNOSES_ICD"],
                                    subj, hadm, s, src.dx_codes[d]))
                for s, p in enumerate(pxs.tolist(), 1):
                    counters["PROCEDURES_ICD"] += 1
                    px_rows.append((row_base["PROCEDURES_ICD"] + counters["PROCEDURES_ICD"],
                                    subj, hadm, s, src.px_codes[p]))
                d0 = int(day0[v].astype(int))
                nd = int(los_days[v])
                extra = 1 if u_visit[v, 0] < config.unmapped_rx_prob else 0
                labs_l = labs.tolist()
                k = len(labs_l)
                choice = rng.random((k + extra, 4))
                for j, lab in enumerate(labs_l):
                    opts = src.drugs[lab]
                    di = int(hosp.ndc_pref[lab])
                    if len(opts) > 1 and choice[j, 0] < 0.15:
                        di = int(choice[j, 1] * len(opts)) % len(opts)
                    meta = opts[di].meta
                    n_rows = 2 if choice[j, 2] < 0.25 else 1
                    for r in range(n_rows):
                        sd = d0 + int(choice[j, 3] * (nd + 1)) if r == 0 else d0 + nd
                        ed = min(sd + 1 + (j + r) % 3, d0 + nd + 1)
                        counters["PRESCRIPTIONS"] += 1
                        rx_rows.append((row_base["PRESCRIPTIONS"] + counters["PRESCRIPTIONS"],
                                        subj, hadm, "", day(sd), day(ed), *meta))
                if extra:
                    meta = _FLUIDS[int(choice[k, 0] * len(_FLUIDS)) % len(_FLUIDS)]
                    counters["PRESCRIPTIONS"] += 1
                    rx_rows.append((row_base["PRESCRIPTIONS"] + counters["PRESCRIPTIONS"],
                                    subj, hadm, "", day(d0), day(d0 + 1), *meta))
                sum_dx += len(dxs)
                sum_px += len(pxs)
                sum_lab += k
                n_vis += 1
        patient_start += sizes[h]
        tables = {"ADMISSIONS": adm_rows, "DIAGNOSES_ICD": dx_rows,
                  "PROCEDURES_ICD": px_rows, "PRESCRIPTIONS": rx_rows}
        gone = missing.get(h, set())
        for table, rows in tables.items():
            if table in gone:
                if config.missing_mode == "header":
                    _write_csv(hdir / f"{table}.csv", TABLE_COLUMNS[table], [])
                continue
            _write_csv(hdir / f"{table}.csv", TABLE_COLUMNS[table], rows)
        summary.patients[name] = sizes[h]
        summary.visits[name] = n_vis
        if gone:
            summary.missing_tables[name] = sorted(gone)

    _write_mappings(out_dir / "mappings", src)
    summary.mean_diagnoses = round(sum_dx / total_visits, 4)
    summary.mean_procedures = round(sum_px / total_visits, 4)
    summary.mean_labels = round(sum_lab / total_visits, 4)
    meta = {"generator": "fedrx.medrx.synth", "config": config.to_json(),
            "summary": summary.to_json()}
    (out_dir / "SYNTH.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n",
                                        encoding="utf-8")
    return summary
