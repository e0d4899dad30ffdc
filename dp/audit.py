"""Independent audit of privacy ledgers (``fedrx audit DIR``).

For every hospital ledger it checks, entry by entry:

* structure: a JSON object with every key of :data:`fedrx.dp.ledger.ENTRY_KEYS`,
  ``format`` and ``privacy_unit == "patient"``, the file's hospital, ``seq == position``;
* the Ed25519 ``signature`` against the hospital's public identity (``identities/``);
* ``entry_hash`` recomputed, and ``prev_hash`` equal to the previous ``entry_hash``
  (missing, inserted, reordered and edited entries break this chain);
* rounds strictly increasing (a repeated round is reported as a duplicate);
* truncation, relative to an anchored head ``(length, head_hash)`` when one is given
  (e.g. from a signed round receipt; a hash-only anchor, length -1, must appear in the
  chain): without an anchor a truncated ledger is a valid shorter chain and cannot be
  detected;
* epsilon recomputed from the recorded ``(sample_rate, noise_multiplier, steps)`` of every
  trained entry up to it with an INDEPENDENT accountant
  (:mod:`fedrx.dp.accountants.independent`), Google's ``dp_accounting`` PLD accountant
  (``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))`` self-composed ``steps`` times per
  entry, add-or-remove-one neighbouring, discretisation 1e-4). Tolerance
  :func:`tolerance` = ``max(0.02, 2% of the PLD epsilon)``. Findings: recorded epsilon below
  PLD - tol (understated, any accountant); for ``prv`` entries any |recorded - PLD| > tol;
  for ``rdp`` entries (a looser bound, legitimately above PLD) |recorded - RDP| > tol where
  RDP is dp_accounting's own RDP accountant;
* budget: recorded or recomputed epsilon above ``budget_epsilon`` (+ tol for recomputed);
* signed round receipts: when an anchors file (``OUT/anchors[/<h>].json`` of a gRPC
  aggregator) carries the signed ``receipt`` an anchor comes from, its Ed25519 signature is
  verified against the aggregator's receipt key pinned in the federation file
  (``aggregator_sign_public``; :mod:`fedrx.receipts`) and the receipt must name the
  anchored head for that hospital (findings ``receipt-bad-signature``,
  ``receipt-mismatch``). The federation file is ``fedrx audit --federation FILE``, else the
  first ``federation.json`` or ``certs/federation.json`` found in the anchors file's folder
  or one of its 3 parent folders (the ``fedrx demo grpc`` layout); without one the receipt
  signatures are NOT verified and the audit says so.

The audit trusts nothing written by fedrx's accounting code (it does not import Opacus).
It checks a signed self-report of parameters, not that the noise was really added. It
prints nothing: :func:`run_audit` returns an :class:`AuditResult` and
:func:`fedrx.dp.audit_report.format_audit` renders it for the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrx.dp.accountants.independent import pld_epsilon, rdp_epsilon
from fedrx.dp.ledger import (
    ENTRY_KEYS,
    FORMAT,
    GENESIS_HASH,
    PRIVACY_UNIT,
    LedgerHead,
    compute_entry_hash,
    read_entries,
    read_public_identity,
    signing_bytes,
)
from fedrx.errors import ConfigError, LedgerError, SignatureError
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


def _merge(history: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    merged: dict[tuple[float, float], int] = {}
    for q, s, n in history:
        merged[(q, s)] = merged.get((q, s), 0) + n
    return [(q, s, n) for (q, s), n in merged.items()]


def audit_ledger(
    hospital: str,
    entries: Sequence[Mapping[str, Any]],
    public: PublicIdentity | None,
    anchor: LedgerHead | None = None,
    *,
    recompute: bool = True,
) -> list[Finding]:
    """All findings for one hospital's parsed ledger entries (empty list: clean)."""
    out: list[Finding] = []

    def add(kind: str, msg: str, seq: int | None = None) -> None:
        out.append(Finding(hospital, kind, msg, seq))

    if public is None:
        add("missing-identity", "no public identity to verify signatures against")
    elif public.hospital != hospital:
        add("identity-mismatch", f"identity file names hospital {public.hospital!r}")
    prev = GENESIS_HASH
    last_round: int | None = None
    history: list[tuple[float, float, int]] = []
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
        if e["status"] == "trained":
            if not (0 < q <= 1 and s > 0 and n >= 1):
                add("malformed", f"invalid mechanism q={q} sigma={s} steps={n}", i)
                continue
            history.append((q, s, n))
        elif e["status"] == "refused":
            if n != 0:
                add("malformed", f"refused entry with steps={n}", i)
        else:
            add("malformed", f"unknown status {e['status']!r}", i)
        if eps > budget:
            add("budget-overrun", f"recorded epsilon {eps:.4f} > budget {budget}", i)
        if not recompute or not (0 < delta < 1):
            continue
        hist = _merge(history)
        ref = pld_epsilon(hist, delta)
        tol = tolerance(ref)
        if eps < ref - tol:
            add("epsilon-understated", f"recorded {eps:.4f} < independent PLD {ref:.4f} "
                f"(tolerance {tol:.3f}, delta {delta:g})", i)
        elif e["accountant"] == "prv" and abs(eps - ref) > tol:
            add("epsilon-mismatch", f"recorded PRV {eps:.4f} vs independent PLD {ref:.4f} "
                f"(tolerance {tol:.3f})", i)
        elif e["accountant"] == "rdp":
            ref_rdp = rdp_epsilon(hist, delta)
            if abs(eps - ref_rdp) > tolerance(ref_rdp):
                add("epsilon-mismatch", f"recorded RDP {eps:.4f} vs dp_accounting RDP "
                    f"{ref_rdp:.4f} (tolerance {tolerance(ref_rdp):.3f})", i)
        elif e["accountant"] not in ("prv", "rdp"):
            add("malformed", f"unknown accountant {e['accountant']!r}", i)
        if ref > budget + tol:
            add("budget-overrun", f"independent PLD epsilon {ref:.4f} > budget {budget}", i)
    if anchor is not None and anchor.length < 0:
        # a hash-only anchor (what a round receipt carries): entry hashes chain and cover
        # seq, so the hash pins one position; it must still be in the ledger
        if not any(e.get("entry_hash") == anchor.head_hash for e in entries):
            add("head-mismatch", "the anchored head hash is not in the ledger (truncated or "
                "rewritten)")
    elif anchor is not None:
        if len(entries) < anchor.length:
            add("truncated", f"{len(entries)} entries but the anchored head has "
                f"{anchor.length}")
        elif anchor.length > 0 and entries[anchor.length - 1].get("entry_hash") != \
                anchor.head_hash:
            add("head-mismatch", f"entry {anchor.length - 1} does not match the anchored "
                "head hash")
    return out


