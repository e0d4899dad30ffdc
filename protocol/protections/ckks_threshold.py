"""``--protection ckks-threshold``: threshold CKKS (OpenFHE); no coalition of the aggregator
with fewer than t hospitals can decrypt anything but the sum.

Stages: ``crs``, ``keygen``, ``keyshares`` (only when a new key epoch opens; every member takes
part), ``upload`` (each hospital encrypts under the joint key and signs), ``decrypt`` (t live
members each recompute the sum of the listed signed uploads and return a flooded partial
decryption; the aggregator fuses them). Design and checks: :mod:`fedrx.secagg.thckks`
(:mod:`~fedrx.secagg.thckks.hospital`, :mod:`~fedrx.secagg.thckks.aggregator`).

Parameters (``params``): ``threshold``, ``min_contributors``, ``rotate_every``,
``flood_queries``, ``stat_security``, ``max_abs_sum``, ``ring_dim``, ``scale_bits``,
``first_mod_bits``, ``secure`` (False only for tests on small rings), ``key_dir`` (where a
hospital keeps its key share, mode 0600), ``worker`` (True: force the worker process).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
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
from fedrx.secagg.identity import Federation, Identity
from fedrx.secagg.thckks.aggregator import AggregatorEpoch, AggregatorRound
from fedrx.secagg.thckks.engine import EngineParams, HeEngine, open_engine
from fedrx.secagg.thckks.hospital import HospitalKeyState, HospitalRound
from fedrx.secagg.thckks.messages import STAGES
from fedrx.secagg.thckks.params import ThresholdConfig

CHECKPOINT_BLOB = "thckks_epoch.json"


class ThresholdClient(ClientProtection):
    stages = STAGES

    def __init__(self, rnd: HospitalRound):
        self.rnd = rnd

    def __repr__(self) -> str:
        return f"ThresholdClient({self.rnd.keys.hospital!r}, round={self.rnd.round})"

    def set_input(self, vector: np.ndarray) -> None:
        self.rnd.set_input(vector)

    def handle(self, stage: str, request: Any) -> Any:
        return self.rnd.handle(stage, request)


class ThresholdServer(ServerProtection):
    stages = STAGES

    def __init__(self, rnd: AggregatorRound):
        self.rnd = rnd
        self._next = 0

    def _at(self, stage: str) -> None:
        if self._next >= len(STAGES) or STAGES[self._next] != stage:
            raise ProtocolAbort(f"stage {stage!r} out of order")

    def requests(self, stage: str, alive: Sequence[str]) -> dict[str, Any]:
        self._at(stage)
        return self.rnd.requests(stage, alive)

    def collect(self, stage: str, replies: Mapping[str, Any]) -> None:
        self._at(stage)
        self.rnd.collect(stage, replies)
        self._next += 1

    def result(self) -> AggregateResult:
        if self.rnd.total is None:
            raise ProtocolAbort("the threshold-CKKS round has not completed")
        return AggregateResult(self.rnd.total.copy(),
                               tuple(u.hospital for u in self.rnd.uploads), self.rnd.stats())


class ThresholdProtection(Protection):
    """``ckks-threshold`` for the parties in ``identities`` (none: the aggregator)."""

    name = "ckks-threshold"
    stages = STAGES

    def __init__(self, federation: Federation, identities: Sequence[Identity] = (),
                 config: ThresholdConfig | None = None, *, key_dir: Path | None = None,
                 engine: HeEngine | None = None):
        self.federation = federation
        self.cfg = config or ThresholdConfig()
        self.cfg.check()
        self.engine = engine or open_engine(self.cfg.engine)
        self.epoch: AggregatorEpoch | None = None
        self.hospitals = {i.hospital: HospitalKeyState(i, federation, self.cfg, self.engine,
                                                       key_dir) for i in identities}

    def __repr__(self) -> str:
        return f"ThresholdProtection(epoch={self.epoch!r}, acting_for={sorted(self.hospitals)})"

    @classmethod
    def simulated(cls, hospitals: Sequence[str], config: ThresholdConfig | None = None,
                  **kw: Any) -> ThresholdProtection:
        ids = [Identity.generate(h) for h in sorted(set(hospitals))]
        return cls(Federation.of(ids), ids, config, **kw)

    def validate(self, n_hospitals: int, vector_length: int) -> None:
        if n_hospitals < max(3, self.cfg.min_contributors):
            raise ConfigError(f"ckks-threshold needs at least 3 hospitals, got {n_hospitals}")
        self.cfg.t_of(n_hospitals)
        if vector_length < 1:
            raise ConfigError("vector_length must be >= 1")

    def min_survivors(self, n_participants: int) -> int:
        return max(self.cfg.t_of(n_participants), self.cfg.min_contributors)

    def new_server(self, ctx: RoundContext) -> ServerProtection:
        self.validate(len(ctx.participants), ctx.vector_length)
        return ThresholdServer(AggregatorRound(self, ctx.session_id, ctx.round,
                                               ctx.participants, ctx.vector_length))

    def new_client(self, ctx: RoundContext, hospital: str) -> ClientProtection:
        keys = self.hospitals.get(hospital)
        if keys is None:
            raise ConfigError(f"ckks-threshold protection has no identity for {hospital!r}")
        return ThresholdClient(HospitalRound(keys, ctx.session_id, ctx.round,
                                             ctx.participants, ctx.vector_length))

    def reconnected(self, hospitals: Sequence[str]) -> None:
        """A member that opened a new session may have lost its key share (a node without a
        key folder): open a new epoch at the next round."""
        if self.epoch is not None and set(hospitals) & set(self.epoch.members):
            self.epoch.stale = True

    def checkpoint(self) -> dict[str, bytes]:
        return {} if self.epoch is None else {CHECKPOINT_BLOB: self.epoch.to_bytes()}

    def restore(self, blobs: dict[str, bytes]) -> None:
        blob = blobs.get(CHECKPOINT_BLOB)
        if blob is not None:
            self.epoch = AggregatorEpoch.from_bytes(blob)


_INT_KEYS = ("threshold", "min_contributors", "rotate_every", "flood_queries", "stat_security")
_ENGINE_KEYS = ("ring_dim", "scale_bits", "first_mod_bits", "secure")


def make_threshold_protection(*, federation: Federation | None,
                              identity: Identity | None = None,
                              params: Mapping[str, Any] | None = None) -> ThresholdProtection:
    """The ``ckks-threshold`` protection for one party (``identity`` None: the aggregator)."""
    params = dict(params or {})
    known = set(_INT_KEYS) | set(_ENGINE_KEYS) | {"max_abs_sum", "key_dir", "worker"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"unknown ckks-threshold parameter(s): {', '.join(unknown)}")
    if federation is None:
        raise ConfigError("protection 'ckks-threshold' needs the federation's pinned identities")
    try:
        eng = EngineParams(**{k: (bool(params[k]) if k == "secure" else int(params[k]))
                              for k in _ENGINE_KEYS if k in params})
        cfg = ThresholdConfig(engine=eng, **{k: int(params[k]) for k in _INT_KEYS
                                             if k in params and params[k] is not None},
                              **({"max_abs_sum": float(params["max_abs_sum"])}
                                 if "max_abs_sum" in params else {}))
    except (TypeError, ValueError):
        raise ConfigError("malformed ckks-threshold parameters") from None
    key_dir = params.get("key_dir")
    worker = params.get("worker", os.environ.get("FEDRX_HE_FORCE_WORKER") == "1" or None)
    engine = open_engine(cfg.engine, worker=worker)
    return ThresholdProtection(federation, [identity] if identity is not None else [], cfg,
                               key_dir=None if key_dir is None else Path(key_dir),
                               engine=engine)
