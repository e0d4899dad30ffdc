"""Evaluation metrics exactly as SafeDrug (Yang et al., IJCAI 2021) defines them.

For every visit with true label set ``T``, predicted set ``P`` (probability >= 0.5) and
probabilities ``p``:

* Jaccard ``|P & T| / |P | T|`` (0 when both are empty);
* precision ``|P & T| / |P|`` (0 when ``P`` is empty), recall ``|P & T| / |T|`` (0 when
  ``T`` is empty), F1 their harmonic mean (0 when both are 0);
* PRAUC: average precision of ranking the label vocabulary by ``p`` against ``T``
  (scikit-learn's ``average_precision_score`` definition: ``sum_k (R_k - R_{k-1}) P_k``
  over distinct score thresholds; 0 when ``T`` is empty).

These are averaged over a patient's visits, then over patients. The DDI rate is POOLED:
over all visits, the fraction of unordered pairs of predicted drugs that interact.
The average number of drugs is pooled too: predicted drugs / visits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fedrx.errors import DataError
from fedrx.medrx.tables import iter_rows

THRESHOLD = 0.5


@dataclass(frozen=True)
class Metrics:
    """Task metrics. All are fractions in [0, 1] except ``avg_meds`` (drugs per visit)."""

    jaccard: float
    prauc: float
    f1: float
    precision: float
    recall: float
    ddi_rate: float
    avg_meds: float
    patients: int
    visits: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of one ranking (binary ``y_true``, real ``scores``)."""
    y_true = np.asarray(y_true).astype(bool)
    n_pos = int(y_true.sum())
    if n_pos == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    s = np.asarray(scores, dtype=np.float64)[order]
    t = y_true[order]
    tp = np.cumsum(t)
    fp = np.cumsum(~t)
    # keep the last index of each run of equal scores (a threshold includes all ties)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    prev_recall = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - prev_recall) * precision))


def visit_scores(true: set[int], pred: set[int]) -> tuple[float, float, float, float]:
    """(jaccard, precision, recall, f1) of one visit."""
    inter = len(true & pred)
    union = len(true | pred)
    ja = inter / union if union else 0.0
    pr = inter / len(pred) if pred else 0.0
    re = inter / len(true) if true else 0.0
    f1 = 2 * pr * re / (pr + re) if pr + re > 0 else 0.0
    return ja, pr, re, f1


def load_ddi_pairs(path: Path) -> set[frozenset[str]]:
    """Read interacting ATC-3 pairs (columns ``atc3_a,atc3_b``)."""
    pairs: set[frozenset[str]] = set()
    for row in iter_rows(Path(path), ("atc3_a", "atc3_b")):
        a, b = row["atc3_a"].strip(), row["atc3_b"].strip()
        if a and b and a != b:
            pairs.add(frozenset((a, b)))
    if not pairs:
        raise DataError(f"{path}: no DDI pairs")
    return pairs


def ddi_matrix(labels: Sequence[str], pairs: set[frozenset[str]]) -> np.ndarray:
    """Symmetric boolean interaction matrix over a label vocabulary."""
    idx = {lab: i for i, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=bool)
    for pair in pairs:
        a, b = tuple(pair)
        if a in idx and b in idx:
            m[idx[a], idx[b]] = m[idx[b], idx[a]] = True
    return m


@dataclass
class MetricSums:
    """Additive sufficient statistics of :class:`Metrics`.

    Sums of per-patient means (so hospitals can report them and the pooled metrics equal
    those of evaluating all patients together), plus pooled counts. ``combine`` adds two.
    """

    jaccard: float = 0.0
    prauc: float = 0.0
    f1: float = 0.0
    precision: float = 0.0
    recall: float = 0.0
    patients: int = 0
    visits: int = 0
    meds: int = 0
    ddi_pairs: int = 0
    ddi_hits: int = 0

    def combine(self, other: MetricSums) -> MetricSums:
        return MetricSums(**{k: getattr(self, k) + getattr(other, k)
                             for k in asdict(self)})

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def metrics(self) -> Metrics:
        if self.patients == 0:
            raise DataError("no visits to evaluate")
        n = self.patients
        return Metrics(
            jaccard=self.jaccard / n, prauc=self.prauc / n, f1=self.f1 / n,
            precision=self.precision / n, recall=self.recall / n,
            ddi_rate=self.ddi_hits / self.ddi_pairs if self.ddi_pairs else 0.0,
            avg_meds=self.meds / self.visits if self.visits else 0.0, patients=n,
            visits=self.visits,
        )


def evaluate_sums(
    patients: Iterable[tuple[np.ndarray, np.ndarray]],
    ddi: np.ndarray | None = None,
    threshold: float = THRESHOLD,
) -> MetricSums:
    """Additive statistics over ``patients`` (see :func:`evaluate` for the input format)."""
    acc = np.zeros(5)
    n_pat = ddi_all = ddi_hit = n_meds = n_visits = 0
    for y_true, y_prob in patients:
        y_true = np.asarray(y_true)
        y_prob = np.asarray(y_prob, dtype=np.float64)
        if y_true.shape != y_prob.shape or y_true.ndim != 2:
            raise ValueError("y_true and y_prob must have the same (visits, labels) shape")
        if len(y_true) == 0:
            continue
        rows = []
        for t_row, p_row in zip(y_true, y_prob, strict=True):
            true = set(np.flatnonzero(t_row).tolist())
            pred_idx = np.flatnonzero(p_row >= threshold)
            ja, pr, re, f1 = visit_scores(true, set(pred_idx.tolist()))
            rows.append((ja, average_precision(t_row, p_row), f1, pr, re))
            n_meds += len(pred_idx)
            n_visits += 1
            k = len(pred_idx)
            if k > 1:
                ddi_all += k * (k - 1) // 2
                if ddi is not None:
                    sub = ddi[np.ix_(pred_idx, pred_idx)]
                    ddi_hit += int(np.triu(sub, 1).sum())
        acc += np.mean(rows, axis=0)
        n_pat += 1
    ja, ap, f1, pr, re = (float(v) for v in acc)
    return MetricSums(ja, ap, f1, pr, re, n_pat, n_visits, n_meds, ddi_all, ddi_hit)


def evaluate(
    patients: Iterable[tuple[np.ndarray, np.ndarray]],
    ddi: np.ndarray | None = None,
    threshold: float = THRESHOLD,
) -> Metrics:
    """Compute SafeDrug metrics.

    ``patients`` yields, per patient, ``(y_true, y_prob)``: arrays of shape
    ``(visits, labels)``, ``y_true`` binary and ``y_prob`` probabilities (a hard 0/1
    prediction is a valid probability). ``ddi`` is a ``(labels, labels)`` boolean matrix.
    """
    return evaluate_sums(patients, ddi, threshold).metrics()
