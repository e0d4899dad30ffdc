"""Resolve a dataset spec (``mimic3-demo``, ``eicu-demo``, ``synthetic``, or a path) to a Cohort.

Layout detection for a path:

* a ``.jsonl`` file: canonical records written by :func:`fedrx.medrx.records.write_jsonl`;
* a folder with an ``ADMISSIONS`` table: MIMIC-III layout, one hospital;
* a folder whose sub-folders hold ``ADMISSIONS`` tables: MIMIC-III layout, one hospital
  per sub-folder (what ``fedrx data synth`` writes), drug mappings from ``DIR/mappings``;
* a folder with a ``patient`` table: eICU layout (hospitals from ``hospitalid``).

The shared open data (``mimic3-demo``, ``eicu-demo``) is found through the environment
variable ``FEDRX_DATA_ROOT`` or a ``shared/data`` folder beside the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

from fedrx.errors import DataError
from fedrx.medrx.records import Cohort, Patient, read_jsonl
from fedrx.medrx.tables import find_table

NAMED_DATASETS = ("synthetic", "mimic3-demo", "mimic4-demo", "omop-demo", "eicu-demo")
"""``spec`` values :func:`load_dataset` takes as names (looked up under the data root), not
as paths."""


def shared_data_root() -> Path | None:
    """The folder holding ``mimic3-demo/`` and ``eicu-demo/``, or None if not found."""
    env = os.environ.get("FEDRX_DATA_ROOT")
    if env:
        p = Path(env).expanduser()
        return p if p.is_dir() else None
    starts = [Path(__file__).resolve(), Path.cwd().resolve()]
    for start in starts:
        for parent in [start, *start.parents]:
            cand = parent / "shared" / "data"
            if (cand / "mimic3-demo").is_dir() or (cand / "eicu-demo").is_dir():
                return cand
    return None


def named_dataset_path(name: str) -> Path:
    root = shared_data_root()
    if root is None or not (root / name).is_dir():
        raise DataError(
            f"dataset {name} not found: set FEDRX_DATA_ROOT to the folder holding {name}/"
        )
    return root / name


def is_eicu_folder(path: Path) -> bool:
    try:
        return find_table(path, "patient", required=False) is not None
    except DataError:
        return False


def load_dataset(
    spec: str | Path,
    *,
    mappings_dir: Path | None = None,
    min_visits: int = 1,
) -> Cohort:
    """Load a dataset by name or path. Raises :class:`DataError` for an unknown layout."""
    from fedrx.medrx.mimic import is_mimic3_folder, read_mimic3

    s = str(spec)
    if s == "synthetic":
        raise DataError(
            "'synthetic' needs generating first: run `fedrx data synth --out DIR` "
            "and pass --data DIR"
        )
    if s == "mimic3-demo":
        path = named_dataset_path(s)
        cohort = read_mimic3(path, mappings_dir, hospital="mimic3", min_visits=min_visits)
        cohort.name = "mimic3-demo"
        return cohort
    if s in ("mimic4-demo", "omop-demo"):
        from fedrx.medrx.exports import load_export

        cohort = load_export(named_dataset_path(s), mappings=mappings_dir,
                             min_visits=min_visits, hospital=s.split("-")[0])
        cohort.name = s
        return cohort
    if s == "eicu-demo":
        from fedrx.medrx.eicu import read_eicu

        cohort = _require_labels(read_eicu(named_dataset_path(s)))
        cohort.name = "eicu-demo"
        return _min_visits(cohort, min_visits)
    path = Path(s).expanduser()
    if not path.exists():
        raise DataError(f"dataset not found: {s} (expected mimic3-demo, eicu-demo or a path)")
    if path.is_file():
        if path.suffix == ".jsonl":
            return _min_visits(Cohort(path.stem, list(read_jsonl(path))), min_visits)
        raise DataError(f"{path}: unknown data file type (expected a .jsonl file or a folder)")
    from fedrx.medrx.mimic4 import is_mimic4_folder
    from fedrx.medrx.omop import is_omop_folder

    if is_mimic4_folder(path) or is_omop_folder(path):
        from fedrx.medrx.exports import load_export

        return load_export(path, mappings=mappings_dir, min_visits=min_visits,
                           hospital=path.name)
    if is_mimic3_folder(path):
        return read_mimic3(path, mappings_dir, min_visits=min_visits)
    if is_eicu_folder(path):
        from fedrx.medrx.eicu import read_eicu

        return _min_visits(_require_labels(read_eicu(path)), min_visits)
    subs = sorted(p for p in path.iterdir() if p.is_dir() and _export_layout(p))
    if subs:
        from fedrx.medrx.exports import load_export

        mdir = mappings_dir or (path / "mappings" if (path / "mappings").is_dir() else None)
        patients = []
        stats: dict[str, int] = {}
        owner: dict[str, str] = {}
        for sub in subs:
            c = (read_mimic3(sub, mdir, hospital=sub.name, min_visits=min_visits)
                 if is_mimic3_folder(sub) and not is_mimic4_folder(sub)
                 else load_export(sub, mappings=mdir, min_visits=min_visits,
                                  hospital=sub.name))
            for p in c.patients:
                if p.patient_id in owner:
                    raise DataError(
                        f"patient {p.patient_id} appears in hospitals {owner[p.patient_id]} and "
                        f"{sub.name}: each patient must belong to exactly one hospital (the DP "
                        "guarantee relies on it); give patients hospital-unique ids")
                owner[p.patient_id] = sub.name
            patients.extend(c.patients)
            for k, v in c.stats.items():
                stats[k] = stats.get(k, 0) + v
        return Cohort(path.name, patients, stats)
    raise DataError(
        f"{path}: unknown layout (no ADMISSIONS table for MIMIC-III, no patient table for "
        "eICU, no per-hospital sub-folders)"
    )


def _export_layout(path: Path) -> bool:
    """True if ``path`` is one hospital's export in a layout fedrx reads."""
    from fedrx.medrx.exports import detect_format

    try:
        return bool(detect_format(path))
    except DataError:
        return False


