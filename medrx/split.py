"""Seeded patient-level train / validation / test split.

No patient appears in two parts (visits of one patient are never split). The split is
made WITHIN each hospital, so every hospital of 3 or more patients has its own train,
validation and test patients (federated training uses a hospital's train part; evaluation
pools test parts; a hospital of 1-2 patients trains only, :func:`fedrx.medrx.prepare.
split_hospital`).
Default fractions follow SafeDrug: 2/3 train, 1/6 validation, 1/6 test.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from fedrx.errors import ConfigError
from fedrx.medrx.records import Patient


@dataclass(frozen=True)
class Split:
    train: list[Patient]
    val: list[Patient]
    test: list[Patient]


def _hospital_seed(seed: int, hospital: str) -> int:
    digest = hashlib.sha256(f"{seed}:{hospital}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


MIN_SPLIT_PATIENTS = 3
"""Patients a hospital needs for a train / validation / test split; below it every patient
trains (no validation or test patient)."""


def split_patients(
    patients: list[Patient], *, seed: int = 0, val_frac: float = 1 / 6, test_frac: float = 1 / 6
) -> Split:
    """Split patients per hospital with a seeded shuffle. Deterministic for a seed."""
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ConfigError(f"invalid split fractions: val={val_frac}, test={test_frac}")
    by_h: dict[str, list[Patient]] = {}
    for p in patients:
        by_h.setdefault(p.hospital, []).append(p)
    train: list[Patient] = []
    val: list[Patient] = []
    test: list[Patient] = []
    for h in sorted(by_h):
        group = sorted(by_h[h], key=lambda p: p.patient_id)
        order = np.random.default_rng(_hospital_seed(seed, h)).permutation(len(group))
        n = len(group)
        n_test = int(round(n * test_frac))
        n_val = int(round(n * val_frac))
        if n < MIN_SPLIT_PATIENTS:  # too few for three parts: every patient trains
            n_test = n_val = 0
        if n >= MIN_SPLIT_PATIENTS and test_frac > 0:
            n_test = max(n_test, 1)
        if n >= MIN_SPLIT_PATIENTS and val_frac > 0:
            n_val = max(n_val, 1)
        n_train = n - n_test - n_val
        shuffled = [group[i] for i in order]
        train += shuffled[:n_train]
        val += shuffled[n_train : n_train + n_val]
        test += shuffled[n_train + n_val :]
    return Split(train, val, test)
