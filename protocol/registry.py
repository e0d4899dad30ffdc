"""Protection levels by name: ``none``, ``mask``, ``ckks``.

Each party (the aggregator, every hospital) builds ITS OWN protection instance: a
hospital's holds its private identity, the aggregator's holds none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedrx.errors import ConfigError
from fedrx.protocol.protection import NoProtection, Protection
from fedrx.secagg.identity import Federation, Identity

PROTECTIONS = ("none", "mask", "ckks")


def make_protection(name: str, *, federation: Federation | None = None,
                    identity: Identity | None = None,
                    params: Mapping[str, Any] | None = None) -> Protection:
    """The protection ``name`` for one party (``identity`` None = the aggregator)."""
    params = dict(params or {})
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
    raise ConfigError(f"unknown protection {name!r} (expected one of: {', '.join(PROTECTIONS)})")
