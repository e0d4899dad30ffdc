"""Medication recommenders built only from layers Opacus computes per-sample gradients for.

:class:`MedRecMLP` reads the multi-hot visit vector of :mod:`fedrx.medrx.features`
(diagnoses, procedures, previous-visit drugs) through ``nn.Linear`` layers: a linear layer
on a multi-hot vector is exactly an embedding-bag sum, but Opacus' per-sample gradient for
``nn.Linear`` is one einsum, far cheaper on CPU than its EmbeddingBag path. It outputs
one logit per ATC-3 label; ``sigmoid(logit) >= 0.5`` is the predicted set.

:class:`LogisticRegression` is the linear baseline over the same input.
"""

from __future__ import annotations

import torch
from torch import nn


class MedRecMLP(nn.Module):
    """``x -> Linear(in, hidden) -> ReLU -> Dropout -> Linear(hidden, hidden) -> ReLU
    -> Linear(hidden, labels)``."""

    def __init__(self, n_inputs: int, n_labels: int, hidden: int = 128, dropout: float = 0.3):
        super().__init__()
        self.encoder = nn.Linear(n_inputs, hidden)
        self.dropout = nn.Dropout(dropout)
        self.hidden = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, n_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.encoder(x))
        h = self.dropout(h)
        h = torch.relu(self.hidden(h))
        return self.head(h)


class LogisticRegression(nn.Module):
    """One independent logistic regression per label on the multi-hot input."""

    def __init__(self, n_inputs: int, n_labels: int):
        super().__init__()
        self.linear = nn.Linear(n_inputs, n_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def build_model(kind: str, n_inputs: int, n_labels: int, hidden: int = 128) -> nn.Module:
    """Model factory; ``kind`` is ``"mlp"`` or ``"logreg"``."""
    if kind == "mlp":
        return MedRecMLP(n_inputs, n_labels, hidden=hidden)
    if kind == "logreg":
        return LogisticRegression(n_inputs, n_labels)
    from fedrx.errors import ConfigError

    raise ConfigError(f"unknown model kind {kind!r} (expected mlp or logreg)")
