"""What DP-SGD trains on: examples as tensors and the privacy unit of each example.

DP knows nothing of the task: it sees ``inputs`` (fed to the model row by row), ``targets``
(passed to the per-example loss with the model's outputs) and ``groups`` (the privacy unit,
e.g. the patient, of every row). A unit's contribution to a step is the SUM of its rows'
losses, and it is clipped as a whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from fedrx.errors import DataError

PerExampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss(outputs, targets) -> (rows,)`` tensor: one loss value per example row."""


@dataclass(frozen=True)
class GroupedExamples:
    """Examples grouped into privacy units.

    ``inputs``: ``(rows, ...)`` tensor; rows are sliced and, if ``input_dtype`` is set, cast
    to it per batch (so 0/1 features may be stored compactly, e.g. as uint8);
    ``targets``: ``(rows, ...)`` tensor; ``groups``: int64 ``(rows,)``, non-decreasing, in
    ``[0, n_groups)``: the unit of each row (a unit's rows are contiguous; a unit may have
    none). ``n_groups``: number of units, the population the sampling rate refers to.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    groups: np.ndarray
    n_groups: int
    input_dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        g = np.asarray(self.groups)
        rows = len(g)
        if g.ndim != 1 or len(self.inputs) != rows or len(self.targets) != rows:
            raise DataError(f"examples: {len(self.inputs)} inputs, {len(self.targets)} targets "
                            f"and {rows} group indices must be equal in number")
        if self.n_groups < 1 or rows == 0:
            raise DataError("DP training needs at least one patient with a visit")
        if np.any(np.diff(g) < 0) or g[0] < 0 or g[-1] >= self.n_groups:
            raise DataError("examples must be sorted by group, with groups in [0, n_groups)")

    def __len__(self) -> int:
        return len(self.groups)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(starts, ends)``: row range ``[starts[u], ends[u])`` of every unit ``u``."""
        b = np.searchsorted(self.groups, np.arange(self.n_groups + 1))
        return b[:-1], b[1:]

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (cast to ``input_dtype``) and targets of ``rows``."""
        x = self.inputs[rows]
        if self.input_dtype is not None:
            x = x.to(self.input_dtype)
        return x, self.targets[rows]
