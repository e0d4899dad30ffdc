"""Independent audit of privacy ledgers (``fedrx audit DIR``).

Which hospitals must have a ledger: every hospital with a ledger file, a public identity
file or an anchored head, the hospital a node folder's ``state.json`` names, and every
member of the pinned federation when the federation file is the audited run's own
(``DIR/federation.json`` of ``fedrx simulate``; :mod:`fedrx.dp.pins`). A missing or empty
ledger of one of them is a finding (``missing-ledger``, ``empty-ledger``).

For every hospital ledger it checks, line by line and entry by entry:

* form: every line is exactly ``canonical_json(parsed line)`` (``non-canonical``), with no
  duplicate key (``duplicate-key``: parsers disagree on which duplicate wins);
* structure: every key of :data:`fedrx.dp.ledger.ENTRY_KEYS` (extra signed keys, e.g. a
  distributed mechanism's, are allowed), ``format``, ``privacy_unit == "patient"``, the
  file's hospital, ``seq == position``;
* the Ed25519 ``signature`` against the hospital's PINNED key (the federation file) when a
  federation file is found; an identity file beside the ledger that is not the pinned key is
  a finding (``identity-not-pinned``), a hospital outside the pinned federation too
  (``not-pinned``). Without any federation file the identity file beside the ledger is used
  and the result says that signatures are NOT pinned;
* ``entry_hash`` recomputed, ``prev_hash`` equal to the previous ``entry_hash``;
* rounds strictly increasing (a repeated round is reported as a duplicate);
* truncation, against an anchored head (:mod:`fedrx.dp.anchors`: ``--anchors FILE`` or the
  default anchors found beside the run); a hash-only anchor (length -1) must appear in the
  chain. Without anchors a cut tail is undetectable and the result says ``not anchored``;
* signed round receipts of the anchors: verified against the pinned aggregator key
  (``receipt-bad-signature``, ``receipt-mismatch``); without a pinned key they are NOT
  verified and the result says so;
* epsilon recomputed from the recorded ``(sample_rate, noise_multiplier, steps)`` of every
  trained entry up to it, after the mechanisms it ``carried`` from earlier runs on the same
  patients (:mod:`fedrx.dp.budget_store`; ``carried`` must be the same in every entry), with
  an INDEPENDENT accountant (:mod:`fedrx.dp.accountants.independent`): Google
  ``dp_accounting``'s PLD accountant. Tolerance :func:`tolerance` = ``max(0.02, 2% of the
  PLD epsilon)``. Findings: recorded epsilon below PLD - tol (understated, any accountant);
  for ``pld`` and ``prv`` entries any |recorded - PLD| > tol; for ``rdp`` entries
  |recorded - RDP| > tol where RDP is dp_accounting's own RDP accountant;
* budget: recorded or recomputed epsilon above ``budget_epsilon`` (+ tol for recomputed).

The audit trusts nothing written by fedrx's accounting code (it does not import Opacus).
It checks a signed self-report of parameters, not that the noise was really added. It
prints nothing: :func:`run_audit` returns an :class:`AuditResult` (one
:class:`HospitalAudit` per hospital saying what was checked) and
:func:`fedrx.dp.audit_report.format_audit` renders it for the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrx.dp.anchors import (  # noqa: F401  (re-exported: the audit's public API)
    Anchors,
    anchors_file,
    audit_receipts,
    find_anchors,
    load_anchor_receipts,
    load_anchors,
)
from fedrx.dp.audit_entries import (  # noqa: F401
    TOL_ABS,
    TOL_REL,
    Finding,
    LedgerCheck,
    audit_ledger,
    check_entries,
    check_lines,
    tolerance,
)
from fedrx.dp.ledger import LedgerHead, read_lines, read_public_identity
from fedrx.dp.pins import Pins, find_pins, load_pins
from fedrx.errors import ConfigError, LedgerError
from fedrx.secagg.identity import PublicIdentity

PINNED = "pinned"
UNPINNED = "unpinned"
UNCHECKED = "unchecked"
SIGNED_RECEIPT = "signed-receipt"
RECEIPT_UNVERIFIED = "receipt-unverified"
UNSIGNED = "unsigned"
NOT_ANCHORED = "not-anchored"


@dataclass(frozen=True)
class HospitalAudit:
    """What was checked for one hospital (rendered by :mod:`fedrx.dp.audit_report` and the
    HTML budget report).

    ``ledger``: the ledger file ("" when missing); ``entries``: its entries;
    ``signatures``: ``"pinned"`` (checked against the key in the federation file
    ``key_source``), ``"unpinned"`` (against the identity file ``key_source`` beside the
    ledger: a re-signed ledger with a swapped identity file would pass) or ``"unchecked"``
    (no key); ``chain``: seq, prev_hash and entry_hash intact; ``anchor``:
    ``"signed-receipt"`` (head from a round receipt verified against the pinned aggregator
    key), ``"receipt-unverified"`` (receipt present, no pinned aggregator key),
    ``"unsigned"`` (head from an unsigned file, e.g. a simulation's results.json) or
    ``"not-anchored"`` (truncation of the tail not detectable); ``anchor_source``: the file;
    ``anchored_entries``: how many leading entries the anchor covers (None: no anchor);
    ``recomputed``: epsilon recomputed independently; ``epsilon``: the last recorded
    cumulative epsilon; ``independent_epsilon``: dp_accounting PLD at the last entry;
    ``max_epsilon_diff``: max over entries of recorded - PLD (signed; positive =
    conservative); ``carried_runs``: earlier runs on the same patients it carries;
    ``findings``: this hospital's problems."""

    hospital: str
    ledger: str
    entries: int
    signatures: str
    key_source: str
    chain: bool
    anchor: str
    anchor_source: str
    anchored_entries: int | None
    recomputed: bool
    epsilon: float | None
    independent_epsilon: float | None
    max_epsilon_diff: float | None
    carried_runs: int
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "findings"} | {
            "ok": self.ok, "findings": [str(f) for f in self.findings]}


