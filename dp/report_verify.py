"""The verification part of a privacy budget report: ``fedrx audit`` run on every input
folder exactly as the command line would run it, its findings sorted per hospital into four
checks (signatures, hash chain, anchors, independent recomputation) and a verdict.

Anchors and the federation file are found as the auditor would pass them: ``--anchors``
(a file, or a folder holding ``<hospital>.json`` / ``anchors.json``) and ``--federation``
when given; otherwise, for a folder holding one hospital, the first
``aggregator/anchors/<h>.json`` or ``anchors/<h>.json`` in it or one of its 3 parents (the
``fedrx demo grpc`` layout), and for any folder an ``anchors.json`` there naming only
hospitals it holds. Every verification names the ``fedrx audit`` command that repeats it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrx.dp.accountants.independent import pld_epsilon, rdp_epsilon
from fedrx.dp.audit import TOL_ABS, TOL_REL, AuditResult, Finding, run_audit, tolerance
from fedrx.dp.ledger import mechanism_of

CHECKS = ("signatures", "hash chain", "anchors", "recomputation")
_EXPLAIN = {
    "signatures": "Ed25519 signature of every entry against the hospital's public key",
    "hash chain": "entry hashes, prev_hash chain, sequence numbers, rounds increasing, "
                  "entry structure",
    "anchors": "ledger head against the aggregator's signed round receipt (truncation)",
    "recomputation": "epsilon recomputed independently (Google dp_accounting PLD, "
                     f"tolerance max({TOL_ABS}, {TOL_REL:.0%})) and the budget",
}


def check_of(kind: str) -> str:
    """Which of :data:`CHECKS` a finding kind belongs to (kinds unknown to this version
    are sorted by their words, and a finding always fails some check)."""
    k = kind.lower()
    if any(w in k for w in ("receipt", "anchor", "truncat", "head", "missing-ledger")):
        return "anchors"
    if any(w in k for w in ("sign", "identity", "key", "pin")):
        return "signatures"
    if any(w in k for w in ("epsilon", "budget", "accountant", "recomput")):
        return "recomputation"
    return "hash chain"


@dataclass(frozen=True)
class DirAudit:
    """``fedrx audit`` of one input folder: the result and how to repeat it."""

    folder: str
    result: AuditResult
    anchors: str | None
    federation: str | None
    command: str


def audit_folder(folder: Path, anchors: Path | None = None,
                 federation: Path | None = None) -> DirAudit:
    """Run ``fedrx audit FOLDER [--anchors A] [--federation F]`` (the audit finds the
    default anchors and the pinned federation itself). Raises
    :class:`~fedrx.errors.LedgerError` on an unreadable anchors or federation file."""
    folder = Path(folder)
    result = run_audit(folder, anchors, federation)
    a_txt = None if anchors is None else str(anchors)
    f_txt = None if federation is None else str(federation)
    cmd = f"fedrx audit {folder}" + (f" --anchors {a_txt}" if a_txt else "") \
        + (f" --federation {f_txt}" if f_txt else "")
    return DirAudit(str(folder), result, a_txt, f_txt, cmd)


def audited_hospitals(da: DirAudit) -> list[str]:
    """Every hospital the audit of a folder covered (with a ledger or expected to have
    one: a missing or empty ledger is a finding of that hospital)."""
    return sorted({ha.hospital for ha in getattr(da.result, "hospitals", ())})


def recompute(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The last entry's recorded epsilon against dp_accounting's (PLD; RDP too for
    ``accountant="rdp"`` entries, which are legitimately above PLD) over every trained
    entry; None when the entries cannot be replayed (malformed: the audit says why)."""
    if not entries:
        return None
    hist: list[tuple[float, float, int]] = []
    try:
        for e in entries:
            m = mechanism_of(e)
            if m is not None:
                hist.append((m.sample_rate, m.noise_multiplier, m.steps))
        last = entries[-1]
        recorded, delta = float(last["epsilon"]), float(last["delta"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (0 < delta < 1):
        return None
    ref = pld_epsilon(hist, delta)
    out = {"recorded": recorded, "pld": ref, "difference": recorded - ref,
           "tolerance": tolerance(ref), "delta": delta}
    if last.get("accountant") == "rdp":
        out["rdp"] = rdp_epsilon(hist, delta)
    return out


def _ha(da: DirAudit, hospital: str) -> Any:
    """The audit's own per-hospital record (:class:`fedrx.dp.audit.HospitalAudit`)."""
    return next((ha for ha in getattr(da.result, "hospitals", ())
                 if ha.hospital == hospital), None)


def _check(check: str, status: str, detail: str) -> dict[str, str]:
    return {"check": check, "status": status, "detail": detail, "what": _EXPLAIN[check]}


def _from_audit(ha: Any, by: Mapping[str, list[str]], n: int,
                accountant: Any = None) -> list[dict[str, str]]:
    """The four checks from the audit's HospitalAudit (signature pinning, anchor kind,
    independent epsilon as the audit computed them)."""
    checks = []
    if by["signatures"]:
        checks.append(_check("signatures", "fail", "; ".join(by["signatures"])))
    elif ha.signatures == "pinned":
        checks.append(_check("signatures", "pass", f"{n} entries verified against the key "
                             f"pinned in {ha.key_source}"))
    elif ha.signatures == "unpinned":
        checks.append(_check("signatures", "weak", f"{n} entries verified against "
                             f"{ha.key_source} beside the ledger, NOT a pinned key (no "
                             "federation file): a re-signed ledger with a swapped identity "
                             "file would pass"))
    else:
        checks.append(_check("signatures", "not checked", "no key to verify against"))
    checks.append(_check("hash chain", "fail", "; ".join(by["hash chain"])) if by["hash chain"]
                  else _check("hash chain", "pass" if ha.chain else "not checked",
                              f"{n} entries chained from the genesis hash, no gap, edit or "
                              "reorder" if ha.chain else "no entry to check"))
    src = ha.anchor_source
    cover = ("" if ha.anchored_entries in (None, -1)
             else f", covering the first {ha.anchored_entries} entries")
    if by["anchors"]:
        checks.append(_check("anchors", "fail", "; ".join(by["anchors"])))
    elif ha.anchor == "signed-receipt":
        checks.append(_check("anchors", "pass", f"head anchored to the aggregator's signed "
                             f"round receipt ({src}){cover}; receipt signature verified "
                             "against the pinned aggregator key"))
    elif ha.anchor == "receipt-unverified":
        checks.append(_check("anchors", "weak", f"head anchored to a round receipt ({src})"
                             f"{cover}; its signature NOT verified (no pinned aggregator "
                             "key)"))
    elif ha.anchor == "unsigned":
        checks.append(_check("anchors", "weak", f"head anchored to an UNSIGNED record "
                             f"({src}){cover}: detects a cut tail, not a rewrite of both"))
    else:
        checks.append(_check("anchors", "not checked",
                             "not anchored: truncation not detectable"))
    if by["recomputation"]:
        checks.append(_check("recomputation", "fail", "; ".join(by["recomputation"])))
    elif ha.recomputed and ha.independent_epsilon is not None:
        diff = "" if ha.max_epsilon_diff is None else \
            f", largest difference over entries {ha.max_epsilon_diff:+.4f}"
        carried = (f"; includes {ha.carried_runs} earlier run(s) on the same patients"
                   if ha.carried_runs else "")
        eps = "-" if ha.epsilon is None else f"{ha.epsilon:.4f}"
        how = ("recorded with the RDP accountant, an upper bound: matched against "
               "dp_accounting's RDP within the tolerance, PLD shown for reference"
               if accountant == "rdp" else "positive: recorded is conservative")
        checks.append(_check("recomputation", "pass", f"recorded {eps}, dp_accounting PLD "
                             f"{ha.independent_epsilon:.4f}{diff} ({how}; tolerance "
                             f"max({TOL_ABS}, {TOL_REL:.0%})){carried}"))
    else:
        checks.append(_check("recomputation", "not checked", "no trained entry to recompute"))
    return checks


def _from_findings(da: DirAudit, by: Mapping[str, list[str]], entries: Sequence[Any],
                   key_hex: str | None) -> list[dict[str, str]]:
    """The four checks from the findings alone (an audit without per-hospital records)."""
    n = len(entries)
    rec = recompute(entries)
    key = f"key {key_hex[:16]}..." if key_hex else "no public key found"
    details = {
        "signatures": f"{n} entries verified against the hospital's public key ({key})",
        "hash chain": f"{n} entries chained from the genesis hash, no gap, edit or reorder",
        "recomputation": "no trained entry to recompute" if rec is None else
        (f"recorded {rec['recorded']:.4f}, dp_accounting PLD {rec['pld']:.4f}, difference "
         f"{rec['difference']:+.4f} (tolerance {rec['tolerance']:.3f})"),
        "anchors": f"head found in the chain (anchors {da.anchors})",
    }
    checks = []
    for c in CHECKS:
        if by[c]:
            checks.append(_check(c, "fail", "; ".join(by[c])))
        elif c == "anchors" and da.anchors is None:
            checks.append(_check(c, "not checked", "not anchored: truncation not detectable"))
        else:
            checks.append(_check(c, "pass", details[c]))
    return checks


def hospital_verification(hospital: str, da: DirAudit, entries: Sequence[Mapping[str, Any]],
                          key_hex: str | None = None) -> dict[str, Any]:
    """Per-hospital checks (each ``{"check", "what", "status": "pass" | "fail" | "weak" |
    "not checked", "detail"}``), findings and a one-line verdict."""
    mine: list[Finding] = [f for f in da.result.findings if f.hospital == hospital]
    by: dict[str, list[str]] = {c: [] for c in CHECKS}
    for f in mine:
        by[check_of(f.kind)].append(str(f))
    ha = _ha(da, hospital)
    acc = entries[-1].get("accountant") if entries else None
    checks = _from_audit(ha, by, len(entries), acc) if ha is not None else \
        _from_findings(da, by, entries, key_hex)
    status = {c["check"]: c["status"] for c in checks}
    ok = not mine
    anchored = status["anchors"] in ("pass", "weak")
    weak = [c for c in CHECKS if status[c] in ("weak", "not checked")]
    notes = []
    if status["anchors"] == "not checked":
        notes.append("not anchored: truncation not detectable")
    elif status["anchors"] == "weak":
        notes.append("anchored to UNSIGNED heads only (a rewrite of ledger and record "
                     "together is not detectable)" if getattr(ha, "anchor", "") == "unsigned"
                     else "anchor receipt signature not verified (no pinned aggregator key)")
    if status["signatures"] != "pass":
        notes.append("signatures not against a pinned key")
    if status["recomputation"] != "pass":
        notes.append("epsilon not recomputed")
    if status["hash chain"] != "pass":
        notes.append("no chain to check")
    if not ok:
        kinds = ", ".join(sorted({f.kind for f in mine}))
        failed = ", ".join(c for c in CHECKS if by[c])
        line = (f"{hospital}: AUDIT FAILED ({failed}): {len(mine)} finding(s) ({kinds}); "
                "do not rely on this ledger")
    elif not weak:
        line = f"{hospital}: verified: pinned signatures, hash chain, signed anchor, epsilon"
    else:
        done = [c for c in CHECKS if status[c] == "pass"]
        line = (f"{hospital}: verified: {', '.join(done) or 'nothing'}; " + "; ".join(notes))
    return {"ok": ok, "anchored": anchored, "complete": ok and not weak, "verdict": line,
            "limits": notes if ok else [],
            "checks": checks, "findings": [str(f) for f in mine],
            "audit": ha.to_json() if ha is not None and hasattr(ha, "to_json") else None,
            "command": da.command}


def folder_findings(da: DirAudit, hospitals: Sequence[str]) -> list[str]:
    """Findings of a folder that name no hospital it holds (e.g. an anchored hospital
    without a ledger, no ledger at all)."""
    return [str(f) for f in da.result.findings if f.hospital not in set(hospitals)]