def _require_labels(cohort: Cohort) -> Cohort:
    """Drop visits without any drug label (no training signal; Jaccard undefined).

    eICU hospitals that record no medication lose all their patients here; the counts
    are kept in ``cohort.stats`` (``visits_dropped_no_labels``, ``patients_dropped_no_labels``).
    """
    kept = []
    dropped_visits = 0
    for p in cohort.patients:
        visits = tuple(v for v in p.visits if v.labels)
        dropped_visits += len(p.visits) - len(visits)
        if visits:
            kept.append(Patient(p.patient_id, p.hospital, visits))
    cohort.stats["visits_dropped_no_labels"] = dropped_visits
    cohort.stats["patients_dropped_no_labels"] = len(cohort.patients) - len(kept)
    cohort.patients = kept
    if not kept:
        raise DataError(f"{cohort.name}: no visit has a drug label")
    return cohort


def _min_visits(cohort: Cohort, min_visits: int) -> Cohort:
    if min_visits <= 1:
        return cohort
    kept = [p for p in cohort.patients if len(p.visits) >= min_visits]
    cohort.stats["patients_dropped_min_visits"] = len(cohort.patients) - len(kept)
    cohort.patients = kept
    return cohort


def find_ddi_pairs(spec: str | Path, mappings: Path | None = None, ddi: Path | None = None,
                   ) -> tuple[set[frozenset[str]] | None, Path | None]:
    """Locate and read the DDI pair file for dataset ``spec``.

    Order: ``ddi`` (must exist), ``mappings/``, ``SPEC/mappings`` or its parent's
    ``mappings/`` (what ``fedrx data synth`` writes), the shared MIMIC-III demo's
    ``mappings/``. Returns ``(None, None)`` when none is found.
    """
    from fedrx.errors import ConfigError
    from fedrx.medrx.metrics import load_ddi_pairs
    from fedrx.medrx.mimic import DDI_FILE

    candidates = [Path(ddi)] if ddi else []
    if mappings:
        candidates.append(Path(mappings) / DDI_FILE)
    p = Path(spec)
    if p.is_dir():
        candidates += [p / "mappings" / DDI_FILE, p.parent / "mappings" / DDI_FILE]
    root = shared_data_root()
    if root:
        candidates.append(root / "mimic3-demo" / "mappings" / DDI_FILE)
    for c in candidates:
        if c.is_file():
            return load_ddi_pairs(c), c
    if ddi:
        raise ConfigError(f"DDI file not found: {ddi}")
    return None, None
