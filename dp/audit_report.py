"""The text ``fedrx audit`` prints for an :class:`~fedrx.dp.audit.AuditResult`."""

from __future__ import annotations

from fedrx.dp.audit import (
    NOT_ANCHORED,
    PINNED,
    RECEIPT_UNVERIFIED,
    SIGNED_RECEIPT,
    TOL_ABS,
    TOL_REL,
    UNPINNED,
    UNSIGNED,
    AuditResult,
    HospitalAudit,
)


def _signatures(h: HospitalAudit) -> str:
    if h.signatures == PINNED:
        return f"signatures checked against the PINNED key ({h.key_source})"
    if h.signatures == UNPINNED:
        return (f"signatures checked against the identity file beside the ledger, NOT pinned "
                f"({h.key_source}; pass --federation FILE)")
    return "signatures NOT checked (no key)"


def _anchor(h: HospitalAudit) -> str:
    cover = (f", covers {h.anchored_entries} of {h.entries} entries"
             if h.anchored_entries is not None else "")
    if h.anchor == SIGNED_RECEIPT:
        return f"anchored to a signed round receipt ({h.anchor_source}{cover})"
    if h.anchor == RECEIPT_UNVERIFIED:
        return (f"anchored to a round receipt NOT verified (no pinned aggregator key; "
                f"{h.anchor_source}{cover})")
    if h.anchor == UNSIGNED:
        return f"anchored to UNSIGNED heads ({h.anchor_source}{cover})"
    assert h.anchor == NOT_ANCHORED
    return "not anchored: truncation not detectable"


def hospital_line(h: HospitalAudit) -> str:
    """One line saying what was checked for one hospital and with what result."""
    if not h.entries:
        return (f"{h.hospital}: NO ledger entries to check (the ledger is missing, empty or "
                f"unreadable); {len(h.findings)} finding(s)")
    parts = [f"{h.hospital}: {h.entries} entries", _signatures(h),
             "hash chain intact" if h.chain else "hash chain NOT intact", _anchor(h)]
    if h.recomputed and h.epsilon is not None and h.independent_epsilon is not None:
        parts.append(f"epsilon {h.epsilon:.4f} recorded vs {h.independent_epsilon:.4f} "
                     f"independent PLD (largest difference {h.max_epsilon_diff:+.4f})")
    elif h.entries:
        parts.append("epsilon NOT recomputed")
    if h.carried_runs:
        parts.append(f"carries {h.carried_runs} earlier run(s) on the same patients")
    return "; ".join(parts) + ("" if h.ok else f"; {len(h.findings)} finding(s)")


def format_audit(result: AuditResult) -> str:
    """One line per hospital (what was checked), one line per finding (``FINDING ...``),
    then ``audit FAILED: n finding(s)``; or an ``audit OK: ...`` last line naming what was
    verified. A note first when signed receipts could not be verified (no federation
    file). No trailing newline."""
    lines = []
    if result.receipts_unverified:
        lines.append("note: the anchors carry signed round receipts but no federation file "
                     "was found (--federation FILE): receipt signatures NOT verified")
    lines += [hospital_line(h) for h in result.hospitals]
    lines += [f"FINDING {f}" for f in result.findings]
    if result.findings:
        lines.append(f"audit FAILED: {len(result.findings)} finding(s)")
    else:
        pinned = all(h.signatures == PINNED for h in result.hospitals)
        lines.append(f"audit OK: {result.ledgers} ledger(s), {result.entries} entries; "
                     f"signatures{' (pinned keys)' if pinned else ' (NOT pinned)'}, hash "
                     f"chains and epsilon (dp_accounting PLD, tolerance "
                     f"max({TOL_ABS}, {TOL_REL:.0%})) verified"
                     + ("; signed round receipts verified" if result.receipts_verified
                        else ""))
    return "\n".join(lines)