@dataclass(frozen=True)
class AuditResult:
    """What ``fedrx audit`` found (rendered by :func:`fedrx.dp.audit_report.format_audit`).

    ``findings``: every problem (empty: clean), the per-hospital ones and the folder-level
    ones; ``ledgers``/``entries``: how many ledger files and entries were audited
    (``entries`` is counted only for a clean audit, else None); ``receipts_verified``: the
    anchors' signed round receipts were checked against the pinned aggregator key;
    ``receipts_unverified``: the anchors carry receipts but no federation file pins the key,
    so their signatures were NOT checked; ``hospitals``: what was checked per hospital;
    ``pins``: the federation file the keys came from ("" when none was found)."""

    findings: tuple[Finding, ...]
    ledgers: int
    entries: int | None
    receipts_verified: bool = False
    receipts_unverified: bool = False
    hospitals: tuple[HospitalAudit, ...] = ()
    pins: str = ""

    @property
    def exit_code(self) -> int:
        """0 when clean, 1 with findings."""
        return 1 if self.findings else 0

    def to_json(self) -> dict[str, Any]:
        """Plain data (``fedrx audit --json``): ``format`` ``fedrx-audit/1``, ``ok``,
        ``ledgers``, ``entries``, ``pins``, ``receipts_verified``, ``receipts_unverified``,
        ``hospitals`` (:meth:`HospitalAudit.to_json` each) and ``findings`` (hospital,
        kind, message, seq)."""
        return {"format": "fedrx-audit/1", "ok": not self.findings, "ledgers": self.ledgers,
                "entries": self.entries, "pins": self.pins,
                "receipts_verified": self.receipts_verified,
                "receipts_unverified": self.receipts_unverified,
                "hospitals": [h.to_json() for h in self.hospitals],
                "findings": [{"hospital": f.hospital, "kind": f.kind, "message": f.message,
                              "seq": f.seq} for f in self.findings]}


def _locate(path: Path) -> tuple[dict[str, Path], dict[str, Path], Path]:
    """Ledger files, identity files and the folder of a run dir (``ledger/``,
    ``identities/``), a flat dir or one ledger file."""
    path = Path(path)
    if path.is_file():
        led_dir, id_dir = path.parent, path.parent.parent / "identities"
        ledgers = {path.name.removesuffix(".jsonl"): path}
        folder = path.parent.parent
    else:
        folder = path
        led_dir = path / "ledger" if (path / "ledger").is_dir() else path
        id_dir = path / "identities" if (path / "identities").is_dir() else path
        ledgers = {p.name.removesuffix(".jsonl"): p for p in sorted(led_dir.glob("*.jsonl"))
                   if not p.name.startswith(".") and p.name != "receipts.jsonl"}
    ids = {p.name.removesuffix(".pub.json"): p for p in sorted(id_dir.glob("*.pub.json"))}
    if not ids and (led_dir / "identities").is_dir():
        ids = {p.name.removesuffix(".pub.json"): p
               for p in sorted((led_dir / "identities").glob("*.pub.json"))}
    return ledgers, ids, folder


