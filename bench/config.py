"""``fedrx bench`` settings: presets, :class:`BenchConfig` and the CLI value parsers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedrx.errors import ConfigError

UTILITY = ("jaccard", "prauc", "f1", "ddi_rate")
DP_VALUES = {"on": True, "off": False}
BACKENDS = ("inprocess", "ray")

PRESETS: dict[str, dict[str, Any]] = {
    # CI: seconds. Tiny model, one round, micro sizes only.
    "ci": {"rounds": 1, "hidden": 8, "hospitals": 2, "micro_d": 10_000,
           "scale_ns": (3, 5), "scale_small_d": 1_000, "scale_ds": (1_000, 10_000),
           "scale_n": 3, "complete_max_n": 100, "ckks_memory_ns": (3,), "sweep": ()},
    # --quick: under 3 minutes on 2 cores.
    "quick": {"rounds": 2, "hidden": 16, "hospitals": 3, "micro_d": 100_000,
              "scale_ns": (10, 50), "scale_small_d": 1_000, "scale_ds": (10_000, 100_000),
              "scale_n": 10, "complete_max_n": 100, "ckks_memory_ns": (10,), "sweep": ()},
    # default: the recorded full run.
    "full": {"rounds": 10, "hidden": 128, "hospitals": 3, "micro_d": 1_000_000,
             "scale_ns": (10, 100, 500), "scale_small_d": 10_000,
             "scale_ds": (10_000, 100_000, 1_000_000), "scale_n": 10, "complete_max_n": 100,
             "ckks_memory_ns": (10, 50), "sweep": (1.0, 3.0, 8.0)},
}


def default_protections() -> tuple[str, ...]:
    """Every protection level; ``ckks-threshold`` only where its OpenFHE engine is available
    (in-process, or the CPython 3.10 worker of ``make he-env``)."""
    from fedrx.secagg.thckks.engine import find_he_python, openfhe_in_process

    he = openfhe_in_process() or Path(find_he_python() or "/nonexistent").is_file()
    return ("none", "mask", "ckks", *(("ckks-threshold",) if he else ()))


@dataclass
class BenchConfig:
    """``fedrx bench`` settings. ``None`` fields take the preset's value."""

    protections: tuple[str, ...] = field(default_factory=lambda: default_protections())
    dp: tuple[bool, ...] = (False, True)
    data: str = "mimic3-demo"
    hospitals: int | None = None
    rounds: int | None = None
    hidden: int | None = None
    seed: int = 0
    epsilon: float = 8.0
    out: str = "runs/bench"
    preset: str = "full"
    deploy: bool = False
    micro: bool = True
    scaling: bool = True
    sweep: tuple[float, ...] | None = None
    overwrite: bool = False
    backend: str = "inprocess"
    """``inprocess`` (every arm's hospitals in this process) or ``ray`` (in Ray worker
    actors, :mod:`fedrx.nodes.ray_backend`; one Ray session for the whole run)."""
    ray_address: str = ""
    """``backend="ray"``: the cluster to join ("" = a local Ray with this machine's cores)."""
    settings: dict[str, Any] = field(default_factory=dict)

    def resolve(self) -> BenchConfig:
        """Validate and fill preset values; ConfigError (one line) on bad input."""
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}")
        p = PRESETS[self.preset]
        if not self.protections:
            raise ConfigError("--protection: give at least one of none, mask, ckks")
        from fedrx.protocol.registry import PROTECTIONS

        for prot in self.protections:
            if prot not in PROTECTIONS:
                raise ConfigError(f"--protection: unknown protection {prot!r} "
                                  f"(expected a comma-separated list of: "
                                  f"{', '.join(PROTECTIONS)})")
        if len(set(self.protections)) != len(self.protections):
            raise ConfigError("--protection: a protection is listed twice")
        if not self.dp or len(set(self.dp)) != len(self.dp):
            raise ConfigError("--dp: give off, on or off,on (each once)")
        self.hospitals = p["hospitals"] if self.hospitals is None else self.hospitals
        self.rounds = p["rounds"] if self.rounds is None else self.rounds
        self.hidden = p["hidden"] if self.hidden is None else self.hidden
        self.sweep = tuple(p["sweep"]) if self.sweep is None else tuple(self.sweep)
        if self.hospitals < 1:
            raise ConfigError(f"--hospitals must be >= 1, got {self.hospitals}")
        if "mask" in self.protections and self.hospitals < 2:
            raise ConfigError("--protection mask needs --hospitals >= 2")
        if self.rounds < 1:
            raise ConfigError(f"--rounds must be >= 1, got {self.rounds}")
        if self.hidden < 1:
            raise ConfigError(f"--hidden must be >= 1, got {self.hidden}")
        if not self.epsilon > 0 or any(not e > 0 for e in self.sweep):
            raise ConfigError("--epsilon and --epsilon-sweep values must be > 0")
        self.check_backend()
        if self.deploy and self.sweep:
            raise ConfigError("--deploy: the epsilon sweep runs in one process; pass "
                              "--epsilon-sweep none")
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not self.overwrite:
            raise ConfigError(f"--out {out} is not empty (privacy ledgers are never "
                              "overwritten): choose a new folder or pass --overwrite")
        self.settings = dict(p)
        return self

    def check_backend(self) -> None:
        """ConfigError (one line) on a bad ``backend``/``ray_address``, ``deploy`` with Ray,
        or ``backend="ray"`` where Ray is not installed."""
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend: expected inprocess or ray, got {self.backend!r}")
        if self.ray_address and self.backend != "ray":
            raise ConfigError("--ray-address needs --backend ray")
        if self.backend == "ray":
            if self.deploy:
                raise ConfigError("--deploy and --backend ray are exclusive (--deploy runs "
                                  "gRPC node processes, --backend ray Ray worker actors)")
            try:
                import ray  # noqa: F401
            except ImportError:
                raise ConfigError("--backend ray needs Ray: pip install 'fedrx[ray]'") from None

    def arms(self) -> list[tuple[str, str, bool]]:
        """(arm name, protection, dp) for every arm, DP-off arms first."""
        return [(prot + ("+dp" if dp else ""), prot, dp)
                for dp in sorted(self.dp) for prot in self.protections]


def parse_protections(text: str) -> tuple[str, ...]:
    """``--protection none,mask`` -> ``("none", "mask")`` (checked by :meth:`resolve`)."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


def parse_dp(text: str) -> tuple[bool, ...]:
    """``--dp off,on`` -> ``(False, True)``; ConfigError on anything else."""
    vals = [v.strip().lower() for v in text.split(",") if v.strip()]
    bad = [v for v in vals if v not in DP_VALUES]
    if bad or not vals:
        raise ConfigError(f"--dp: expected off, on or off,on; got {text!r}")
    return tuple(DP_VALUES[v] for v in vals)


def parse_epsilons(text: str) -> tuple[float, ...]:
    """``--epsilon-sweep 1,3,8`` -> ``(1.0, 3.0, 8.0)``; ``none``/``off``/empty -> ``()``."""
    if text.strip().lower() in ("", "none", "off"):
        return ()
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--epsilon-sweep: expected numbers like 1,3,8; got {text!r}") from None
