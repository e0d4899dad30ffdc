"""Independent recomputation of a distributed-DP ledger entry (called by ``fedrx audit``).

A distributed entry carries the signed key ``distributed`` (:meth:`ShareSizing.describe`
plus ``dim``). The audit rebuilds the share sizing from the recorded shares ``n``, ``k``,
calibrated sigma, clipping norm, dimension, share kind and scale bits, and checks that:

* the honest shares and the release floor are ``n - k``;
* the recorded share variance (discrete) or share std (Gaussian) is at least what the sizing
  needs for ``n - k`` honest shares to supply the calibrated sigma;
* the entry's charged ``noise_multiplier`` is NOT above the sigma the recorded shares give
  (a larger one would under-report epsilon): the accountant's recomputation of epsilon from
  the entry's ``(q, sigma, steps)`` then covers the noise actually guaranteed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fedrx.dp.distributed.sizing import ShareSizing
from fedrx.errors import ConfigError

_REL = 1e-9


def entry_findings(entry: Mapping[str, Any]) -> list[str]:
    """Problems of one ledger entry's ``distributed`` record ([] when consistent or absent)."""
    d = entry.get("distributed")
    if d is None:
        return []
    if not isinstance(d, Mapping) or d.get("mechanism") != "distributed":
        return ["malformed 'distributed' record"]
    try:
        sz = ShareSizing(int(d["shares"]), int(d["k"]), float(d["noise_multiplier"]),
                         float(entry["max_grad_norm"]), int(d["dim"]), str(d["share_kind"]),
                         int(d.get("scale_bits", 16)))
        charged = float(entry["noise_multiplier"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        return [f"malformed 'distributed' record ({exc})"]
    out = []
    if int(d.get("honest_shares", -1)) != sz.honest or int(d.get("min_survivors", -1)) != sz.honest:
        out.append(f"honest shares / release floor must be n - k = {sz.honest}")
    if sz.kind == "discrete":
        v = int(d.get("share_variance", 0))
        if v < sz.share_variance:
            out.append(f"share variance {v} < {sz.share_variance} needed for n - k honest "
                       "shares to supply the calibrated sigma")
        recomputed = sz.charged_noise_multiplier(max(v, 1))
    else:
        std = float(d.get("share_std", 0.0))
        if std < sz.share_std * (1 - _REL):
            out.append(f"share std {std} < {sz.share_std} needed")
        recomputed = std * math.sqrt(sz.honest) / sz.clip
    if entry.get("status") == "trained" and charged > recomputed * (1 + _REL):
        out.append(f"charged sigma {charged} exceeds the {recomputed:.6g} the recorded "
                   "shares guarantee (epsilon under-reported)")
    return out
