"""What a privacy budget report promises: the privacy unit, the mechanism and its trust
assumption, and what leaves a hospital OUTSIDE differential privacy.

:data:`SENT_BY_HOSPITAL` (everything a hospital sends and what it reveals, threat_model.md
§5.2) and :data:`OUTSIDE_DP` (what DP does not cover, §5, plus the hospital-level and
metadata leaks of §4.2 and §10) are the one copy of those lists in fedrx code;
``tests/test_report_content.py`` checks both against the threat model, row by row. Edit
them together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

THREAT_MODEL_SECTION = "threat_model.md §5 \"What DP does not cover\" (also §4.2 and §10)"
SENT_SECTION = "threat_model.md §5.2 \"Everything a hospital sends, and what it reveals\""
NEIGHBOURING = ("add or remove all visits of one patient at one hospital "
                "(add-or-remove-one-patient neighbouring)")


@dataclass(frozen=True)
class OutsideDp:
    """One thing that leaves (or is learnt about) a hospital without being covered by its
    (epsilon, delta). ``doc_row`` is the exact text of the threat-model row or heading it
    comes from (checked against threat_model.md by a test)."""

    what: str
    consequence: str
    doc_row: str


OUTSIDE_DP: tuple[OutsideDp, ...] = (
    OutsideDp("Hospital-level information (case mix, prescribing patterns, formulary)",
              "patient-level DP does not protect it once the aggregate or the model is "
              "released; masking or CKKS hide the individual delta, not the sum",
              "Leakage through the aggregate and the released model"),
    OutsideDp("The same person at several hospitals",
              "counted as separate patients: their total loss is up to the sum of those "
              "hospitals' epsilon", "The same person at several hospitals"),
    OutsideDp("Hyperparameter tuning on private data",
              "repeated runs and picking the best one leak beyond the reported epsilon "
              "(every run on the same data should be charged to the same budget)",
              "Hyperparameter tuning on private data"),
    OutsideDp("A vocabulary built from the data (not the pinned public one)",
              "reveals which codes exist at a hospital; a rare code can identify a patient",
              "Vocabulary / code lists built from data"),
    OutsideDp("Data-derived graphs (e.g. a co-occurrence graph from patient records)",
              "computed without noise: outside epsilon", "Data-derived graphs"),
    OutsideDp("Evaluation metrics, losses and dataset sizes",
              "each round's metric sums on held-out patients are not noised; the sampling "
              "rate q reveals roughly how many patients a hospital has",
              "Evaluation metrics, losses, dataset sizes"),
    OutsideDp("Metadata: participation, dropouts, timing, message sizes, round count",
              "visible to the aggregator and the network, not noised", "Metadata"),
    OutsideDp("Floating-point noise",
              "mitigated (CSPRNG noise, rounding to a grid), not formally closed",
              "Floating-point noise"),
    OutsideDp("A compromised hospital host", "raw data exposed: out of scope",
              "Local node compromise"),
)

@dataclass(frozen=True)
class Sent:
    """One message or record a hospital sends: when, and what it reveals outside epsilon
    unless said. ``doc_row`` is how the row of threat_model.md §5.2 starts."""

    what: str
    when: str
    reveals: str
    doc_row: str


SENT_BY_HOSPITAL: tuple[Sent, ...] = (
    Sent("TrainAck (status, refusal reason, ledger head hash)", "every round",
         "whether it trained or refused for its budget (so roughly how much budget is "
         "left); the head hash commits to its ledger and reveals nothing else", "TrainAck"),
    Sent("Local DP: its protected weighted delta and visit count", "every round",
         "under mask or ckks only the SUM over contributors reaches the aggregator: the "
         "DP-noised deltas (inside epsilon) and the contributors' total number of training "
         "visits, exactly; under none each hospital's own", "Local DP: protected"),
    Sent("Local DP: the sampling rate q = B / N_h in the ledger", "every signed entry",
         "N_h, its number of training patients, exactly", "Local DP: `q = B / N_h`"),
    Sent("Distributed DP: its noise share of the federation sum", "every round",
         "only the noisy federation sum (inside epsilon) and the number of survivors; q is "
         "the federation's, so the federation's total training patients, not N_h",
         "Distributed DP: share"),
    Sent("Mask protocol messages (keys, encrypted shares, masked input, signatures)",
         "every mask round", "nothing about the data beyond the sum; who dropped when",
         "Mask protocol messages"),
    Sent("EvalReport: metric sums on its test and validation patients",
         "every evaluated round", "exact counts of held-out patients and visits and "
         "their aggregate metrics, not noised: outside the training patients' epsilon, NOT "
         "private for the held-out patients", "EvalReport: additive metric sums"),
    Sent("EvalReport personal (fine-tuned head, last round)", "if personalisation is asked",
         "depends on the training patients unless made DP", "EvalReport `personal`"),
    Sent("Timing, message sizes, connection metadata", "always",
         "training time grows with the sampled batch; sizes are fixed by the model",
         "Timing, message sizes"),
)

#: Ledger entry keys every report shows in its own columns (the rest of an entry's
#: mechanism-specific fields are rendered generically, see :func:`mechanism_extras`).
_SHOWN = frozenset({
    "format", "seq", "round", "hospital", "privacy_unit", "status", "sample_rate",
    "noise_multiplier", "max_grad_norm", "steps", "delta", "epsilon", "budget_epsilon",
    "accountant", "library_versions", "model_hash", "prev_hash", "entry_hash", "signature",
    "mechanism", "survivors", "protection", "carried", "distributed", "mechanism_source",
})


#: signed keys holding a mechanism's own description (``distributed``: distributed DP's
#: share sizing, :meth:`fedrx.dp.distributed.sizing.ShareSizing.describe`)
_MECH_KEYS = ("mechanism", "distributed")


def _objects(entry: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return [(k, entry[k]) for k in _MECH_KEYS if isinstance(entry.get(k), Mapping)]


def mechanism_name(entry: Mapping[str, Any]) -> str:
    """``entry["mechanism"]`` when the ledger records one (e.g. ``"distributed"``), or the
    name inside a ``mechanism`` / ``distributed`` object, else ``"local"``: DP-SGD at the
    hospital with all of its noise added locally."""
    m = entry.get("mechanism")
    if isinstance(m, str) and m:
        return m
    for key, obj in _objects(entry):
        for name in ("name", "mechanism", "kind"):
            if isinstance(obj.get(name), str) and obj[name]:
                return str(obj[name])
        return key
    return "local"


def field(entry: Mapping[str, Any], key: str) -> Any:
    """``entry[key]``, else the same key inside a mechanism object (None if neither)."""
    if key in entry:
        return entry[key]
    for _, obj in _objects(entry):
        if key in obj:
            return obj[key]
    return None


def mechanism_extras(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Every field of an entry that the fixed columns do not show (a distributed-DP entry's
    ``shares``, ``k``, ...; a mechanism object's own fields as ``<object>.<key>``), sorted
    by key. Values are kept as they are in the signed entry."""
    out: dict[str, Any] = {}
    for key, obj in _objects(entry):
        out.update({f"{key}.{k}": v for k, v in obj.items()
                    if k not in ("name", "mechanism", "kind", "survivors")})
    if isinstance(entry.get("mechanism_source"), str):
        out["mechanism from"] = entry["mechanism_source"]
    out.update({k: v for k, v in entry.items() if k not in _SHOWN})
    return dict(sorted(out.items()))


