"""The verification part of a privacy budget report: ``fedrx audit`` run on every input
folder exactly as the command line runs it (the audit itself finds the pinned federation and
the default anchors, :mod:`fedrx.dp.pins`, :mod:`fedrx.dp.anchors`), its per-hospital record
(:class:`fedrx.dp.audit.HospitalAudit`) and findings turned into four checks (signatures,
hash chain, anchors, independent recomputation), each ``pass``, ``weak`` (checked, but
against something weaker than the strongest evidence: an unpinned key, unsigned heads, an
unverified receipt), ``not checked`` or ``fail``, and a one-line verdict per hospital.
Every verification names the ``fedrx audit`` command that repeats it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrx.dp.audit import TOL_ABS, TOL_REL, AuditResult, Finding, HospitalAudit, run_audit

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
    if k in ("duplicate-key", "non-canonical"):  # the line's form: part of the chain check
        return "hash chain"
    if any(w in k for w in ("receipt", "anchor", "truncat", "head")):
        return "anchors"
    if any(w in k for w in ("sign", "identity", "key", "pin")):
        return "signatures"
    if any(w in k for w in ("epsilon", "budget", "accountant", "recomput", "distributed",
                            "carried")):
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
    return sorted({ha.hospital for ha in da.result.hospitals})


def _ha(da: DirAudit, hospital: str) -> HospitalAudit | None:
    """The audit's own per-hospital record."""
    return next((ha for ha in da.result.hospitals
                 if ha.hospital == hospital), None)


def _check(check: str, status: str, detail: str) -> dict[str, str]:
    return {"check": check, "status": status, "detail": detail, "what": _EXPLAIN[check]}


def _from_audit(ha: HospitalAudit, by: Mapping[str, list[str]], n: int,
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


def _from_findings(by: Mapping[str, list[str]]) -> list[dict[str, str]]:
    """The checks when the audit kept no record of the hospital: what failed, the rest
    not checked."""
    return [_check(c, "fail", "; ".join(by[c])) if by[c] else
            _check(c, "not checked", "the audit kept no record of this hospital")
            for c in CHECKS]


def hospital_verification(hospital: str, da: DirAudit,
                          entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-hospital checks (each ``{"check", "what", "status": "pass" | "fail" | "weak" |
    "not checked", "detail"}``), findings and a one-line verdict."""
    mine: list[Finding] = [f for f in da.result.findings if f.hospital == hospital]
    by: dict[str, list[str]] = {c: [] for c in CHECKS}
    for f in mine:
        by[check_of(f.kind)].append(str(f))
    ha = _ha(da, hospital)
    acc = entries[-1].get("accountant") if entries else None
    checks = _from_audit(ha, by, len(entries), acc) if ha is not None else _from_findings(by)
    status = {c["check"]: c["status"] for c in checks}
    ok = not mine
    anchored = status["anchors"] in ("pass", "weak")
    weak = [c for c in CHECKS if status[c] in ("weak", "not checked")]
    notes = []
    if status["anchors"] == "not checked":
        notes.append("not anchored: truncation not detectable")
    elif status["anchors"] == "weak":
        notes.append("anchored to UNSIGNED heads only (a rewrite of ledger and record "
                     "together is not detectable)" if ha is not None and ha.anchor == "unsigned"
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
            "audit": ha.to_json() if ha is not None else None,
            "command": da.command}


def folder_findings(da: DirAudit, hospitals: Sequence[str]) -> list[str]:
    """Findings of a folder that name no hospital it holds (e.g. an anchored hospital
    without a ledger, no ledger at all)."""
    return [str(f) for f in da.result.findings if f.hospital not in set(hospitals)]
