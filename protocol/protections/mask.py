"""``--protection mask``: pairwise-mask secure aggregation behind the Protection interface.

Binds the transport-free state machines of :mod:`fedrx.secagg.mask` (each state raises
:class:`fedrx.errors.ProtocolAbort` itself) and the quantiser of
:mod:`fedrx.secagg.quantize` to the Protection interface:

* The client's float64 input ``[c * delta..., c]`` is encoded (L2 clip of the unweighted
  delta to ``clip_norm``, fixed point with ``frac_bits`` fractional bits, unbiased
  stochastic rounding; the count ``c`` and the number of clipped coordinates are carried
  exactly as two integer entries), masked modulo ``2**m`` and bit-packed.
* The server's :class:`AggregateResult` holds the dequantised float64 sum
  ``[sum c*delta..., sum c]`` over the contributors (U3), and in ``stats`` the sum of
  clipped coordinates, the modulus bits and the sizes of U1..U3.

Per-coordinate error of the returned weighted sum: at most ``|U3| * 2**-frac_bits`` (each
stochastic rounding moves a value by < 1 grid step, unbiased), plus the clipping bias.
The example-count entry is exact.

Threshold rule (see :mod:`fedrx.secagg.graph`): with N share holders (N = n for the
complete graph, k + 1 for SecAgg+) and n_C = ``max_corrupt`` (default floor((N-1)/3)),
t must satisfy ``t <= N``, ``2t > N + n_C`` and ``t - n_C >= 2``; default t = floor(2N/3)+1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedrx.errors import ConfigError, ProtocolAbort
from fedrx.protocol.protection import (
    AggregateResult,
    ClientProtection,
    Protection,
    RoundContext,
    ServerProtection,
)
from fedrx.secagg import graph as graphs
from fedrx.secagg import quantize
from fedrx.secagg.identity import Federation, Identity
from fedrx.secagg.mask.client import MaskingClient
from fedrx.secagg.mask.params import STAGES_ACTIVE, STAGES_PASSIVE, MaskingParams
from fedrx.secagg.mask.server import MaskingServer


@dataclass(frozen=True)
class MaskConfig:
    """Configuration of the ``mask`` protection (identical at every party).

    ``threshold``: Shamir t (None: the default rule). ``max_corrupt``: assumed n_C (None:
    floor((N-1)/3)). ``graph``: ``"complete"`` or ``"harary"`` (SecAgg+); ``k``: its degree
    (None: :func:`fedrx.secagg.graph.default_k`). ``clip_norm``: L2 bound on each hospital's
    unweighted delta. ``frac_bits``: fixed-point fractional bits. ``max_count``: largest
    example count. ``active``: run the consistency check (needed against a malicious
    aggregator). ``rounding_seed``: REPRODUCIBILITY ONLY; derive each hospital's
    stochastic-rounding coins from (seed, hospital, round) instead of the OS so that two runs
    (in-process and over gRPC) agree bit for bit. None (default) for deployments.
    """

    threshold: int | None = None
    max_corrupt: int | None = None
    graph: str = "complete"
    k: int | None = None
    clip_norm: float = 1.0
    frac_bits: int = 16
    max_count: int = 100_000
    active: bool = True
    rounding_seed: int | None = None

    @property
    def quant(self) -> quantize.QuantConfig:
        return quantize.QuantConfig(self.clip_norm, self.frac_bits, self.max_count)

    def degree(self, n: int) -> int:
        if self.graph == "complete":
            return n - 1
        if self.graph == "harary":
            return self.k if self.k is not None else graphs.default_k(n)
        raise ConfigError(f"unknown graph {self.graph!r}; use 'complete' or 'harary'")

    def threshold_for(self, n: int) -> int:
        """t for n participants; ConfigError naming the fix if unsafe."""
        group = self.degree(n) + 1
        n_c = self.max_corrupt if self.max_corrupt is not None else graphs.default_corrupt(group)
        t = self.threshold if self.threshold is not None else graphs.default_threshold(group)
        graphs.check_threshold(t, group, n_c)
        return t


class MaskClient(ClientProtection):
    """A hospital's side: quantise, then drive :class:`MaskingClient`."""

    def __init__(self, cfg: MaskConfig, params: MaskingParams, identity: Identity,
                 federation: Federation):
        self.cfg = cfg
        self.params = params
        self.stages = params.stages
        self.machine = MaskingClient(params, identity, federation)
        self.clip_stats: quantize.ClipStats | None = None

    def set_input(self, vector: np.ndarray) -> None:
        if np.shape(vector) != (self.params.length - 1,):
            raise ProtocolAbort(f"input length {np.shape(vector)} != "
                                  f"{self.params.length - 1}")
        key = (None if self.cfg.rounding_seed is None else
               quantize.rounding_key(self.cfg.rounding_seed, self.machine.hospital,
                                     self.params.round))
        encoded, self.clip_stats = quantize.encode(vector, self.cfg.quant,
                                                   self.params.modulus_bits, coin_key=key)
        self.machine.set_input(encoded)

    def handle(self, stage: str, request: Any) -> Any:
        return self.machine.handle(stage, request)


