"""Parameters of the synthetic cohort (:class:`SynthConfig`: sizes and the hospital
heterogeneity knobs) and what a generation wrote (:class:`SynthSummary`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fedrx.errors import ConfigError
from fedrx.medrx.synth.layout import OPTIONAL_TABLES

MIN_PATIENTS_PER_HOSPITAL = 10
MAX_HOSPITALS = 99
CATALOGUES = ("auto", "demo", "builtin")


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
    * ``catalogue``: where the codes come from: ``"demo"`` (the real codes of the MIMIC-III
      demo; DataError if it is not found), ``"builtin"`` (fedrx's synthetic codes,
      :mod:`~fedrx.medrx.synth.builtin`) or ``"auto"`` (the demo if found, else built-in).
      A choice, not a parameter of the output: it is not written to ``SYNTH.json``
      (which records the catalogue used when it is the built-in one).
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
    catalogue: str = "auto"

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
        if self.catalogue not in CATALOGUES:
            raise ConfigError(f"synth: catalogue must be one of {', '.join(CATALOGUES)}, "
                              f"got {self.catalogue!r}")
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
        names = {hospital_name(i): i for i in range(self.hospitals)}
        for pair in pairs:
            if len(pair) != 2:
                raise ConfigError(f"synth: missing_tables entry {pair!r} is not a "
                                  "(hospital, table) pair")
            hosp, table = pair
            if isinstance(hosp, str):
                if hosp not in names:
                    last = hospital_name(self.hospitals - 1)
                    raise ConfigError(f"synth: missing_tables names unknown hospital {hosp!r} "
                                      f"(have {hospital_name(0)}..{last})")
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
        del d["catalogue"]  # a choice of source; "auto" and "demo" write the same bytes
        spec = self.missing_tables
        if not isinstance(spec, (int, float)):
            d["missing_tables"] = [list(p) for p in spec]
        if math.isinf(self.case_mix_skew):
            d["case_mix_skew"] = "inf"
        return d


@dataclass
class SynthSummary:
    """What :func:`generate` wrote. Counts are patients/visits (admissions) per hospital;
    ``catalogue`` is the code catalogue used: ``"demo"`` or ``"builtin"``."""

    hospitals: list[str]
    patients: dict[str, int]
    visits: dict[str, int]
    out_dir: Path
    missing_tables: dict[str, list[str]] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    mean_diagnoses: float = 0.0
    mean_procedures: float = 0.0
    mean_labels: float = 0.0
    catalogue: str = "demo"

    @property
    def total_patients(self) -> int:
        return sum(self.patients.values())

    @property
    def total_visits(self) -> int:
        return sum(self.visits.values())

    def to_json(self) -> dict:
        d = asdict(self)
        del d["out_dir"]  # keep SYNTH.json byte-identical wherever it is written
        del d["catalogue"]  # written apart, for the built-in catalogue only
        return d


def hospital_name(i: int) -> str:
    """Name of hospital ``i`` (0-based): ``hosp01``, ``hosp02``, ..."""
    return f"hosp{i + 1:02d}"
