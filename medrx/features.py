"""Turn patients into model inputs.

Each visit ``t`` of a patient becomes one example:

* input: multi-hot over ``[diagnoses | procedures | previous-visit labels | has_previous]``
  (width ``D + P + L + 1``), codes outside the vocabulary ignored;
* target: multi-hot over the ``L`` labels of visit ``t``.

``VisitTensors`` keeps, for every example, the index of its patient, so evaluation can
average per patient and DP can group a patient's visits (the privacy unit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedrx.medrx.records import Patient
from fedrx.medrx.vocab import Vocabulary


@dataclass
class VisitTensors:
    """Dense features and float32 targets. Invariant: rows sorted by (patient, visit)."""

    x: np.ndarray  # (visits, D + P + L + 1) uint8, 0/1 (cast per batch)
    y: np.ndarray  # (visits, L) float32, 0/1
    prev: np.ndarray  # (visits, L) float32, 0/1: previous visit's labels (copy-last baseline)
    patient: np.ndarray  # (visits,) int64, index into the patient list
    n_patients: int

    def __len__(self) -> int:
        return len(self.y)

    def patient_rows(self) -> list[np.ndarray]:
        """Row indices of each patient, in patient order."""
        bounds = np.searchsorted(self.patient, np.arange(self.n_patients + 1))
        return [np.arange(bounds[i], bounds[i + 1]) for i in range(self.n_patients)]


def input_width(vocab: Vocabulary) -> int:
    d, p, lab = vocab.sizes
    return d + p + lab + 1


def encode(patients: Sequence[Patient], vocab: Vocabulary) -> VisitTensors:
    """Encode patients (their visits must be in time order) into :class:`VisitTensors`."""
    dx_i, px_i, lab_i = vocab.index()
    d, p, nl = vocab.sizes
    n = sum(len(pt.visits) for pt in patients)
    x = np.zeros((n, d + p + nl + 1), dtype=np.uint8)
    y = np.zeros((n, nl), dtype=np.float32)
    prev = np.zeros((n, nl), dtype=np.float32)
    pid = np.zeros(n, dtype=np.int64)
    r = 0
    for k, pt in enumerate(patients):
        last: list[int] | None = None
        for v in pt.visits:
            for c in v.diagnoses:
                j = dx_i.get(c)
                if j is not None:
                    x[r, j] = 1
            for c in v.procedures:
                j = px_i.get(c)
                if j is not None:
                    x[r, d + j] = 1
            if last is not None:
                x[r, d + p + nl] = 1
                for j in last:
                    x[r, d + p + j] = 1
                    prev[r, j] = 1.0
            labs = [lab_i[c] for c in v.labels if c in lab_i]
            y[r, labs] = 1.0
            last = labs
            pid[r] = k
            r += 1
    return VisitTensors(x, y, prev, pid, len(patients))
