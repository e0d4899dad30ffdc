"""The audit's checks of one hospital's ledger lines and entries (see :mod:`fedrx.dp.audit`
for what is checked and why; this module holds the per-entry work)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedrx.dp.accountants.independent import pld_epsilon, rdp_epsilon
from fedrx.dp.distributed.audit import entry_findings as distributed_findings
from fedrx.dp.ledger import (
    ENTRY_KEYS,
    FORMAT,
    GENESIS_HASH,
    PRIVACY_UNIT,
    LedgerHead,
    carried_of,
    compute_entry_hash,
    is_canonical,
    loads_strict,
    parse_line,
    signing_bytes,
)
from fedrx.errors import LedgerError, SignatureError
from fedrx.secagg.identity import PublicIdentity

TOL_ABS = 0.02
TOL_REL = 0.02


def tolerance(eps: float) -> float:
    """Allowed |recorded - recomputed| epsilon difference: ``max(0.02, 0.02 * eps)``."""
    return max(TOL_ABS, TOL_REL * eps)


@dataclass(frozen=True)
class Finding:
    """One audit problem. ``seq`` is the entry position (None for file-level findings)."""

    hospital: str
    kind: str
    message: str
    seq: int | None = None

    def __str__(self) -> str:
        where = f"{self.hospital}" + (f" entry {self.seq}" if self.seq is not None else "")
        return f"{where}: {self.kind}: {self.message}"


@dataclass(frozen=True)
class LedgerCheck:
    """Findings of one ledger and what the recomputation gave (see
    :class:`fedrx.dp.audit.HospitalAudit` for the meaning of each figure)."""

    findings: tuple[Finding, ...]
    recomputed: bool
    epsilon: float | None
    independent_epsilon: float | None
    max_epsilon_diff: float | None
    carried_runs: int
    anchored_entries: int | None


def _merge(history: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    merged: dict[tuple[float, float], int] = {}
    for q, s, n in history:
        merged[(q, s)] = merged.get((q, s), 0) + n
    return [(q, s, n) for (q, s), n in merged.items()]


def check_lines(hospital: str, lines: Sequence[tuple[int, str]], public: PublicIdentity | None,
                anchor: LedgerHead | None = None, *, recompute: bool = True) -> LedgerCheck:
    """Form checks of the raw lines (canonical one-line form, no duplicate key, JSON
    objects), then :func:`check_entries` of the parsed entries."""
    form: list[Finding] = []
    entries: list[dict[str, Any]] = []
    for i, (lineno, line) in enumerate(lines):
        try:
            e = parse_line(line)
        except LedgerError as exc:
            try:  # a duplicate key: report it, check the rest as Python reads it
                e = loads_strict(line, duplicates=True)
            except LedgerError:
                e = None
            if not isinstance(e, dict) or "duplicate key" not in str(exc):
                form.append(Finding(hospital, "malformed", f"line {lineno}: {exc}", i))
                entries.append({})
                continue
            form.append(Finding(hospital, "duplicate-key", f"line {lineno}: {exc} (which "
                                "value counts depends on the parser)", i))
        if not is_canonical(line, e):
            form.append(Finding(hospital, "non-canonical", f"line {lineno} is not the "
                                "canonical one-line encoding of its content", i))
        entries.append(e)
    res = check_entries(hospital, entries, public, anchor, recompute=recompute,
                        report_missing_key=False)
    return LedgerCheck(tuple(form) + res.findings, *[getattr(res, k) for k in (
        "recomputed", "epsilon", "independent_epsilon", "max_epsilon_diff", "carried_runs",
        "anchored_entries")])


def audit_ledger(hospital: str, entries: Sequence[Mapping[str, Any]],
                 public: PublicIdentity | None, anchor: LedgerHead | None = None, *,
                 recompute: bool = True) -> list[Finding]:
    """All findings for one hospital's parsed ledger entries (empty list: clean)."""
    return list(check_entries(hospital, entries, public, anchor, recompute=recompute).findings)


