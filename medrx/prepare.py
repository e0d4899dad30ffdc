"""From a data set to hospitals' private data: load, partition, split, vocabulary, task.

Data -> hospitals (:mod:`partition`) -> per-hospital patient split -> shared vocabulary
(``vocabulary = "data"``: agreed once from the hospitals' training patients; ``"public"``:
the code systems' categories, :mod:`fedrx.medrx.public_vocab`, which reveals nothing about
any hospital) -> :class:`MedicationTask` and one
:class:`HospitalData` per hospital. Nothing here knows about protection, DP or transport.

The per-hospital split (:func:`split_hospital`): from 3 patients on, SafeDrug's seeded 2/3
train, 1/6 validation, 1/6 test with at least one validation and one test patient
(:func:`fedrx.medrx.split.split_patients`, unchanged). A hospital of 1 or 2 patients (a small
eICU site with ``min_patients = 1``) puts every patient in TRAIN: it contributes its update
and reports empty validation and test parts (zero-count metric sums; the pooled metrics are
count-weighted, so it changes neither them nor model selection).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fedrx.errors import ConfigError, DataError
from fedrx.medrx.metrics import ddi_matrix
from fedrx.medrx.partition import partition
from fedrx.medrx.public_vocab import lexicon_atc3, mapping_atc3, public_vocabulary, to_categories
from fedrx.medrx.records import Cohort, Patient
from fedrx.medrx.split import MIN_SPLIT_PATIENTS, Split, split_patients
from fedrx.medrx.task import HospitalData, MedicationTask, make_hospital_data
from fedrx.medrx.vocab import Vocabulary, build_vocabulary

log = logging.getLogger("fedrx.medrx.prepare")

SPLIT_MIN_PATIENTS = MIN_SPLIT_PATIENTS
"""Patients a hospital needs for a train / validation / test split; below it, train only
(:data:`fedrx.medrx.split.MIN_SPLIT_PATIENTS`)."""


def split_hospital(patients: list[Patient], *, seed: int) -> Split:
    """ONE hospital's seeded patient split: :func:`split_patients` of a single hospital
    (module doc), which puts every patient of a hospital below
    :data:`SPLIT_MIN_PATIENTS` in train. Why not 1 train + 1 test for ``n = 2``: a single
    test patient is one count among hundreds in the pooled test metrics (no signal) while it
    halves what the site trains on."""
    if len({p.hospital for p in patients}) > 1:
        raise ConfigError("split_hospital splits ONE hospital's patients")
    return split_patients(patients, seed=seed)


class DataSettings(Protocol):
    """The settings :func:`prepare` reads (``fedrx simulate``'s config has them all)."""

    data: str
    mappings: str
    min_visits: int
    hospitals: int | None
    seed: int
    partition: str
    min_patients: int
    model: str
    hidden: int
    vocabulary: str


@dataclass
class Prepared:
    """The hospitals' private data, their splits and the shared task."""

    cohort_name: str
    hospitals: dict[str, HospitalData]
    splits: dict[str, Split]
    task: MedicationTask
    pairs: Any

    def describe(self) -> dict[str, Any]:
        """The data part of a results document: counts only, never a record."""
        return {
            "dataset": self.cohort_name,
            "hospitals": {h: {"train_patients": len(s.train), "val_patients": len(s.val),
                              "test_patients": len(s.test),
                              "train_visits": len(self.hospitals[h].train),
                              "test_visits": len(self.hospitals[h].test)}
                          for h, s in self.splits.items()},
            "vocabulary": dict(zip(("diagnoses", "procedures", "labels"),
                                   self.task.vocab.sizes, strict=True)),
            "parameters": self.task.spec.size,
        }


def prepare(cfg: DataSettings) -> Prepared:
    """Load, partition, split and encode the data; build the task."""
    from fedrx.medrx.datasets import find_ddi_pairs, load_dataset

    mappings = Path(cfg.mappings) if cfg.mappings else None
    cohort = load_dataset(cfg.data, mappings_dir=mappings, min_visits=cfg.min_visits)
    public = cfg.vocabulary == "public"
    if public:
        cohort, _ = to_categories(cohort)
    elif cfg.vocabulary != "data":
        raise ConfigError(f"vocabulary must be 'public' or 'data', got {cfg.vocabulary!r}")
    parts = partition(cohort, cfg.hospitals, seed=cfg.seed, scheme=cfg.partition,
                      min_patients=cfg.min_patients)
    splits = {h: split_hospital(p, seed=cfg.seed) for h, p in parts.items()}
    small = sorted(h for h, p in parts.items() if len(p) < SPLIT_MIN_PATIENTS)
    if small:
        log.info("%d hospital(s) with fewer than %d patients train on all of them (no "
                 "validation or test patients): %s", len(small), SPLIT_MIN_PATIENTS,
                 ", ".join(small))
    for h, s in splits.items():
        if not s.train:
            raise ConfigError(f"hospital {h} has no training patients")
    vocab = (public_vocabulary(public_labels(cfg.data, mappings)) if public
             else build_vocabulary([p for s in splits.values() for p in s.train]))
    pairs, _ = find_ddi_pairs(cfg.data, mappings)
    if pairs is None:
        log.warning("no DDI graph found; DDI rate is reported as 0")
    ddi = ddi_matrix(vocab.labels, pairs) if pairs else None
    task = MedicationTask(vocab, ddi, model=cfg.model, hidden=cfg.hidden)
    data = {h: make_hospital_data(h, s.train, s.val, s.test, vocab) for h, s in splits.items()}
    return Prepared(cohort.name, data, splits, task, pairs)


def public_labels(data: str, mappings: Path | None) -> set[str]:
    """ATC-3 classes for a public vocabulary: the eICU lexicon's and those of the NDC -> ATC
    mapping table found for ``data`` (``mappings``, DATA/mappings, the shared demo's)."""
    from fedrx.medrx.datasets import named_dataset_path
    from fedrx.medrx.mimic import default_mappings_dir

    labels = lexicon_atc3()
    try:
        root = Path(data) if Path(data).is_dir() else named_dataset_path(data)
        mdir = mappings or default_mappings_dir(root)
    except DataError:
        return labels
    return labels | mapping_atc3(mdir)


def centralized_baseline(prep: Prepared, *, model: str, hidden: int, lr: float,
                         batch_size: int, seed: int) -> dict[str, Any]:
    """Centralized training on the pooled training patients of the SAME split and vocabulary
    (test metrics of each method)."""
    from fedrx.medrx.records import Cohort
    from fedrx.medrx.train import TrainConfig, train_centralized

    train = [p for s in prep.splits.values() for p in s.train]
    val = [p for s in prep.splits.values() for p in s.val]
    test = [p for s in prep.splits.values() for p in s.test]
    tc = TrainConfig(model=model, hidden=hidden, lr=lr, batch_size=batch_size, seed=seed)
    res, _, _ = train_centralized(Cohort(prep.cohort_name, train + val + test), tc, prep.pairs,
                                  split=Split(train, val, test), vocab=prep.task.vocab)
    return res.test


def prepare_hospital(cohort: Cohort, vocab: Vocabulary, *, public: bool, seed: int,
                     model: str, hidden: int, pairs: Any = None
                     ) -> tuple[MedicationTask, HospitalData, Split]:
    """ONE hospital's data from its own export, under a vocabulary agreed beforehand (never
    built from these patients): codes to public categories when ``public``, the seeded
    patient split, the encoding, the task. The same steps :func:`prepare` takes for each
    hospital of a simulation, so a node and its simulated twin see the same examples."""
    hospitals = sorted({p.hospital for p in cohort.patients})
    if len(hospitals) != 1:
        raise ConfigError(f"a hospital's export must hold one hospital, found {len(hospitals)}")
    if public:
        cohort, _ = to_categories(cohort)
    split = split_hospital(cohort.patients, seed=seed)
    if not split.train:
        raise ConfigError(f"hospital {hospitals[0]} has no training patients")
    ddi = ddi_matrix(vocab.labels, pairs) if pairs else None
    task = MedicationTask(vocab, ddi, model=model, hidden=hidden)
    data = make_hospital_data(hospitals[0], split.train, split.val, split.test, vocab)
    return task, data, split
