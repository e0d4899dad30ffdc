"""The content of a privacy budget report (``fedrx-budget-report/2``), built from input
folders: a run directory (``DIR/ledger/<h>.jsonl``, ``DIR/identities/<h>.pub.json``) or one
node folder per hospital.

The content is a JSON-able dict, the same for the HTML page and ``budget.json``:
``format``, ``fedrx_version``, ``inputs``, ``report_command``, ``verdict`` (``ok``,
``line``, ``lines``), ``promise`` (privacy unit, neighbouring, mechanisms and trust
assumption, accountants, deltas, budgets, ``outside_dp``, ``protection_note``),
``hospitals`` (per hospital: the format-1 summary keys, ``rounds`` with one row per ledger
entry, ``verification``), ``folder_findings``, ``verify_commands``.

Deterministic: nothing depends on the clock, the host or the order folders are listed in;
paths are shown as they were given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedrx.dp.ledger import ENTRY_KEYS, check_hospital_id, read_entries
from fedrx.dp.report_promise import (
    NEIGHBOURING,
    OUTSIDE_DP,
    SENT_BY_HOSPITAL,
    SENT_SECTION,
    THREAT_MODEL_SECTION,
    mechanism_extras,
    mechanism_name,
    survivors_of,
    trust_assumption,
)
from fedrx.dp.report_verify import (
    audit_folder,
    audited_hospitals,
    folder_findings,
    hospital_verification,
)
from fedrx.errors import LedgerError

REPORT_FORMAT = "fedrx-budget-report/2"


def fedrx_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fedrx")
    except PackageNotFoundError:
        return "unknown"


def ledger_files(folder: Path) -> dict[str, Path]:
    """``{hospital: ledger path}`` of one input folder (``ledger/`` or flat)."""
    led = folder / "ledger" if (folder / "ledger").is_dir() else folder
    return {check_hospital_id(p.name.removesuffix(".jsonl")): p
            for p in sorted(led.glob("*.jsonl")) if not p.name.startswith(".")}


def _json(p: Path) -> Any:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_context(folder: Path) -> dict[str, Any]:
    """What the run recorded OUTSIDE the signed ledger: the protection level and each
    round's contributors, from ``results.json`` (simulation) or from ``federation.json``
    (D, its ``certs/`` or up to 3 parents) and the node's verified ``receipts.jsonl``."""
    protection, source, c_source, contributors = None, None, None, {}
    res = _json(folder / "results.json")
    if isinstance(res, dict):
        protection = (res.get("config") or {}).get("protection")
        source = c_source = "results.json"
        for r in res.get("rounds") or []:
            if isinstance(r, dict) and isinstance(r.get("contributors"), list):
                contributors[r.get("round")] = [str(c) for c in r["contributors"]]
    if protection is None:
        start = folder.resolve()
        for d in [start, *list(start.parents)[:3]]:
            fed = next((x for x in (_json(d / "federation.json"),
                                    _json(d / "certs" / "federation.json")) if x), None)
            if isinstance(fed, dict):
                task = fed.get("task") if isinstance(fed.get("task"), dict) else {}
                protection = (task.get("settings") or {}).get("protection") \
                    or fed.get("protection")
                source = "federation.json"
                break
    rec_file = folder / "receipts.jsonl"
    if rec_file.is_file():
        for line in rec_file.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                r = json.loads(line)
                contributors[int(r["round"])] = [str(c) for c in r["contributors"]]
            except (ValueError, KeyError, TypeError):
                continue
        c_source = "receipts.jsonl (signed round receipts the node verified)"
    dp = res.get("dp") if isinstance(res, dict) else None
    mechs = {h: dict(v) for h, v in dp.items() if isinstance(v, dict)
             and isinstance(v.get("mechanism"), str) and v["mechanism"] != "local"} \
        if isinstance(dp, dict) else {}
    return {"protection": protection, "source": source, "contributors": contributors,
            "contributors_source": c_source, "mechanisms": mechs}


#: keys of a results.json ``dp`` record that are not the mechanism's description
_RUN_SUMMARY = ENTRY_KEYS | {"count", "planned_steps", "steps_per_round", "secure_noise",
                             "expected_batch_patients", "mechanism"}


