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

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedrx.errors import ConfigError, ProtocolAbort
from fedrx.protocol.context import context_digest, graph_seed
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
    min_contributors: int = 0
    """Distributed DP: a hospital refuses to unmask a sum of fewer contributors (|U3|) than
    the noise shares it relies on (``n - k``); 0: no such check."""
    noisy_shares: bool = False
    """Distributed DP: inputs are pre-quantised noisy shares (not norm-clipped), so the
    decoded sum is range-checked per entry, not against the clip bound."""

    @property
    def quant(self) -> quantize.QuantConfig:
        return quantize.QuantConfig(self.clip_norm, self.frac_bits, self.max_count)

    def degree(self, n: int) -> int:
        if self.graph == "complete":
            return n - 1
        if self.graph == "harary":
            return self.k if self.k is not None else graphs.default_k(n)
        raise ConfigError(f"unknown graph {self.graph!r}; use 'complete' or 'harary'")

    def corrupt_bound(self, n_federation: int) -> int:
        """n_C: ``max_corrupt`` if pinned, else floor((N-1)/3) for the share-holder group
        of the PINNED federation size (never of a round's participant count)."""
        if self.max_corrupt is not None:
            return self.max_corrupt
        return graphs.default_corrupt(self.degree(n_federation) + 1)

    def threshold_for(self, n: int, n_federation: int | None = None) -> int:
        """t for a round of n participants in a federation of ``n_federation`` (default n);
        ConfigError naming the fix if unsafe. n_C comes from the federation size; the
        default t is floor(2N/3)+1 for the round's group, raised to n_C + 2."""
        group = self.degree(n) + 1
        n_c = self.corrupt_bound(n if n_federation is None else n_federation)
        t = self.threshold if self.threshold is not None else \
            max(graphs.default_threshold(group), n_c + 2)
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

    def set_input(self, vector: np.ndarray | quantize.PreQuantised) -> None:
        if isinstance(vector, quantize.PreQuantised):  # distributed DP: rounded and noised
            if np.shape(vector.values) != (self.params.length - 2,):
                raise ProtocolAbort(f"input length {np.shape(vector.values)} != "
                                    f"{self.params.length - 2}")
            try:
                encoded = quantize.encode_prequantised(vector, self.cfg.quant,
                                                       self.params.modulus_bits)
            except ConfigError as exc:
                raise ProtocolAbort(str(exc)) from None
            self.machine.set_input(encoded)
            return
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

    def absorb(self, stage: str, hospital: str, reply: Any) -> Any:
        return self.machine.absorb(stage, hospital, reply)

    def collect(self, stage: str, replies: Mapping[str, Any]) -> None:
        self.machine.collect(stage, replies)

    def result(self) -> AggregateResult:
        total, contributors = self.machine.result()
        # range-checked against what |U3| honest encodings can produce (ProtocolAbort)
        values, clipped = quantize.decode(total, self.cfg.quant, self.params.modulus_bits,
                                          contributors=len(contributors),
                                          clip_bounded=not self.cfg.noisy_shares)
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

    @property
    def federation_size(self) -> int:
        return len(self.federation.members)

    def min_survivors(self, n_participants: int) -> int:
        return self.config.threshold_for(n_participants, self.federation_size)

    def params(self, ctx: RoundContext) -> MaskingParams:
        """The round parameters every party derives from ``ctx``, the pinned federation and
        the config; ConfigError for a round this configuration must not run (fewer
        participants than t, t - n_C < 2 with n_C fixed by the federation size, a hospital
        outside the federation). ``context`` is the digest of everything both sides must
        agree on (:func:`fedrx.protocol.context.context_digest`)."""
        parts = tuple(ctx.participants)
        if list(parts) != sorted(set(parts)):
            raise ConfigError("participants must be sorted and distinct")
        if not set(parts) <= set(self.federation.members):
            raise ConfigError("participants outside the pinned federation")
        n, cfg = len(parts), self.config
        if n < 2:
            raise ConfigError("masking needs at least 2 participants")
        if ctx.vector_length < 2:
            raise ConfigError("vector_length must be >= 2 (parameters + example count)")
        t = cfg.threshold_for(n, self.federation_size)
        n_c = cfg.corrupt_bound(self.federation_size)
        k = cfg.degree(n)
        seed = b""
        if cfg.graph == "complete":
            g = graphs.complete_graph(parts)
        else:
            seed = graph_seed(ctx.session_id, ctx.round, parts)
            g = graphs.harary_graph(parts, k, seed, ctx.round)
        m = quantize.modulus_bits(cfg.quant, n, ctx.vector_length - 1)
        context = context_digest({
            "protection": self.name, "session": ctx.session_id, "round": ctx.round,
            "model_hash": ctx.model_hash, "participants": list(parts),
            "vector_length": ctx.vector_length, "modulus_bits": m, "threshold": t,
            "max_corrupt": n_c, "federation_size": self.federation_size,
            "graph": cfg.graph, "k": k, "graph_seed": seed,
            "config": dataclasses.asdict(cfg)})
        return MaskingParams(ctx.session_id, ctx.round, parts, ctx.vector_length + 1, m, t, g,
                             context=context, active=cfg.active,
                             min_contributors=cfg.min_contributors)

    def new_server(self, ctx: RoundContext) -> ServerProtection:
        return MaskServer(self.config, self.params(ctx), self.federation)

    def new_client(self, ctx: RoundContext, hospital: str) -> ClientProtection:
        if self.identity is None or self.identity.hospital != hospital:
            raise ConfigError(f"mask protection for {hospital} needs that hospital's identity")
        return MaskClient(self.config, self.params(ctx), self.identity, self.federation)
