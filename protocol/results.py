"""The results of a federation: model selection, the results document and its summary.

One format for ``fedrx simulate`` and ``fedrx aggregator serve`` (``fedrx-simulation/1``):
the runner (:mod:`fedrx.protocol.runner`) fills it from its round records; the task side
contributes only a description of the data (``describe``: dataset, hospitals, vocabulary,
parameters) and its metric pooling. Files are written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedrx.atomic import atomic_write_npy, atomic_write_text
from fedrx.canonical import json_default

SELECT_METRIC = "jaccard"
RESULTS_FORMAT = "fedrx-simulation/1"

Pool = Callable[[list[dict]], dict[str, float]]


def select_round(rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The round record whose global model has the highest pooled VALIDATION Jaccard (the
    earliest on ties), or None if no round reported validation metrics.

    Model selection on the hospitals' validation patients, never on their test patients:
    the test metrics of the selected round remain an unbiased estimate. (Federated training
    on small sites overfits after a few rounds; the last round is not the best one.)
    """
    best: dict[str, Any] | None = None
    for r in rounds:
        v = (r.get("val_metrics") or {}).get(SELECT_METRIC)
        if v is None:
            continue
        if best is None or v > best["val_metrics"][SELECT_METRIC]:
            best = r
    return best


def selection_summary(rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``results.json``'s ``selected`` entry (see :func:`select_round`)."""
    best = select_round(rounds)
    if best is None:
        return None
    return {"round": best["round"], "criterion": f"pooled validation {SELECT_METRIC}",
            "val": best["val_metrics"], "global": best["metrics"],
            "model_hash": best["model_hash"], "file": "selected_model.npy"}


def results_document(config: dict[str, Any], describe: dict[str, Any],
                     rounds: list[dict[str, Any]], seconds: float,
                     pool: Pool) -> dict[str, Any]:
    """The ``fedrx-simulation/1`` results document.

    ``config``: the task settings (as a dict); ``describe``: ``dataset``, ``hospitals``
    (per-hospital counts), ``vocabulary``, ``parameters`` from the task side; ``pool``:
    the task's metric pooling (hospitals' metric sums -> metrics), also used per hospital.
    """
    final = rounds[-1] if rounds else {"metrics": {}, "hospital_metrics": {}, "model_hash": ""}
    per_hospital: dict[str, Any] = {}
    for h, sums in final["hospital_metrics"].items():
        entry = {"global": pool([{"global": sums["global"]}])}
        if "personal" in sums:
            entry["personalized"] = pool([{"global": sums["personal"]}])
        per_hospital[h] = entry
    return {
        "format": RESULTS_FORMAT,
        "config": config,
        **describe,
        "rounds": rounds,
        "final": {"global": final.get("metrics", {}), "per_hospital": per_hospital,
                  "model_hash": final.get("model_hash", "")},
        "selected": selection_summary(rounds),
        "seconds": seconds,
    }


def write_results(out: Path, doc: dict[str, Any], weights: np.ndarray,
                  selected: np.ndarray | None, metric_names: Sequence[str]) -> None:
    """``OUT/results.json``, ``OUT/summary.md`` (when any round ran), ``OUT/global_model.npy``
    (the last model) and ``OUT/selected_model.npy`` (the selected one), each atomic."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json",
                      json.dumps(doc, indent=1, sort_keys=True, default=json_default) + "\n")
    if doc["rounds"]:
        atomic_write_text(out / "summary.md", summary_markdown(doc, metric_names))
    atomic_write_npy(out / "global_model.npy", weights)
    if selected is not None:
        atomic_write_npy(out / "selected_model.npy", selected)


def _row(m: dict[str, float], keys: Sequence[str]) -> str:
    return " | ".join(f"{m[k]:.4f}" if k in m else "-" for k in keys)


def summary_markdown(doc: dict[str, Any], keys: Sequence[str]) -> str:
    """A Markdown summary of a results document; ``keys``: the metric columns."""
    cfg = doc["config"]
    lines = [
        f"# fedrx simulation: {doc['dataset']}",
        "",
        f"protection **{cfg['protection']}**, {len(doc['hospitals'])} hospitals, "
        f"{cfg['rounds']} rounds, seed {cfg['seed']}, {doc['parameters']} parameters, "
        f"{doc['seconds']:.1f} s",
        "",
        "## Rounds (global model, pooled test patients; validation Jaccard for selection)",
        "",
        "| round | status | contributors | dropped | " + " | ".join(keys)
        + " | val jaccard | s |",
        "|---" * (len(keys) + 6) + "|",
    ]
    for r in doc["rounds"]:
        dropped = ", ".join(f"{h}@{why.split(':')[0]}" for h, why in r["dropped"].items())
        status = r["status"] + (f" ({r['reason']})" if r["reason"] else "")
        vj = (r.get("val_metrics") or {}).get(SELECT_METRIC)
        lines.append(f"| {r['round']} | {status} | {len(r['contributors'])} | "
                     f"{dropped or '-'} | {_row(r['metrics'], keys)} | "
                     f"{'-' if vj is None else f'{vj:.4f}'} | {r['seconds']:.1f} |")
    sel = doc.get("selected")
    if sel:
        final_j = doc["final"]["global"].get(SELECT_METRIC)
        lines += ["", f"**Selected model** (highest pooled validation {SELECT_METRIC}; "
                  f"`selected_model.npy`): round {sel['round']}, validation "
                  f"{sel['val'][SELECT_METRIC]:.4f}, test "
                  + (f"{sel['global'][SELECT_METRIC]:.4f}" if SELECT_METRIC in sel["global"]
                     else "-")
                  + (f" (final round: test {final_j:.4f})" if final_j is not None else "")
                  + "."]
    lines += ["", "## Final model per hospital (own test patients)", "",
              "| hospital | model | " + " | ".join(keys) + " |",
              "|---" * (len(keys) + 2) + "|"]
    for h, entry in doc["final"]["per_hospital"].items():
        for kind, m in entry.items():
            if m:
                lines.append(f"| {h} | {kind} | {_row(m, keys)} |")
    if doc.get("dp"):
        lines += ["", "## Differential privacy (patient level, per hospital)", "",
                  "| hospital | epsilon spent | budget | delta | noise multiplier | "
                  "sample rate | steps/round | clip C |", "|---" * 8 + "|"]
        for h, d in doc["dp"].items():
            lines.append(f"| {h} | {d['epsilon']:.3f} | {d['budget_epsilon']:g} | "
                         f"{d['delta']:.1e} | {d['noise_multiplier']:.3f} | "
                         f"{d['sample_rate']:.3f} | {d['steps_per_round']} | "
                         f"{d['max_grad_norm']:g} |")
        lines += ["", "Ledgers: `ledger/<hospital>.jsonl`; verify with `fedrx audit DIR`."]
    if doc.get("stopped"):
        lines += ["", f"**{doc['stopped']}**"]
    if "centralized" in doc:
        lines += ["", "## Centralized training on the same split", "",
                  "| method | " + " | ".join(keys) + " |",
                  "|---" * (len(keys) + 1) + "|"]
        for name, m in doc["centralized"].items():
            lines.append(f"| {name} | {_row(m, keys)} |")
    return "\n".join(lines) + "\n"
