"""The text ``fedrx audit`` prints for an :class:`~fedrx.dp.audit.AuditResult`."""

from __future__ import annotations

from fedrx.dp.audit import TOL_ABS, TOL_REL, AuditResult


def format_audit(result: AuditResult) -> str:
    """One line per finding (``FINDING ...``), then ``audit FAILED: n finding(s)``; or one
    ``audit OK: ...`` line naming what was verified. A note first when signed receipts
    could not be verified (no federation file). No trailing newline."""
    lines = []
    if result.receipts_unverified:
        lines.append("note: the anchors carry signed round receipts but no federation file "
                     "was found (--federation FILE): receipt signatures NOT verified")
    lines += [f"FINDING {f}" for f in result.findings]
    if result.findings:
        lines.append(f"audit FAILED: {len(result.findings)} finding(s)")
    else:
        lines.append(f"audit OK: {result.ledgers} ledger(s), {result.entries} entries; "
                     f"signatures, hash chains and epsilon (dp_accounting PLD, tolerance "
                     f"max({TOL_ABS}, {TOL_REL:.0%})) verified"
                     + ("; signed round receipts verified" if result.receipts_verified
                        else ""))
    return "\n".join(lines)