def check_entries(hospital: str, entries: Sequence[Mapping[str, Any]],
                  public: PublicIdentity | None, anchor: LedgerHead | None = None, *,
                  recompute: bool = True, report_missing_key: bool = True) -> LedgerCheck:
    """Structure, signature (against ``public``), chain, rounds, epsilon and anchor."""
    out: list[Finding] = []

    def add(kind: str, msg: str, seq: int | None = None) -> None:
        out.append(Finding(hospital, kind, msg, seq))

    if report_missing_key:  # else the caller (fedrx.dp.audit) has checked the key
        if public is None:
            add("missing-identity", "no public identity to verify signatures against")
        elif public.hospital != hospital:
            add("identity-mismatch", f"identity file names hospital {public.hospital!r}")
    prev = GENESIS_HASH
    last_round: int | None = None
    history: list[tuple[float, float, int]] = []
    carried_ref: Any = entries[0].get("carried") if entries else None
    try:
        carried = [(m.sample_rate, m.noise_multiplier, m.steps)
                   for m in (carried_of(entries[0]) if entries else [])]
    except LedgerError as exc:
        add("malformed", str(exc), 0)
        carried = []
    runs = carried_ref.get("runs", []) if isinstance(carried_ref, Mapping) else []
    last_eps = last_ref = worst = None
    for i, e in enumerate(entries):
        missing = sorted(ENTRY_KEYS - set(e))
        if missing:
            add("malformed", f"missing keys {missing}", i)
            prev = str(e.get("entry_hash", ""))
            continue
        if e["format"] != FORMAT:
            add("malformed", f"format {e['format']!r} (expected {FORMAT})", i)
        if e["privacy_unit"] != PRIVACY_UNIT:
            add("privacy-unit", f"privacy_unit is {e['privacy_unit']!r}, not 'patient'", i)
        if e["hospital"] != hospital:
            add("wrong-hospital", f"entry names hospital {e['hospital']!r}", i)
        if e["seq"] != i:
            add("sequence", f"seq {e['seq']} at position {i} (missing or reordered entry)", i)
        if e["prev_hash"] != prev:
            add("chain-break", "prev_hash does not match the previous entry_hash "
                "(entry missing, inserted, reordered or edited)", i)
        if compute_entry_hash(e) != e["entry_hash"]:
            add("hash-mismatch", "entry_hash does not match the entry (edited)", i)
        if e.get("carried") != carried_ref:
            add("carried-changed", "carries other earlier runs than entry 0", i)
        if public is not None:
            try:
                sig = bytes.fromhex(str(e["signature"]))
            except ValueError:
                sig = b""
            try:
                public.verify(sig, signing_bytes(e))
            except SignatureError:
                add("bad-signature", "Ed25519 signature does not verify (edited or forged)", i)
        try:
            rnd = int(e["round"])
        except (TypeError, ValueError):
            add("malformed", f"round {e['round']!r} is not an integer", i)
            rnd = None
        if rnd is not None and last_round is not None:
            if rnd == last_round:
                add("duplicate-round", f"round {rnd} recorded twice", i)
            elif rnd < last_round:
                add("round-order", f"round {rnd} after round {last_round} (reordered)", i)
        last_round = rnd if rnd is not None else last_round
        prev = str(e["entry_hash"])
        try:
            q, s, n = float(e["sample_rate"]), float(e["noise_multiplier"]), int(e["steps"])
            eps, delta = float(e["epsilon"]), float(e["delta"])
            budget = float(e["budget_epsilon"])
        except (TypeError, ValueError):
            add("malformed", "non-numeric DP parameters", i)
            continue
        last_eps = eps
        if e["status"] == "trained":
            if not (0 < q <= 1 and s > 0 and n >= 1):
                add("malformed", f"invalid mechanism q={q} sigma={s} steps={n}", i)
                continue
            history.append((q, s, n))
            for msg in distributed_findings(e):  # distributed DP: the shares behind sigma
                add("distributed", msg, i)
        elif e["status"] == "refused":
            if n != 0:
                add("malformed", f"refused entry with steps={n}", i)
        else:
            add("malformed", f"unknown status {e['status']!r}", i)
        if eps > budget:
            add("budget-overrun", f"recorded epsilon {eps:.4f} > budget {budget}", i)
        if not recompute or not (0 < delta < 1):
            continue
        hist = _merge(carried + history)
        ref = pld_epsilon(hist, delta)
        last_ref = ref
        if worst is None or abs(eps - ref) > abs(worst):
            worst = eps - ref
        tol = tolerance(ref)
        if eps < ref - tol:
            add("epsilon-understated", f"recorded {eps:.4f} < independent PLD {ref:.4f} "
                f"(tolerance {tol:.3f}, delta {delta:g})", i)
        elif e["accountant"] in ("pld", "prv") and abs(eps - ref) > tol:
            add("epsilon-mismatch", f"recorded {str(e['accountant']).upper()} {eps:.4f} vs "
                f"independent PLD {ref:.4f} (tolerance {tol:.3f})", i)
        elif e["accountant"] == "rdp":
            ref_rdp = rdp_epsilon(hist, delta)
            if abs(eps - ref_rdp) > tolerance(ref_rdp):
                add("epsilon-mismatch", f"recorded RDP {eps:.4f} vs dp_accounting RDP "
                    f"{ref_rdp:.4f} (tolerance {tolerance(ref_rdp):.3f})", i)
        elif e["accountant"] not in ("pld", "prv", "rdp"):
            add("malformed", f"unknown accountant {e['accountant']!r}", i)
        if ref > budget + tol:
            add("budget-overrun", f"independent PLD epsilon {ref:.4f} > budget {budget}", i)
    covered = _check_anchor(entries, anchor, add)
    return LedgerCheck(tuple(out), recompute and last_ref is not None, last_eps, last_ref,
                       worst, len(runs), covered)


def _check_anchor(entries: Sequence[Mapping[str, Any]], anchor: LedgerHead | None,
                  add: Any) -> int | None:
    """Truncation / rewrite against the anchored head; returns how many leading entries it
    covers (None without an anchor)."""
    if anchor is None:
        return None
    if anchor.length < 0:
        # a hash-only anchor (what a round receipt carries): entry hashes chain and cover
        # seq, so the hash pins one position; it must still be in the ledger
        for i, e in enumerate(entries):
            if e.get("entry_hash") == anchor.head_hash:
                return i + 1
        add("head-mismatch", "the anchored head hash is not in the ledger (truncated or "
            "rewritten)")
        return 0
    if len(entries) < anchor.length:
        add("truncated", f"{len(entries)} entries but the anchored head has {anchor.length}")
    elif anchor.length > 0 and entries[anchor.length - 1].get("entry_hash") != \
            anchor.head_hash:
        add("head-mismatch", f"entry {anchor.length - 1} does not match the anchored head hash")
    return anchor.length
