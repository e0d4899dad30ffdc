"""The federation's task specification (``task.json``, ``fedrx-task/1``), agreed before
training and pinned in ``federation.json``.

It holds everything every site must agree on and nothing about any hospital's patients:
task name and version, the feature encoding, the vocabulary, the model (kind, hidden size),
the initial-weights seed, the shared training and protection settings (:data:`SHARED`) and
the bounds every hospital's own DP policy must stay within (``dp_bounds``). Its SHA-256
(of its canonical JSON) is pinned by ``fedrx certs init --task task.json``; the aggregator
takes the task ONLY from there (it has no data), and every hospital node checks its own
copy, if it has one, against the pinned one before its first round, refusing with one line
that names the first difference.

The default vocabulary is the public one (:mod:`fedrx.medrx.public_vocab`, encoding
``public-categories/1``): it is fixed by the code systems, so it reveals nothing about any
hospital. A vocabulary file (``fedrx-vocab/1``, encoding ``exact-codes/1``) may be given
instead, e.g. one agreed earlier; it is pinned the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrx.atomic import atomic_write_text
from fedrx.canonical import canonical_json
from fedrx.errors import ConfigError

FORMAT = "fedrx-task/1"
TASK_NAME = "medrx-atc3"
TASK_VERSION = 1
PUBLIC, EXACT = "public-categories/1", "exact-codes/1"
SHARED = ("rounds", "protection", "seed", "model", "hidden", "client_optimizer", "lr",
          "local_epochs", "batch_size", "server_optimizer", "server_lr", "min_visits",
          "clip_norm", "threshold", "rounding_seed", "personalize", "on_budget_exhausted")
"""Task settings every site shares (fields of :class:`~fedrx.nodes.simulate.SimulationConfig`)."""
ROUND_POLICY = ("min_round_size", "max_corrupt")
"""Optional shared settings of the round policy every hospital pins (absent = the default
rule; written into the spec only when set, so older specs keep their hash):
``min_round_size`` (fewest participants a hospital accepts in a round, >= 2) and
``max_corrupt`` (n_C of ``mask``: hospitals assumed to collude with the aggregator; None =
floor((N-1)/3) of the FEDERATION's share-holder group). See fedrx.protocol.context."""
DISTRIBUTED = ("dp_mode", "dp_k", "dp_sample_rate", "dp_patients")
"""Optional shared settings of distributed DP (written only with ``dp_mode = "distributed"``,
so older specs keep their hash): the mechanism, ``dp_k`` (hospitals that may collude with the
aggregator or drop, together), the common Poisson rate ``q`` and ``dp_patients``, the
federation's total training patients ``N`` as agreed before training (it sets the public
per-hospital count entry ``max(1, round(q N / n))``, a scale of the aggregated step, and the
default delta; it names no hospital's own count). ``n`` is the pinned federation's size."""
PRIVACY = ("dp", "epsilon", "delta", "max_grad_norm", "dp_batch", "accountant", "secure_noise",
           "budget_epsilon")
"""A hospital's own DP policy (its node config's ``[privacy]`` table; within ``dp_bounds``)."""
DATA_KEYS = ("data", "hospitals", "partition", "min_patients", "mappings", "drop",
             "centralized", "out", "vocabulary")
"""Simulation settings that name or shape patient data: never in a deployment's task."""


@dataclass(frozen=True)
class TaskSpec:
    """A parsed ``task.json``. ``settings``: the :data:`SHARED` values; ``vocabulary``: the
    three code lists; ``dp_bounds``: ``max_epsilon`` (None = no bound)."""

    settings: Mapping[str, Any]
    encoding: str
    vocabulary: Mapping[str, tuple[str, ...]]
    dp_bounds: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "task": TASK_NAME, "version": TASK_VERSION,
                "settings": dict(self.settings), "encoding": self.encoding,
                "vocabulary": {k: list(v) for k, v in self.vocabulary.items()},
                "dp_bounds": dict(self.dp_bounds)}

    @property
    def sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.to_json())).hexdigest()

    def save(self, path: Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_json(), indent=1) + "\n")

    def vocab(self) -> Any:
        """The :class:`~fedrx.medrx.vocab.Vocabulary`."""
        from fedrx.medrx.vocab import Vocabulary

        return Vocabulary(self.vocabulary["diagnoses"], self.vocabulary["procedures"],
                          self.vocabulary["labels"])

    def round_policy(self) -> dict[str, int]:
        """The pinned :data:`ROUND_POLICY` settings that are set."""
        return {k: int(self.settings[k]) for k in ROUND_POLICY
                if self.settings.get(k) is not None}

    def policy(self, deployment_id: str) -> dict[str, Any]:
        """Keyword arguments of :func:`fedrx.protocol.context.pin` for a party of the
        federation pinned with id ``deployment_id`` (hex SHA-256 of its file)."""
        return {"pinned": deployment_id, "rounds": int(self.settings["rounds"]),
                "min_round_size": self.round_policy().get("min_round_size")}

    def distributed(self) -> dict[str, Any] | None:
        """The pinned :data:`DISTRIBUTED` settings, or None when the task does not pin
        distributed DP."""
        if self.settings.get("dp_mode") != "distributed":
            return None
        return {k: self.settings[k] for k in DISTRIBUTED}

    def protection_extra(self) -> dict[str, Any]:
        """Protection parameters pinned here beyond ``protection_params`` (mask:
        ``max_corrupt``)."""
        pol = self.round_policy()
        if self.settings.get("protection") == "mask" and "max_corrupt" in pol:
            return {"max_corrupt": pol["max_corrupt"]}
        return {}

    def task_config(self, privacy: Mapping[str, Any] | None = None, **extra: Any) -> Any:
        """A :class:`~fedrx.nodes.simulate.SimulationConfig` with these settings, a
        hospital's ``privacy`` policy and ``extra`` (e.g. ``data``), validated."""
        from fedrx.nodes.simulate import SimulationConfig

        shared = {k: v for k, v in self.settings.items()
                  if k not in ROUND_POLICY and k != "dp_patients"}
        cfg = SimulationConfig(**shared, **dict(privacy or {}), **extra,
                               vocabulary="public" if self.encoding == PUBLIC else "data")
        cfg.validate()
        return cfg

    def check_policy(self, cfg: Any) -> None:
        """Refuse a hospital DP policy outside ``dp_bounds``: with ``max_epsilon`` set, DP
        must be on (DP off is an unbounded epsilon) with ``epsilon <= max_epsilon``."""
        if self.distributed() is not None and not cfg.dp:
            raise ConfigError("[privacy] dp is off, but the federation's task pins distributed "
                              "DP (task spec dp_mode): every hospital supplies a noise share; "
                              "set dp = true")
        bound = self.dp_bounds.get("max_epsilon")
        if bound is None:
            return
        if not cfg.dp:
            raise ConfigError(f"[privacy] dp is off, but the federation's task bounds every "
                              f"hospital's epsilon at max_epsilon {bound:g} (task spec): set "
                              f"dp = true and epsilon <= {bound:g}")
        if cfg.epsilon > bound:
            raise ConfigError(f"[privacy] epsilon {cfg.epsilon:g} exceeds the federation's "
                              f"bound max_epsilon {bound:g} (task spec)")

    @staticmethod
    def from_json(obj: Any, where: str) -> TaskSpec:
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ConfigError(f"{where}: not a {FORMAT} task specification")
        if obj.get("task") != TASK_NAME or obj.get("version") != TASK_VERSION:
            raise ConfigError(f"{where}: task {obj.get('task')!r} version "
                              f"{obj.get('version')!r}; this fedrx runs {TASK_NAME} "
                              f"version {TASK_VERSION}")
        settings, vocab = obj.get("settings"), obj.get("vocabulary")
        if not isinstance(settings, dict) or not set(SHARED) <= set(settings) <= \
                set(SHARED) | set(ROUND_POLICY) | set(DISTRIBUTED):
            raise ConfigError(f"{where}: settings must hold exactly {', '.join(SHARED)} "
                              f"(and optionally {', '.join(ROUND_POLICY)}; "
                              f"{', '.join(DISTRIBUTED)})")
        _check_distributed(settings, where)
        for k, low in (("min_round_size", 2), ("max_corrupt", 0)):
            v = settings.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
                raise ConfigError(f"{where}: settings {k} must be an integer >= {low} "
                                  f"(or absent), got {v!r}")
        if obj.get("encoding") not in (PUBLIC, EXACT):
            raise ConfigError(f"{where}: unknown encoding {obj.get('encoding')!r}")
        if not isinstance(vocab, dict) or set(vocab) != {"diagnoses", "procedures", "labels"} \
                or not all(isinstance(v, list) and all(isinstance(c, str) for c in v)
                           for v in vocab.values()):
            raise ConfigError(f"{where}: vocabulary must hold diagnoses, procedures and "
                              "labels as lists of codes")
        bounds = obj.get("dp_bounds")
        if not isinstance(bounds, dict) or set(bounds) - {"max_epsilon"}:
            raise ConfigError(f"{where}: dp_bounds may only hold max_epsilon")
        eps = bounds.get("max_epsilon")
        if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float))
                                or not math.isfinite(eps) or eps <= 0):
            raise ConfigError(f"{where}: dp_bounds max_epsilon must be a number > 0 (or null "
                              f"for no bound), got {eps!r}")
        spec = TaskSpec(settings, obj["encoding"],
                        {k: tuple(v) for k, v in vocab.items()}, bounds)
        spec.task_config()  # the settings must be valid ones
        if not spec.vocabulary["labels"]:
            raise ConfigError(f"{where}: the vocabulary has no drug labels")
        return spec

    @staticmethod
    def load(path: Path) -> TaskSpec:
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read task spec {path}: {exc.strerror}") from None
        except ValueError:
            raise ConfigError(f"task spec {path} is not JSON") from None
        return TaskSpec.from_json(obj, str(path))