def _locate(path: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Ledger and identity files of a run dir (``ledger/``, ``identities/``) or a flat dir."""
    path = Path(path)
    if path.is_file():
        led_dir, id_dir = path.parent, path.parent.parent / "identities"
        ledgers = {path.name.removesuffix(".jsonl"): path}
    else:
        led_dir = path / "ledger" if (path / "ledger").is_dir() else path
        id_dir = path / "identities" if (path / "identities").is_dir() else path
        ledgers = {p.name.removesuffix(".jsonl"): p for p in sorted(led_dir.glob("*.jsonl"))
                   if not p.name.startswith(".")}
    ids = {p.name.removesuffix(".pub.json"): p for p in sorted(id_dir.glob("*.pub.json"))}
    if not ids and (led_dir / "identities").is_dir():
        ids = {p.name.removesuffix(".pub.json"): p
               for p in sorted((led_dir / "identities").glob("*.pub.json"))}
    return ledgers, ids


def load_anchors(path: Path) -> dict[str, LedgerHead]:
    """Anchors JSON: ``{"<hospital>": {"length": n, "head_hash": "<hex>"}, ...}``.

    ``length`` may be omitted (a gRPC aggregator's round receipts carry only the head hash):
    the anchor then requires that entry to be present (LedgerHead length -1)."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
        return {h: LedgerHead(int(v.get("length", -1)), str(v["head_hash"]))
                for h, v in obj.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise LedgerError(f"anchors file {path} is unreadable or malformed") from None


def load_anchor_receipts(path: Path) -> dict[str, dict[str, Any]]:
    """The signed round receipts in an anchors file, by hospital (anchors without one,
    e.g. older files, are simply absent)."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
        return {h: dict(v["receipt"]) for h, v in obj.items()
                if isinstance(v, Mapping) and "receipt" in v}
    except (OSError, ValueError, TypeError, AttributeError):
        raise LedgerError(f"anchors file {path} is unreadable or malformed") from None


def find_aggregator_key(anchors_path: Path | None,
                        federation_path: Path | None = None) -> bytes | None:
    """The aggregator's pinned receipt key (32 bytes) from ``federation_path``, else from
    the first ``federation.json`` / ``certs/federation.json`` in the anchors file's folder
    or its 3 parents; None when there is none."""
    candidates: list[Path] = []
    if federation_path is not None:
        candidates = [Path(federation_path)]
    elif anchors_path is not None:
        folder = Path(anchors_path).resolve().parent
        for d in [folder, *list(folder.parents)[:3]]:
            candidates += [d / "federation.json", d / "certs" / "federation.json"]
    for c in candidates:
        if not c.is_file():
            if federation_path is not None:
                raise LedgerError(f"federation file {c} not found")
            continue
        try:
            key = bytes.fromhex(json.loads(c.read_text(encoding="utf-8"))
                                ["aggregator_sign_public"])
        except (OSError, ValueError, KeyError, TypeError):
            raise LedgerError(f"federation file {c} has no aggregator_sign_public") from None
        if len(key) != 32:
            raise LedgerError(f"federation file {c}: aggregator_sign_public is not 32 bytes")
        return key
    return None


def audit_receipts(anchors: Mapping[str, LedgerHead], receipts: Mapping[str, Mapping],
                   aggregator_public: bytes) -> list[Finding]:
    """Findings for the anchors' signed receipts (signature + the anchored head)."""
    from fedrx.errors import SignatureError
    from fedrx.receipts import verify_receipt

    out: list[Finding] = []
    for h, rec in sorted(receipts.items()):
        try:
            verify_receipt(rec, aggregator_public)
        except SignatureError:
            out.append(Finding(h, "receipt-bad-signature", "the anchor's round receipt is not "
                               "signed by the pinned aggregator key (edited or forged)"))
            continue
        heads = rec.get("ledger_heads")
        anchor = anchors.get(h)
        if not isinstance(heads, Mapping) or anchor is None or \
                heads.get(h) != anchor.head_hash:
            out.append(Finding(h, "receipt-mismatch", "the anchored head is not the one the "
                               "signed receipt names for this hospital"))
    return out


def audit(path: Path, anchors: Mapping[str, LedgerHead] | None = None,
          *, recompute: bool = True, receipts: Mapping[str, Mapping] | None = None,
          aggregator_public: bytes | None = None) -> list[Finding]:
    """Audit every ledger under ``path`` (see module doc); an empty list means clean.
    ``receipts`` (:func:`load_anchor_receipts`) are verified when ``aggregator_public``
    (the pinned receipt key) is given."""
    ledgers, ids = _locate(Path(path))
    findings: list[Finding] = []
    if not ledgers:
        return [Finding(str(path), "no-ledger", "no <hospital>.jsonl ledger files found")]
    anchors = anchors or {}
    if receipts and aggregator_public is not None:
        findings.extend(audit_receipts(anchors, receipts, aggregator_public))
    for h in sorted(set(anchors) - set(ledgers)):
        findings.append(Finding(h, "missing-ledger", "anchored hospital has no ledger file"))
    for h, lp in ledgers.items():
        try:
            entries = read_entries(lp)
        except LedgerError as exc:
            findings.append(Finding(h, "unreadable", str(exc)))
            continue
        public = None
        if h in ids:
            try:
                public = read_public_identity(ids[h])
            except (LedgerError, ConfigError) as exc:
                findings.append(Finding(h, "bad-identity", str(exc)))
        findings.extend(audit_ledger(h, entries, public, anchors.get(h), recompute=recompute))
    return findings


@dataclass(frozen=True)
class AuditResult:
    """What ``fedrx audit`` found (rendered by :func:`fedrx.dp.audit_report.format_audit`).

    ``findings``: every problem (empty: clean); ``ledgers``/``entries``: how many ledger
    files and entries were audited (``entries`` is counted only for a clean audit, else
    None); ``receipts_verified``: the anchors' signed round receipts were checked against
    the pinned aggregator key; ``receipts_unverified``: the anchors carry receipts but no
    federation file pins the key, so their signatures were NOT checked.
    """

    findings: tuple[Finding, ...]
    ledgers: int
    entries: int | None
    receipts_verified: bool = False
    receipts_unverified: bool = False

    @property
    def exit_code(self) -> int:
        """0 when clean, 1 with findings."""
        return 1 if self.findings else 0


def run_audit(path: Path, anchors_path: Path | None = None,
              federation_path: Path | None = None) -> AuditResult:
    """``fedrx audit PATH [--anchors FILE] [--federation FILE]`` without any output: loads
    the anchors and their receipts, finds the pinned receipt key and audits every ledger
    under ``path``. Raises :class:`~fedrx.errors.LedgerError` on unusable input (an
    unreadable anchors or federation file)."""
    anchors = load_anchors(anchors_path) if anchors_path else None
    receipts = load_anchor_receipts(anchors_path) if anchors_path else {}
    key = find_aggregator_key(anchors_path, federation_path) if receipts else None
    findings = audit(Path(path), anchors, receipts=receipts, aggregator_public=key)
    ledgers, _ = _locate(Path(path))
    entries = None if findings else sum(len(read_entries(p)) for p in ledgers.values())
    return AuditResult(tuple(findings), len(ledgers), entries,
                       receipts_verified=bool(receipts) and key is not None,
                       receipts_unverified=bool(receipts) and key is None)