def with_run_mechanism(hospital: str, entries: Sequence[Mapping[str, Any]],
                       ctx: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The entries as shown: a trained entry that records no mechanism of its own, in a run
    whose results.json says the hospital used another one (distributed DP before its ledger
    carried the ``distributed`` key), shows that one, marked ``mechanism_source``
    (unsigned). The verification always uses the entries as they are."""
    run = ctx.get("mechanisms", {}).get(hospital)
    out = []
    for e in entries:
        e = dict(e)
        if run and e.get("status") == "trained" and mechanism_name(e) == "local" \
                and "mechanism" not in e and "distributed" not in e:
            e["mechanism"] = {k: v for k, v in run.items() if k not in _RUN_SUMMARY}
            e["mechanism"]["name"] = run["mechanism"]
            e["mechanism_source"] = "results.json, unsigned"
        out.append(e)
    return out


def _num(v: Any) -> float | int | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def round_rows(entries: Sequence[Mapping[str, Any]], ctx: Mapping[str, Any]
               ) -> list[dict[str, Any]]:
    """One row per ledger entry: round, status, mechanism, protection, sigma, q, steps,
    survivors (the entry's own, else the run's contributors of that round), cumulative
    epsilon after the entry, its hash, and its mechanism-specific fields (``extra``)."""
    rows = []
    for e in entries:
        surv = survivors_of(e)
        surv_src = "ledger" if surv is not None else None
        if surv is None and e.get("round") in ctx["contributors"]:
            surv, surv_src = ctx["contributors"][e.get("round")], ctx["contributors_source"]
        rows.append({
            "round": e.get("round"), "status": e.get("status"),
            "mechanism": mechanism_name(e),
            "protection": e.get("protection") or ctx["protection"],
            "sigma": _num(e.get("noise_multiplier")), "q": _num(e.get("sample_rate")),
            "steps": _num(e.get("steps")), "max_grad_norm": _num(e.get("max_grad_norm")),
            "survivors": surv, "survivors_source": surv_src,
            "epsilon": _num(e.get("epsilon")), "entry_hash": e.get("entry_hash"),
            "extra": mechanism_extras(e),
        })
    return rows


def _hospital(hospital: str, entries: list[dict[str, Any]], ctx: Mapping[str, Any],
              verification: dict[str, Any], ledger: str) -> dict[str, Any]:
    last = entries[-1] if entries else {}
    budget, final = _num(last.get("budget_epsilon")), _num(last.get("epsilon"))
    entries = with_run_mechanism(hospital, entries, ctx)
    rows = round_rows(entries, ctx)
    return {
        "hospital": hospital, "ledger": ledger, "rounds": rows,
        "final_epsilon": final if final is not None else 0.0,
        "budget_epsilon": budget, "delta": _num(last.get("delta")),
        "accountant": last.get("accountant"), "privacy_unit": last.get("privacy_unit"),
        "mechanisms": sorted({r["mechanism"] for r in rows if r["status"] == "trained"}),
        "trust": trust_assumption(entries),
        "carried_runs": len(last["carried"].get("runs") or [])
        if isinstance(last.get("carried"), dict) else 0,
        "trained_rounds": sum(1 for e in entries if e.get("status") == "trained"),
        "refused_rounds": sum(1 for e in entries if e.get("status") == "refused"),
        "budget_used": (final / budget) if (budget and final is not None) else None,
        "verification": verification,
    }


def build_report(folders: Sequence[Path], *, anchors: Path | None = None,
                 federation: Path | None = None, command: str | None = None
                 ) -> dict[str, Any]:
    """Read, audit and summarise every input folder (see the module doc). Raises
    :class:`~fedrx.errors.LedgerError` when there is no ledger at all, when two folders hold
    the same hospital, or on an unreadable anchors / federation file."""
    seen: set[Path] = set()
    unique = []
    for f in map(Path, folders):  # a folder named twice is read once
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    folders = unique
    per: dict[str, tuple[Path, Path]] = {}
    for f in folders:
        for h, p in ledger_files(f).items():
            if h in per:
                raise LedgerError(f"two ledgers of hospital {h} among the input folders "
                                  f"({per[h][1]} and {p})")
            per[h] = (f, p)
    if not per:
        raise LedgerError(f"no ledgers under {', '.join(map(str, folders))} "
                          "(expected DIR/ledger/<hospital>.jsonl)")
    hospitals, extra_findings, commands = [], [], []
    for f in folders:
        held = sorted(h for h, (g, _) in per.items() if g == f)
        if not held:
            continue
        da = audit_folder(f, anchors, federation)
        commands.append(da.command)
        ctx = run_context(f)
        missing = [h for h in audited_hospitals(da) if h not in per]
        extra_findings += folder_findings(da, held + missing)
        for h in held + missing:
            try:
                entries = read_entries(per[h][1]) if h in per else []
            except LedgerError:
                entries = []  # the audit reports it as unreadable
            ver = hospital_verification(h, da, entries)
            ledger = str(per[h][1]) if h in per else "(missing)"
            hospitals.append(_hospital(h, entries, ctx, ver, ledger))
    hospitals.sort(key=lambda s: s["hospital"])
    bad = [s for s in hospitals if not s["verification"]["ok"]]
    ok = not bad and not extra_findings
    complete = ok and all(s["verification"]["complete"] for s in hospitals)
    n_find = sum(len(s["verification"]["findings"]) for s in hospitals) + len(extra_findings)
    if not ok:
        line = (f"TAMPERED OR INVALID: the audit found {n_find} problem(s) "
                + (f"in the ledgers of {', '.join(s['hospital'] for s in bad)}" if bad
                   else "in the input folders")
                + ": the numbers below are what the ledgers claim and are NOT verified")
    elif complete:
        line = (f"VERIFIED: {len(hospitals)} hospital ledger(s); pinned signatures, hash "
                "chains, signed anchors and epsilon verified independently")
    else:
        limits: dict[str, list[str]] = {}
        for s in hospitals:
            for note in s["verification"]["limits"]:
                limits.setdefault(note, []).append(s["hospital"])
        line = (f"VERIFIED WITH LIMITS: {len(hospitals)} hospital ledger(s) pass the audit; "
                + "; ".join(f"{n} ({', '.join(hs)})" for n, hs in limits.items()))
    accountants = sorted({str(s["accountant"]) for s in hospitals if s["accountant"]})
    deltas = sorted({s["delta"] for s in hospitals if s["delta"] is not None})
    budgets = sorted({s["budget_epsilon"] for s in hospitals if s["budget_epsilon"]})
    mechs = sorted({m for s in hospitals for m in s["mechanisms"]})
    protections = sorted({str(r["protection"]) for s in hospitals for r in s["rounds"]
                          if r["protection"]})
    inputs = [str(f) for f in folders]
    return {
        "format": REPORT_FORMAT, "fedrx_version": fedrx_version(), "inputs": inputs,
        "report_command": command or ("fedrx budget report " + " ".join(inputs)),
        "verdict": {"ok": ok, "complete": complete, "line": line, "findings": n_find,
                    "lines": [s["verification"]["verdict"] for s in hospitals]},
        "promise": {
            "privacy_unit": "patient", "neighbouring": NEIGHBOURING,
            "mechanisms": mechs or ["none trained"],
            "trust": sorted({s["trust"] for s in hospitals}),
            "accountants": accountants, "deltas": deltas, "budgets": budgets,
            "protections": protections,
            "protection_note": "from the run's own records (results.json, "
                               "federation.json, receipts.jsonl), not from the signed ledger",
            "outside_dp": [{"what": o.what, "consequence": o.consequence}
                           for o in OUTSIDE_DP],
            "outside_dp_source": THREAT_MODEL_SECTION,
            "sent_by_hospital": [{"what": x.what, "when": x.when, "reveals": x.reveals}
                                 for x in SENT_BY_HOSPITAL],
            "sent_source": SENT_SECTION,
        },
        "hospitals": hospitals, "folder_findings": extra_findings,
        "verify_commands": commands,
    }
