"""What a hospital does to a decrypted aggregate before it leaves the node: flood and round."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedrx.secagg.ckks.params import CkksParams


@dataclass(frozen=True)
class ReleasePolicy:
    """How a hospital post-processes a decrypted aggregate before it leaves the node.

    ``flood_sigma`` = ``2^flood_bits · slot_error_std(n)`` (absolute, units of the sum): the
    Gaussian flooding noise; ``grid`` = the smallest power of two >= ``sum_error_bound(n)``: the
    output is rounded to multiples of it. ``error_bound`` bounds |released − true sum| per slot
    (CKKS error + ``tail`` flooding standard deviations + half a grid step).
    """

    flood_sigma: float
    grid: float
    error_bound: float

    @staticmethod
    def for_sum(params: CkksParams, n: int, flood_bits: int | None) -> ReleasePolicy:
        ckks = params.sum_error_bound(n)
        grid = 2.0 ** math.ceil(math.log2(ckks))
        sigma = 0.0 if flood_bits is None else 2.0 ** flood_bits * params.slot_error_std(n)
        return ReleasePolicy(sigma, grid, ckks + params.tail * sigma + grid / 2)
