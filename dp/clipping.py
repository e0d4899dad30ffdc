"""Per-unit (patient) clipped gradient sums, two interchangeable implementations.

Both take a batch of example rows, ``local`` (the position 0..k-1 of each row's unit in
the batch, non-decreasing) and the clipping norm ``C``, and return ``(sums by parameter
name, pre-clip per-unit L2 norms)``: the sum over the ``k`` units of their gradients, each
scaled by ``min(1, C / (||g_u|| + 1e-6))`` (all parameters together). A unit's gradient is
that of the SUM of its rows' per-example losses.

* :func:`opacus_clipped_sum`: Opacus' :class:`~opacus.GradSampleModule`
  (``loss_reduction="sum"``) computes per-ROW gradients; they are summed per unit with
  ``index_add_`` before clipping. Works for every layer type Opacus supports; memory
  ``rows x params``.
* :func:`ghost_clipped_sum` (every parametrised module ``nn.Linear``): unit-grouped ghost
  clipping. For a linear layer the per-row gradient is ``g_i a_i^T`` (output-gradient times
  input), so a unit's squared norm is ``sum_{i,j in u} (g_i.g_j)(a_i.a_j + 1)`` (the ``+1``
  for the bias) and the clipped sum is ``G^T diag(c) A`` with per-row factors ``c``; no
  per-row gradient is materialised. Tested to give the same clipped sum as the Opacus
  path. Each linear layer must be called once per forward pass on 2-D input.

Neither leaves hooks, ``grad_sample`` attributes or ``.grad`` on the model.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from fedrx.dp.examples import PerExampleLoss
from fedrx.errors import ConfigError

METHODS = ("auto", "ghost", "opacus")
ClippedSum = tuple[dict[str, torch.Tensor], torch.Tensor]


def param_modules(model: nn.Module) -> list[nn.Module]:
    """Modules that own at least one trainable parameter."""
    return [m for m in model.modules()
            if any(p.requires_grad for p in m.parameters(recurse=False))]


def choose_method(model: nn.Module, method: str) -> str:
    """``"auto"`` -> ``"ghost"`` for linear-only models, else ``"opacus"``; checks ghost."""
    linear_only = all(isinstance(m, nn.Linear) for m in param_modules(model))
    if method == "auto":
        return "ghost" if linear_only else "opacus"
    if method == "ghost" and not linear_only:
        raise ConfigError("method='ghost' needs a model whose parametrised modules are "
                          "all nn.Linear; use method='opacus'")
    return method


def clip_factors(norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """``min(1, C / (norm + 1e-6))`` per unit."""
    return (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)


def opacus_clipped_sum(model: nn.Module, loss_fn: PerExampleLoss, x: torch.Tensor,
                       y: torch.Tensor, local: torch.Tensor, k: int,
                       max_grad_norm: float) -> ClippedSum:
    """Clipped per-unit sum from Opacus per-row gradients (see module doc)."""
    from opacus import GradSampleModule

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            loss_fn(gsm(x), y).sum().backward()
        per_unit = {}
        for n, p in params.items():
            gs = p.grad_sample
            per_unit[n] = torch.zeros((k, *p.shape), dtype=gs.dtype).index_add_(0, local, gs)
    finally:
        gsm._close()
        for p in params.values():
            p.grad = None
    norms = torch.sqrt(sum(g.reshape(k, -1).pow(2).sum(1) for g in per_unit.values()))
    f = clip_factors(norms, max_grad_norm)
    return {n: torch.einsum("p,p...->...", f, g) for n, g in per_unit.items()}, norms


def _group_sq_norms(g: torch.Tensor, a: torch.Tensor | None, bias: bool,
                    local: torch.Tensor, k: int) -> torch.Tensor:
    """Per-unit ``||sum_{i in u} [g_i a_i^T, g_i]||^2`` for one linear layer,
    ``= sum_{i,j in u} (g_i.g_j)(a_i.a_j + bias)``, from same-unit row pairs only.

    Rows of a unit are contiguous (``local`` non-decreasing). Units are padded to the
    largest row count and Gram blocks computed with ``bmm``; if padding would more than
    quadruple the rows, the full masked ``rows x rows`` Gram is used instead.
    """
    rows = len(local)
    counts = torch.bincount(local, minlength=k)
    vmax = int(counts.max())
    if k * vmax <= 4 * rows + 64:
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(rows) - starts[local]
        pg = g.new_zeros((k, vmax, g.shape[1]))
        pg[local, pos] = g
        kern = torch.bmm(pg, pg.transpose(1, 2))
        if a is not None:
            pa = a.new_zeros((k, vmax, a.shape[1]))
            pa[local, pos] = a
            # padded g rows are zero, so the "+ bias" term only counts real pairs
            kern = kern * (torch.bmm(pa, pa.transpose(1, 2)) + float(bias))
        elif not bias:
            return torch.zeros(k, dtype=torch.float64)
        return kern.sum((1, 2)).double()
    same = local[:, None] == local[None, :]
    kern = g @ g.T
    if a is not None:
        kern = kern * (a @ a.T + float(bias))
    elif not bias:
        return torch.zeros(k, dtype=torch.float64)
    return torch.zeros(k, dtype=torch.float64).index_add_(
        0, local, (kern * same).sum(1).double())


def ghost_clipped_sum(model: nn.Module, loss_fn: PerExampleLoss, x: torch.Tensor,
                      y: torch.Tensor, local: torch.Tensor, k: int,
                      max_grad_norm: float) -> ClippedSum:
    """Clipped per-unit sum by unit-grouped ghost clipping (see module doc)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    layers = [m for m in param_modules(model) if isinstance(m, nn.Linear)]
    acts: dict[nn.Module, torch.Tensor] = {}
    outs: dict[nn.Module, torch.Tensor] = {}

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if mod in outs:
            raise ConfigError("method='ghost': a linear layer ran twice in one forward "
                              "pass (weight sharing); use method='opacus'")
        if inp[0].dim() != 2:
            raise ConfigError("method='ghost' needs 2-D inputs to every linear layer")
        acts[mod] = inp[0].detach()
        outs[mod] = out

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        loss = loss_fn(model(x), y).sum()
    finally:
        for h in handles:
            h.remove()
    grads = torch.autograd.grad(loss, [outs[m] for m in layers])
    sq = torch.zeros(k, dtype=torch.float64)
    for m, g in zip(layers, grads, strict=True):
        bias = m.bias is not None and m.bias.requires_grad
        sq += _group_sq_norms(g, acts[m] if m.weight.requires_grad else None, bias, local, k)
    norms = sq.clamp(min=0.0).sqrt().float()
    c_row = clip_factors(norms, max_grad_norm)[local]
    names = {id(p): n for n, p in params.items()}
    sums: dict[str, torch.Tensor] = {}
    for m, g in zip(layers, grads, strict=True):
        gc = g * c_row[:, None]
        if m.weight.requires_grad:
            sums[names[id(m.weight)]] = gc.T @ acts[m]
        if m.bias is not None and m.bias.requires_grad:
            sums[names[id(m.bias)]] = gc.sum(0)
    return sums, norms


CLIPPED_SUMS = {"ghost": ghost_clipped_sum, "opacus": opacus_clipped_sum}