class MaskServer(ServerProtection):
    """The aggregator's side: drive :class:`MaskingServer`, then dequantise."""

    def __init__(self, cfg: MaskConfig, params: MaskingParams, federation: Federation):
        self.cfg = cfg
        self.params = params
        self.stages = params.stages
        self.machine = MaskingServer(params, federation)

    def requests(self, stage: str, alive: Sequence[str]) -> dict[str, Any]:
        return self.machine.requests(stage, alive)

    def collect(self, stage: str, replies: Mapping[str, Any]) -> None:
        self.machine.collect(stage, replies)

    def result(self) -> AggregateResult:
        total, contributors = self.machine.result()
        values, clipped = quantize.decode(total, self.cfg.quant, self.params.modulus_bits)
        v = self.machine.view
        return AggregateResult(values, contributors, {
            "clipped_coordinates": clipped, "modulus_bits": self.params.modulus_bits,
            "threshold": self.params.threshold, "advertised": len(v.advertised),
            "shared": len(v.shared), "masked": len(v.masked), "rejected": dict(v.rejected)})


class MaskProtection(Protection):
    """Pairwise-mask secure aggregation with dropout recovery (``--protection mask``).

    ``identity``: the hospital's long-term identity on a hospital node, None on the
    aggregator. ``federation``: the pinned public identities of all hospitals.
    """

    name = "mask"

    def __init__(self, identity: Identity | None, federation: Federation,
                 config: MaskConfig | None = None):
        self.identity = identity
        self.federation = federation
        self.config = config or MaskConfig()
        self.config.quant.check()
        self.config.degree(3)
        self.stages = STAGES_ACTIVE if self.config.active else STAGES_PASSIVE

    def validate(self, n_hospitals: int, vector_length: int) -> None:
        if n_hospitals < 2:
            raise ConfigError("masking needs at least 2 hospitals (3 or more for any "
                              "dropout tolerance)")
        if vector_length < 2:
            raise ConfigError("vector_length must be >= 2 (parameters + example count)")
        k = self.config.degree(n_hospitals)
        if self.config.graph == "harary":
            graphs.harary_graph([str(i) for i in range(n_hospitals)], k, bytes(32), 1)
        self.config.threshold_for(n_hospitals)
        quantize.modulus_bits(self.config.quant, n_hospitals, vector_length - 1)

    def min_survivors(self, n_participants: int) -> int:
        return self.config.threshold_for(n_participants)

    def params(self, ctx: RoundContext) -> MaskingParams:
        """The round parameters every party derives from ``ctx`` and the config."""
        parts = tuple(ctx.participants)
        if list(parts) != sorted(set(parts)):
            raise ConfigError("participants must be sorted and distinct")
        n = len(parts)
        self.validate(n, ctx.vector_length)
        if self.config.graph == "complete":
            g = graphs.complete_graph(parts)
        else:
            g = graphs.harary_graph(parts, self.config.degree(n), ctx.session_id, ctx.round)
        m = quantize.modulus_bits(self.config.quant, n, ctx.vector_length - 1)
        mh = ctx.params.get("model_hash", b"")
        return MaskingParams(ctx.session_id, ctx.round, parts, ctx.vector_length + 1, m,
                             self.config.threshold_for(n), g, self.config.active,
                             mh if isinstance(mh, bytes) else str(mh).encode())

    def new_server(self, ctx: RoundContext) -> ServerProtection:
        return MaskServer(self.config, self.params(ctx), self.federation)

    def new_client(self, ctx: RoundContext, hospital: str) -> ClientProtection:
        if self.identity is None or self.identity.hospital != hospital:
            raise ConfigError(f"mask protection for {hospital} needs that hospital's identity")
        return MaskClient(self.config, self.params(ctx), self.identity, self.federation)
