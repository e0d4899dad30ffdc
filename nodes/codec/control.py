"""Wire specs of the round's control messages (:mod:`fedrx.protocol.messages`): train and
evaluate requests and their replies, with the two rules only they need (round parameters as
JSON text, metric sums as a map of numbers)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedrx.medrx.metrics import MetricSums
from fedrx.nodes.codec.fields import (
    ROUND,
    Array,
    Bytes,
    CodecError,
    Flag,
    Id,
    Ids,
    Int,
    Limits,
    OversizeError,
    Rule,
    Text,
    check_count,
    check_id,
    message,
)
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb
from fedrx.protocol.messages import EvalReport, EvalRequest, TrainAck, TrainRequest

MAX_PARAMS_CHARS = 65536
MAX_JSON_DEPTH = 8
MAX_METRIC_GROUPS = 4
MAX_METRICS = 64


def check_plain_json(v: Any, depth: int = 0) -> None:
    """Raise CodecError unless ``v`` is None/bool/int/str/finite float, or a list / a
    str-keyed dict of such values nested at most :data:`MAX_JSON_DEPTH` deep."""
    if depth > MAX_JSON_DEPTH:
        raise CodecError("round params nested too deeply")
    if v is None or isinstance(v, bool | int | str):
        return
    if isinstance(v, float):
        if not math.isfinite(v):
            raise CodecError("round params: non-finite number")
        return
    if isinstance(v, list):
        for x in v:
            check_plain_json(x, depth + 1)
        return
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise CodecError("round params: non-string key")
            check_plain_json(x, depth + 1)
        return
    raise CodecError(f"round params must be plain JSON values, not {type(v).__name__}")


@dataclass(frozen=True)
class Json(Rule):
    """A dict of plain JSON values as compact sorted JSON text (bytes values travel as
    ASCII text or hex); decoded text must be a JSON object of plain values."""

    pb: str | None = None

    def encode(self, value: Any) -> str:
        d = dict(value)
        for k, v in list(d.items()):
            if isinstance(v, bytes):
                d[k] = v.decode("ascii") if v.isascii() else v.hex()
        check_plain_json(d)
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    def decode(self, msg: Any, name: str, lim: Limits) -> dict[str, Any]:
        text = getattr(msg, name)
        if len(text) > MAX_PARAMS_CHARS:
            raise OversizeError(f"{name} too long")
        try:
            d = json.loads(text or "{}")
        except ValueError:
            raise CodecError(f"{name} is not JSON") from None
        if not isinstance(d, dict):
            raise CodecError(f"{name} must be a JSON object")
        check_plain_json(d)
        return d


METRIC_GROUPS = ("global", "val", "personal")
"""An EvalReport's groups: the global model on test patients (required), on validation
patients, the personalised model on test patients."""
COUNT_METRICS = tuple(f.name for f in dataclasses.fields(MetricSums)
                      if f.type in (int, "int"))
"""Metric sums that are counts: integers >= 0."""
MEAN_METRICS = tuple(f.name for f in dataclasses.fields(MetricSums)
                     if f.name not in COUNT_METRICS)
"""Metric sums that add per-patient means in [0, 1]: numbers in [0, patients]."""
MAX_COUNT = 2**53
"""Largest count (exact in a float64, so pooled sums stay exact)."""


def check_group(kind: str, d: dict[str, float | int]) -> None:
    """One group of metric sums as the task pools them (MetricSums fields only): counts
    are integers in [0, 2**53], means numbers in [0, patients], ``ddi_hits <= ddi_pairs``
    and, when there are patients, at least one visit each. Raises CodecError."""
    for k, v in d.items():
        if k in COUNT_METRICS:
            if not isinstance(v, int) or not 0 <= v <= MAX_COUNT:
                raise CodecError(f"metric {kind}.{k} must be an integer count")
        elif k not in MEAN_METRICS:
            raise CodecError(f"unknown metric {k[:32]!r} in group {kind!r}")
        elif not 0 <= v <= d.get("patients", 0) * (1 + 1e-9):
            raise CodecError(f"metric {kind}.{k} out of range [0, patients]")
    if d.get("ddi_hits", 0) > d.get("ddi_pairs", 0):
        raise CodecError(f"metric {kind}.ddi_hits exceeds ddi_pairs")


def check_poolable(sums: dict[str, dict[str, float | int]]) -> None:
    """What the aggregator divides by is non-zero: a group with patients reports at least
    one visit per patient (pooling computes meds per visit). Checked by the receiving
    :class:`~fedrx.nodes.wire.Inbox`, not by :func:`Sums.decode`, so that a partial group
    (the golden wire sample has one) still decodes. Raises CodecError."""
    for kind, d in sums.items():
        if d.get("patients", 0) and d.get("visits", 0) < d["patients"]:
            raise CodecError(f"metric {kind}.visits below patients")


@dataclass(frozen=True)
class Sums(Rule):
    """``{group: {metric: int | float}}`` as ``map<string, MetricSums>``: the groups of
    :data:`METRIC_GROUPS`, ``global`` required, each at most :data:`MAX_METRICS` finite
    numbers named as the fields of :class:`~fedrx.medrx.metrics.MetricSums` and within
    their ranges (:func:`check_group`)."""

    def encode(self, value: Any) -> dict[str, pb.MetricSums]:
        out = {}
        for kind, values in value.items():
            m = pb.MetricSums()
            for k, v in values.items():
                if isinstance(v, bool) or not isinstance(v, int | float | np.integer
                                                         | np.floating):
                    raise CodecError(f"metric {k!r} is not a number")
                if isinstance(v, int | np.integer):
                    m.values[k].integer = int(v)
                else:
                    m.values[k].real = float(v)
            out[kind] = m
        return out

    def decode(self, msg: Any, name: str, lim: Limits) -> dict[str, dict[str, float | int]]:
        sums = getattr(msg, name)
        if len(sums) > MAX_METRIC_GROUPS:
            raise CodecError("too many metric groups")
        out: dict[str, dict[str, float | int]] = {}
        for kind, m in sums.items():
            check_id(kind, "metric group")
            if kind not in METRIC_GROUPS:
                raise CodecError(f"unknown metric group {kind[:32]!r}")
            check_count(m.values, MAX_METRICS, "metric sums")
            d: dict[str, float | int] = {}
            for k, num in m.values.items():
                check_id(k, "metric name")
                which = num.WhichOneof("value")
                if which == "integer":
                    d[k] = int(num.integer)
                elif which == "real" and math.isfinite(num.real):
                    d[k] = float(num.real)
                else:
                    raise CodecError(f"metric {k[:32]!r} is missing or not finite")
            check_group(kind, d)
            out[kind] = d
        if "global" not in out:
            raise CodecError("evaluation report without its global group")
        return out


def _train_check(r: TrainRequest, lim: Limits) -> None:
    if r.vector_length != r.weights.size + 1:
        raise CodecError(f"vector_length {r.vector_length} != {r.weights.size} weights + 1")


message(TrainRequest, pb.TrainRequest, _train_check,
        session_id=Bytes(exact=32), round=ROUND, participants=Ids(unique=True),
        weights=Array("<f4"), model_hash=Id(), protection=Id(), vector_length=Int(),
        params=Json(pb="params_json"))
message(TrainAck, pb.TrainAck, round=ROUND, hospital=Id(), status=Id(), reason=Text(1000),
        ledger_head=Text(256))
message(EvalRequest, pb.EvalRequest, round=ROUND, weights=Array("<f4"), model_hash=Id(),
        part=Id(), personalize=Flag())
message(EvalReport, pb.EvalReport, round=ROUND, hospital=Id(), sums=Sums())

ENVELOPE_FIELDS = {TrainRequest: "train_request", TrainAck: "train_ack",
                   EvalRequest: "eval_request", EvalReport: "eval_report"}