def _node_hospital(folder: Path) -> str | None:
    try:
        obj = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    h = obj.get("hospital") if isinstance(obj, dict) else None
    return h if isinstance(h, str) else None


def _key_for(h: str, id_path: Path | None, pins: Pins | None,
             add: Any) -> tuple[PublicIdentity | None, str, str]:
    """(key to verify with, signatures status, key source) for hospital ``h``."""
    beside = None
    if id_path is not None:
        try:
            beside = read_public_identity(id_path)
        except (LedgerError, ConfigError) as exc:
            add("bad-identity", str(exc))
        if beside is not None and beside.hospital != h:
            add("identity-mismatch", f"identity file names hospital {beside.hospital!r}")
    if pins is not None:
        pinned = pins.members.get(h)
        if pinned is None:
            add("not-pinned", f"hospital is not in the pinned federation {pins.source}")
            return None, UNCHECKED, str(pins.source)
        if beside is not None and beside.sign_public != pinned.sign_public:
            add("identity-not-pinned", f"{id_path} is not the key pinned in {pins.source} "
                "(swapped identity file)")
        return pinned, PINNED, str(pins.source)
    if beside is None:
        if id_path is None:
            add("missing-identity", "no public identity to verify signatures against")
        return None, UNCHECKED, ""
    return beside, UNPINNED, str(id_path)


def _anchor_status(h: str, anchors: Anchors | None, key: bytes | None) -> tuple[str, str]:
    if anchors is None or h not in anchors.heads:
        return NOT_ANCHORED, ""
    if h in anchors.receipts:
        return (SIGNED_RECEIPT if key is not None else RECEIPT_UNVERIFIED), str(anchors.source)
    return UNSIGNED, str(anchors.source)


def audit_hospital(h: str, ledger: Path | None, identity: Path | None, pins: Pins | None,
                   anchors: Anchors | None, aggregator_public: bytes | None, *,
                   recompute: bool = True) -> HospitalAudit:
    """Everything checked for hospital ``h`` (see module doc)."""
    out: list[Finding] = []

    def add(kind: str, msg: str, seq: int | None = None) -> None:
        out.append(Finding(h, kind, msg, seq))

    key, sig_status, key_src = _key_for(h, identity, pins, add)
    anchor = anchors.heads.get(h) if anchors is not None else None
    lines: list[tuple[int, str]] = []
    if ledger is None:
        add("missing-ledger", "no ledger file, although this hospital should have one "
            "(pinned federation, identity file, anchor or node state names it)")
    else:
        try:
            lines = read_lines(ledger)
        except LedgerError as exc:
            add("unreadable", str(exc))
        else:
            if not lines:
                add("empty-ledger", "the ledger holds no entry (emptied?): nothing to verify")
    check: LedgerCheck | None = None
    if lines:
        check = check_lines(h, lines, key, anchor, recompute=recompute)
        out.extend(check.findings)
    elif anchor is not None and ledger is not None:
        out.extend(check_entries(h, [], key, anchor, recompute=False,
                                 report_missing_key=False).findings)
    a_status, a_src = _anchor_status(h, anchors, aggregator_public)
    chain_kinds = {"sequence", "chain-break", "hash-mismatch", "malformed"}
    return HospitalAudit(
        hospital=h, ledger=str(ledger) if ledger else "", entries=len(lines),
        signatures=sig_status, key_source=key_src,
        chain=bool(lines) and not any(f.kind in chain_kinds for f in out),
        anchor=a_status, anchor_source=a_src,
        anchored_entries=check.anchored_entries if check and anchor is not None else None,
        recomputed=bool(check and check.recomputed), epsilon=check.epsilon if check else None,
        independent_epsilon=check.independent_epsilon if check else None,
        max_epsilon_diff=check.max_epsilon_diff if check else None,
        carried_runs=check.carried_runs if check else 0, findings=tuple(out))