def survivors_of(entry: Mapping[str, Any]) -> list[str] | int | None:
    """The survivors an entry records (a list of hospital ids or a count), else None."""
    s = field(entry, "survivors")
    if isinstance(s, bool):
        return None
    if isinstance(s, int):
        return s
    if isinstance(s, Sequence) and not isinstance(s, str):
        return [str(x) for x in s]
    return None


def trust_assumption(entries: Sequence[Mapping[str, Any]]) -> str:
    """One sentence stating whose honesty the recorded guarantee rests on."""
    mechs = sorted({mechanism_name(e) for e in entries if e.get("status") == "trained"})
    parts = []
    if "local" in mechs or not mechs:
        parts.append("local DP: each hospital adds all of its noise before its update "
                     "leaves it, so the guarantee holds even if the aggregator and every "
                     "other hospital collude (it rests only on the hospital's own node)")
    for m in mechs:
        if m == "local":
            continue
        mine = [e for e in entries if mechanism_name(e) == m]
        ks = sorted({str(field(e, "k")) for e in mine if field(e, "k") is not None})
        floor = sorted({str(field(e, "min_survivors")) for e in mine
                        if field(e, "min_survivors") is not None})
        surv = [survivors_of(e) for e in mine]
        counts = sorted({len(s) if isinstance(s, list) else s for s in surv
                         if s is not None})
        txt = f"{m} DP: the noise is split among hospitals"
        if ks:
            txt += (f"; it assumes at most k = {', '.join(ks)} hospitals collude with the "
                    "aggregator or drop out (the rest supply the full noise)")
        if floor:
            txt += (f"; a round's sum is released only with at least {', '.join(floor)} "
                    "survivors")
        if counts:
            txt += f"; survivors seen per round: {', '.join(str(c) for c in counts)}"
        parts.append(txt)
    return "; ".join(parts) + "."
