"""DP on the Ray backend: what stays in a :class:`~fedrx.nodes.ray_backend.HospitalWorker`
actor and what the driver sees of it.

Every hospital's DP state (its :class:`~fedrx.dp.federated.HospitalDP` or
:class:`~fedrx.dp.distributed.hospital.DistributedDP`, built by the same
:func:`fedrx.nodes.party.dp_factory` as the in-process simulation) lives in the actor that
owns the hospital, and so do its ledger's signing key (the hospital's identity) and every
noise draw. The actor writes the ledger and the public identity into the run folder
(``<run>/ledger/<h>.jsonl``, ``<run>/identities/<h>.pub.json``) and reads the driver's
budget carry files (``<run>/budget/<h>.json``) from it, exactly where the in-process run
does: the run folder must therefore be ONE filesystem path that the driver and every actor
reach (trivially on a local Ray; on a cluster, ``--ray-address``, a shared filesystem
mounted at the same path on every node). :func:`check_run_folder` refuses an actor that does
not see the federation file the driver wrote there.

The driver reads each hospital's PUBLIC privacy figures (epsilon spent so far, delta, the
``describe()`` dict of the mechanism, ``min_survivors`` for distributed DP) through a
:class:`RemoteDP` proxy, filled by one batched JSON call per actor per round
(:func:`privacy_figures` inside the actor). Nothing else of the DP state crosses: never a
noise draw, a clipped sum, a sampled batch or a ledger key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedrx.dp.pins import RUN_FEDERATION
from fedrx.errors import ConfigError
from fedrx.secagg.identity import Federation

FIGURES = ("epsilon", "delta", "mode", "describe", "min_survivors")
"""The members of one hospital's figures in :func:`privacy_figures` (and nothing else)."""


def check_run_folder(run_dir: Path, federation: Federation, where: str) -> None:
    """ConfigError (one line) unless ``run_dir/federation.json`` here holds ``federation``:
    the driver writes it before enrolling, so an actor that cannot read it (another node
    without the shared run folder) or reads another run's refuses to write ledgers."""
    path = Path(run_dir) / RUN_FEDERATION
    hint = ("with --ray-address the run folder (--out) must be on a filesystem every Ray "
            "node mounts at the same path")
    try:
        seen = Federation.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ConfigError(f"Ray worker on {where}: the run folder {run_dir} is not visible "
                          f"there (no {RUN_FEDERATION}); {hint}") from None
    except (OSError, ValueError, ConfigError) as exc:
        raise ConfigError(f"Ray worker on {where}: cannot read {path} "
                          f"({type(exc).__name__}); {hint}") from None
    if seen.to_json() != federation.to_json():
        raise ConfigError(f"Ray worker on {where}: {path} pins another federation (another "
                          f"run's folder?); {hint}")


def privacy_figures(dps: dict[str, Any]) -> str:
    """JSON ``{hospital: {epsilon, delta, mode, describe, min_survivors}}`` of the actor's
    DP states (``dps``: hospital -> HospitalDP / DistributedDP): the public figures only."""
    out = {}
    for h in sorted(dps):
        dp = dps[h]
        mode = getattr(dp, "mode", "local")
        out[h] = {"epsilon": float(dp.epsilon()), "delta": float(dp.delta), "mode": mode,
                  "describe": dp.describe(),
                  "min_survivors": int(dp.min_survivors()) if mode == "distributed"
                  else None}
    return json.dumps(out, sort_keys=True)


@dataclass
class RemoteDP:
    """The driver's read-only view of one hospital's DP state in its actor: what
    :class:`~fedrx.nodes.simulate._PrivacyRecord` and the results document read (the same
    names as HospitalDP / DistributedDP). Filled by :meth:`update`; before the first
    update the figures are those of no round."""

    hospital: str
    delta: float = 0.0
    mode: str = "local"
    _epsilon: float = 0.0
    _describe: dict[str, Any] = field(default_factory=dict)
    _min_survivors: int | None = None

    def epsilon(self) -> float:
        """Epsilon spent so far (at :attr:`delta`), as of the last refresh."""
        return self._epsilon

    def describe(self) -> dict[str, Any]:
        return dict(self._describe)

    def min_survivors(self) -> int:
        if self._min_survivors is None:
            raise ConfigError(f"hospital {self.hospital}: min_survivors is distributed DP's")
        return self._min_survivors

    def update(self, figures: Any) -> None:
        """Take one hospital's entry of :func:`privacy_figures`; ConfigError when it is not
        exactly the public figures (an actor that sends more is refused, not trusted)."""
        if not isinstance(figures, dict) or set(figures) != set(FIGURES):
            raise ConfigError(f"hospital {self.hospital}: malformed privacy figures")
        eps, delta, mode = figures["epsilon"], figures["delta"], figures["mode"]
        desc, floor = figures["describe"], figures["min_survivors"]
        ok = (isinstance(eps, int | float) and math.isfinite(eps) and eps >= 0
              and isinstance(delta, int | float) and 0 <= delta < 1
              and mode in ("local", "distributed") and isinstance(desc, dict)
              and (floor is None if mode == "local" else isinstance(floor, int)))
        if not ok:
            raise ConfigError(f"hospital {self.hospital}: malformed privacy figures")
        self._epsilon, self.delta, self.mode = float(eps), float(delta), mode
        self._describe, self._min_survivors = dict(desc), floor
