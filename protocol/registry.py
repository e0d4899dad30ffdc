"""Protection levels by name: ``none``, ``mask``, ``ckks``.

Each party (the aggregator, every hospital) builds ITS OWN protection instance: a
hospital's holds its private identity, the aggregator's holds none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedrx.errors import ConfigError
from fedrx.protocol.context import pin
from fedrx.protocol.hospital import HospitalParty
from fedrx.protocol.protection import NoProtection, Protection
from fedrx.protocol.task import ClientOptimizer, FederatedTask
from fedrx.secagg.identity import Federation, Identity

PROTECTIONS = ("none", "mask", "ckks", "ckks-threshold")


def make_protection(name: str, *, federation: Federation | None = None,
                    identity: Identity | None = None,
                    params: Mapping[str, Any] | None = None,
                    policy: Mapping[str, Any] | None = None) -> Protection:
    """The protection ``name`` for one party (``identity`` None = the aggregator), with its
    pinned round policy (:func:`fedrx.protocol.context.pin` of ``federation``; ``policy``:
    its keyword arguments ``pinned``, ``rounds``, ``min_round_size``, ``max_examples``; a
    protection whose config has a ``max_count`` (``mask``, ``ckks``) pins ``max_examples`` =
    that, unless given)."""
    proto = _make(name, federation, identity, dict(params or {}))
    if federation is not None:
        kw = {"max_examples": getattr(getattr(proto, "config", None), "max_count", None)}
        proto.pinned = pin(federation, **(kw | dict(policy or {})))
    return proto


def _make(name: str, federation: Federation | None, identity: Identity | None,
          params: dict[str, Any]) -> Protection:
    if name == "none":
        if params:
            raise ConfigError(f"protection 'none' takes no parameters (got {sorted(params)})")
        return NoProtection()
    if name == "mask":
        import dataclasses

        from fedrx.protocol.protections.mask import MaskConfig, MaskProtection

        known = {f.name for f in dataclasses.fields(MaskConfig)}
        bad = sorted(set(params) - known)
        if bad:
            raise ConfigError(f"unknown mask parameter(s) {', '.join(bad)} "
                              f"(known: {', '.join(sorted(known))})")
        if federation is None:
            raise ConfigError("protection 'mask' needs the federation's pinned identities")
        return MaskProtection(identity, federation, MaskConfig(**params))
    if name == "ckks":
        from fedrx.protocol.protections.ckks import make_ckks_protection

        return make_ckks_protection(federation=federation, identity=identity, params=params)
    if name == "ckks-threshold":
        from fedrx.protocol.protections.ckks_threshold import make_threshold_protection

        return make_threshold_protection(federation=federation, identity=identity,
                                         params=params)
    raise ConfigError(f"unknown protection {name!r} (expected one of: {', '.join(PROTECTIONS)})")


def make_server_protection(name: str, federation: Federation, params: Mapping[str, Any],
                           n_hospitals: int, vector_length: int,
                           policy: Mapping[str, Any] | None = None) -> Protection:
    """The aggregator's protection, checked for ``n_hospitals`` and ``vector_length``
    (model parameters + 1) before any round starts."""
    protection = make_protection(name, federation=federation, params=params, policy=policy)
    protection.validate(n_hospitals, vector_length)
    return protection


def make_party(hospital: str, task: FederatedTask, data: Any, *, protection: str,
               federation: Federation, identity: Identity, params: Mapping[str, Any],
               client_optimizer: ClientOptimizer, seed: int, dp: Any = None,
               policy: Mapping[str, Any] | None = None) -> HospitalParty:
    """One hospital's party: its own protection instance (holding its private identity and
    its pinned round policy, see :func:`make_protection`), the task, its private data and
    its DP state (None: no DP)."""
    proto = make_protection(protection, federation=federation, identity=identity,
                            params=params, policy=policy)
    return HospitalParty(hospital, task, data, proto, client_optimizer, seed=seed, dp=dp)