def audit_run(path: Path, anchors: Anchors | None, pins: Pins | None, *,
              recompute: bool = True,
              aggregator_public: bytes | None = None) -> AuditResult:
    """Audit every ledger under ``path`` against ``pins`` and ``anchors``."""
    ledgers, ids, folder = _locate(Path(path))
    key = aggregator_public if aggregator_public is not None else (
        pins.aggregator_sign_public if pins is not None else None)
    expected = set(ledgers) | set(ids)
    if Path(path).is_file():  # one ledger file: that hospital only
        expected = set(ledgers)
    elif anchors is not None:
        expected |= set(anchors.heads)
    if pins is not None and pins.run_scope and not Path(path).is_file():
        expected |= set(pins.members)
    node = _node_hospital(folder)
    if node is not None and not Path(path).is_file():
        expected.add(node)
    top: list[Finding] = []
    if not expected:
        top.append(Finding(str(path), "no-ledger", "no <hospital>.jsonl ledger files found"))
    receipts = dict(anchors.receipts) if anchors is not None else {}
    if receipts and key is not None:
        top.extend(Finding(h, k, m) for h, k, m in audit_receipts(anchors.heads, receipts, key))
    hosp = tuple(audit_hospital(h, ledgers.get(h), ids.get(h), pins, anchors, key,
                                recompute=recompute) for h in sorted(expected))
    findings = tuple(top) + tuple(f for ha in hosp for f in ha.findings)
    return AuditResult(findings, len(ledgers),
                       None if findings else sum(ha.entries for ha in hosp),
                       receipts_verified=bool(receipts) and key is not None,
                       receipts_unverified=bool(receipts) and key is None,
                       hospitals=hosp, pins=str(pins.source) if pins else "")


def _relevant(pins: Pins | None, path: Path) -> Pins | None:
    """A federation file found in a parent folder that pins none of the hospitals present
    belongs to another deployment: ignored (the audit then says the keys are NOT pinned)."""
    if pins is None or pins.run_scope:
        return pins
    ledgers, ids, folder = _locate(path)
    present = set(ledgers) | set(ids) | {_node_hospital(folder)} - {None}
    return None if present and present.isdisjoint(pins.members) else pins


def audit(path: Path, anchors: Mapping[str, LedgerHead] | None = None,
          *, recompute: bool = True, receipts: Mapping[str, Mapping] | None = None,
          aggregator_public: bytes | None = None,
          pins: Pins | None | bool = True) -> list[Finding]:
    """Findings for every ledger under ``path`` (an empty list means clean); ``anchors``
    and their ``receipts`` as given (no default anchors: see :func:`run_audit`); ``pins``:
    True finds the federation file (:func:`fedrx.dp.pins.find_pins`), None/False uses the
    identity files, or the :class:`Pins` to use."""
    a = Anchors(dict(anchors), dict(receipts or {}), Path("<anchors>")) if anchors else None
    if pins is True:
        pins = _relevant(find_pins(Path(path)), Path(path))
    return list(audit_run(Path(path), a, pins or None, recompute=recompute,
                          aggregator_public=aggregator_public).findings)


def run_audit(path: Path, anchors_path: Path | None = None,
              federation_path: Path | None = None, *, recompute: bool = True) -> AuditResult:
    """``fedrx audit PATH [--anchors FILE] [--federation FILE]`` without any output: the
    pinned federation (:func:`fedrx.dp.pins.find_pins`), the anchors (``anchors_path``, else
    :func:`fedrx.dp.anchors.find_anchors`), then every ledger. Raises
    :class:`~fedrx.errors.LedgerError` on unusable input (an unreadable anchors or
    federation file)."""
    pins = find_pins(Path(path), anchors_path, federation_path)
    if federation_path is None:
        pins = _relevant(pins, Path(path))
    anchors = anchors_file(anchors_path) if anchors_path else find_anchors(Path(path))
    return audit_run(Path(path), anchors, pins, recompute=recompute)


def find_aggregator_key(anchors_path: Path | None,
                        federation_path: Path | None = None) -> bytes | None:
    """The aggregator's pinned receipt key (32 bytes) from ``federation_path``, else from
    the first federation file beside the anchors file or up to 3 folders above it; None
    when there is none (or the file is a simulation's, which pins no aggregator)."""
    if federation_path is not None:
        return load_pins(Path(federation_path)).aggregator_sign_public
    if anchors_path is None:
        return None
    folder = Path(anchors_path).resolve().parent
    pins = find_pins(folder)
    return pins.aggregator_sign_public if pins else None