def _check_distributed(settings: Mapping[str, Any], where: str) -> None:
    """The :data:`DISTRIBUTED` settings are all present with ``dp_mode = "distributed"``
    (and absent otherwise), with valid values."""
    have = [k for k in DISTRIBUTED if k in settings]
    if not have:
        return
    if len(have) != len(DISTRIBUTED) or settings["dp_mode"] != "distributed":
        raise ConfigError(f"{where}: distributed DP pins all of {', '.join(DISTRIBUTED)} "
                          "with dp_mode 'distributed'")
    if settings.get("protection") not in ("mask", "ckks"):
        raise ConfigError(f"{where}: distributed DP needs a secure sum (protection mask or "
                          f"ckks), not {settings.get('protection')!r}")
    k, q, n = settings["dp_k"], settings["dp_sample_rate"], settings["dp_patients"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ConfigError(f"{where}: settings dp_k must be an integer >= 0, got {k!r}")
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q <= 1:
        raise ConfigError(f"{where}: settings dp_sample_rate must be in (0, 1], got {q!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(f"{where}: settings dp_patients must be an integer >= 2, got {n!r}")


def first_difference(mine: TaskSpec, pinned: TaskSpec) -> str:
    """One line naming the first field where ``mine`` differs from ``pinned`` ("" if none)."""
    a, b = mine.to_json(), pinned.to_json()
    for key in ("encoding", "settings", "vocabulary", "dp_bounds"):
        if a[key] == b[key]:
            continue
        if isinstance(a[key], dict):
            for k in sorted(set(a[key]) | set(b[key])):
                va, vb = a[key].get(k), b[key].get(k)
                if va != vb:
                    if key == "vocabulary":
                        return _code_difference(k, list(va or []), list(vb or []))
                    return f"{key} {k}: {va!r} here, {vb!r} pinned"
        return f"{key}: {a[key]!r} here, {b[key]!r} pinned"
    return ""


def _code_difference(kind: str, mine: list[str], pinned: list[str]) -> str:
    """``vocabulary KIND: N codes here, M pinned (...)`` naming the first code that only one
    side has (the vocabulary is shared with every site: naming a code reveals nothing new)."""
    here, there = set(mine), set(pinned)
    extra = [c for c in mine if c not in there]
    lack = [c for c in pinned if c not in here]
    notes = ([f"{len(extra)} not pinned, e.g. {extra[0]!r}"] if extra else []) + \
            ([f"{len(lack)} pinned missing here, e.g. {lack[0]!r}"] if lack else [])
    if not notes:
        at = next((i for i, (a, b) in enumerate(zip(mine, pinned, strict=False)) if a != b),
                  min(len(mine), len(pinned)))
        notes = [f"the same codes, another order or repeats, from position {at}"]
    return (f"vocabulary {kind}: {len(mine)} codes here, {len(pinned)} pinned "
            f"({'; '.join(notes)})")


def make_spec(settings: Mapping[str, Any], *, vocabulary: Any = None,
              mappings: Path | None = None, max_epsilon: float | None = None) -> TaskSpec:
    """A task spec from task settings (any mapping or object with the :data:`SHARED`
    fields). ``vocabulary``: None = the public one (labels: the ATC-3 classes of the shipped
    lexicon and of the NDC -> ATC table in ``mappings``, if given), else a
    :class:`~fedrx.medrx.vocab.Vocabulary` used as is (exact codes)."""
    from fedrx.medrx.public_vocab import lexicon_atc3, mapping_atc3, public_vocabulary

    src = settings if isinstance(settings, Mapping) else dataclasses.asdict(settings)
    missing = [k for k in SHARED if k not in src]
    if missing:
        raise ConfigError(f"task settings lack {', '.join(missing)}")
    if vocabulary is None:
        labels = lexicon_atc3() | (mapping_atc3(mappings) if mappings else set())
        vocabulary, encoding = public_vocabulary(labels), PUBLIC
    else:
        encoding = EXACT
    pol = {k: src[k] for k in ROUND_POLICY if src.get(k) is not None}
    if src.get("dp_mode") == "distributed":  # else absent: older specs keep their hash
        lack = [k for k in DISTRIBUTED if src.get(k) is None]
        if lack:
            raise ConfigError(f"distributed DP: the task must pin {', '.join(lack)}")
        pol |= {k: src[k] for k in DISTRIBUTED}
    spec = TaskSpec({k: src[k] for k in SHARED} | pol, encoding,
                    {"diagnoses": tuple(vocabulary.diagnoses),
                     "procedures": tuple(vocabulary.procedures),
                     "labels": tuple(vocabulary.labels)},
                    {"max_epsilon": max_epsilon})
    return TaskSpec.from_json(spec.to_json(), "task spec")
