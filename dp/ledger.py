"""Append-only, signed, hash-chained privacy ledger: one JSONL file per hospital.

Format (``fedrx-ledger/1``; full description for auditors in docs/ledger.md). Each line
is one JSON object (an *entry*) with these keys:

``format, seq, round, hospital, privacy_unit ("patient"), status ("trained"|"refused"),
sample_rate, noise_multiplier, max_grad_norm, steps, delta, epsilon (cumulative, after this
entry), budget_epsilon, accountant, library_versions, model_hash, prev_hash, entry_hash,
signature``.

* ``signature`` = hex Ed25519 signature by the hospital's identity key over
  ``canonical(entry without "signature" and "entry_hash")``;
* ``entry_hash`` = hex SHA-256 of ``canonical(entry without "entry_hash")`` (so it covers
  the signature);
* ``prev_hash`` = the previous entry's ``entry_hash``; ``GENESIS_HASH`` (64 zeros) for
  ``seq`` 0.
* ``canonical(obj)`` = :func:`fedrx.canonical.canonical_json`: ``json.dumps(obj,
  sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
  .encode("utf-8")``; floats are written in Python's
  shortest round-trip ``repr`` form.

Durability: every append rewrites the whole file to a temp file in the same folder,
fsyncs it, renames it over the ledger and fsyncs the folder. A crash at any point leaves
either the old or the new complete file, never a half-written entry (a leftover
``.<name>.*`` temp file is ignored and may be deleted).

Every line must be exactly ``canonical(parsed line)``: no duplicate key, no other spacing or
key order (:func:`parse_line` rejects duplicate keys; the audit reports non-canonical lines).

A ledger may carry the charges of EARLIER runs on the same patients
(:mod:`fedrx.dp.budget_store`): then every entry has the signed key ``carried``
(``{"mechanisms": [[q, sigma, steps], ...], "runs": [record ids]}``), the same in every
entry, and ``epsilon`` composes the carried mechanisms with the ledger's own.

Run-directory layout (written by simulate/nodes, read by audit and report)::

    DIR/ledger/<hospital>.jsonl
    DIR/identities/<hospital>.pub.json      (PublicIdentity.to_json())
    DIR/federation.json                     (simulate: the pinned keys, fedrx-federation/1)
    DIR/budget/<hospital>.json              (simulate: what the budget store carried in)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrx.atomic import atomic_write_bytes
from fedrx.canonical import canonical_json
from fedrx.dp.accountants.mechanism import Mechanism
from fedrx.dp.accountants.registry import compute_epsilon
from fedrx.dp.budget_store import Carry, mechanisms_from_json, read_carry, record_charges
from fedrx.errors import ConfigError, LedgerError
from fedrx.secagg.identity import Identity, PublicIdentity

FORMAT = "fedrx-ledger/1"
GENESIS_HASH = "0" * 64
PRIVACY_UNIT = "patient"
STATUSES = ("trained", "refused")
ENTRY_KEYS = frozenset({
    "format", "seq", "round", "hospital", "privacy_unit", "status", "sample_rate",
    "noise_multiplier", "max_grad_norm", "steps", "delta", "epsilon", "budget_epsilon",
    "accountant", "library_versions", "model_hash", "prev_hash", "entry_hash", "signature",
})
_HOSPITAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def signing_bytes(entry: Mapping[str, Any]) -> bytes:
    """What the signature covers: the entry without ``signature`` and ``entry_hash``."""
    return canonical_json({k: v for k, v in entry.items()
                           if k not in ("signature", "entry_hash")})


def compute_entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 hex of the entry without ``entry_hash`` (signature included)."""
    return hashlib.sha256(
        canonical_json({k: v for k, v in entry.items() if k != "entry_hash"})).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries the DP guarantee and its accounting depend on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("fedrx", "opacus", "torch", "dp-accounting", "cryptography", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def check_hospital_id(hospital: str) -> str:
    """Hospital ids become file names: 1-64 of ``[A-Za-z0-9._-]``, not starting with a dot."""
    if not _HOSPITAL_RE.match(hospital):
        raise ConfigError(f"hospital id {hospital!r} is not a safe file name")
    return hospital


def ledger_path(run_dir: Path, hospital: str) -> Path:
    return Path(run_dir) / "ledger" / f"{check_hospital_id(hospital)}.jsonl"


def identity_path(run_dir: Path, hospital: str) -> Path:
    return Path(run_dir) / "identities" / f"{check_hospital_id(hospital)}.pub.json"


def write_public_identity(run_dir: Path, public: PublicIdentity) -> Path:
    """Write ``DIR/identities/<hospital>.pub.json`` (atomic)."""
    p = identity_path(run_dir, public.hospital)
    atomic_write_bytes(p, (json.dumps(public.to_json(), sort_keys=True, indent=1) + "\n")
                       .encode("utf-8"))
    return p


def read_public_identity(path: Path) -> PublicIdentity:
    try:
        return PublicIdentity.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
    except OSError as exc:
        raise LedgerError(f"cannot read identity {path}: {exc.strerror}") from None
    except json.JSONDecodeError:
        raise LedgerError(f"identity {path} is not JSON") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise LedgerError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise LedgerError(f"{name} is not a JSON number")


def loads_strict(line: str, *, duplicates: bool = False) -> Any:
    """``json.loads`` refusing NaN/Infinity (:class:`LedgerError`) and, unless
    ``duplicates``, duplicate keys at any depth."""
    try:
        if duplicates:
            return json.loads(line, parse_constant=_no_constant)
        return json.loads(line, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (json.JSONDecodeError, RecursionError):
        raise LedgerError("not a JSON object") from None


def parse_line(line: str) -> dict[str, Any]:
    """One ledger line as a JSON object; :class:`LedgerError` for anything else, a duplicate
    key at any depth and NaN/Infinity included (JSON parsers disagree on which duplicate
    wins; canonical JSON has no NaN)."""
    obj = loads_strict(line)
    if not isinstance(obj, dict):
        raise LedgerError("not a JSON object")
    return obj


def is_canonical(line: str, entry: Mapping[str, Any]) -> bool:
    """Whether ``line`` is exactly the canonical encoding of its parsed ``entry``."""
    try:
        return canonical_json(entry) == line.encode("utf-8")
    except ValueError:  # NaN / infinity are not canonical JSON
        return False


def read_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of every non-blank line of a ledger file ([] when absent)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise LedgerError(f"cannot read ledger {path}: {exc}") from None
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_entries(path: Path) -> list[dict[str, Any]]:
    """Parse a ledger file into entries (no verification; see :mod:`fedrx.dp.audit`)."""
    out = []
    for lineno, line in read_lines(path):
        try:
            out.append(parse_line(line))
        except LedgerError as exc:
            raise LedgerError(f"{path}:{lineno}: {exc}") from None
    return out


def carried_of(entry: Mapping[str, Any]) -> list[Mechanism]:
    """The earlier runs' mechanisms an entry carries ([] without ``carried``); raises
    :class:`LedgerError` when the key is malformed."""
    c = entry.get("carried")
    if c is None:
        return []
    if not isinstance(c, Mapping) or not isinstance(c.get("runs"), list):
        raise LedgerError("malformed 'carried' key")
    return mechanisms_from_json(c.get("mechanisms"))


def mechanism_of(entry: Mapping[str, Any]) -> Mechanism | None:
    """The DP mechanism an entry charges (None for refused or zero-step entries)."""
    if entry.get("status") != "trained" or int(entry.get("steps", 0)) == 0:
        return None
    return Mechanism(float(entry["sample_rate"]), float(entry["noise_multiplier"]),
                     int(entry["steps"]))


@dataclass(frozen=True)
class LedgerHead:
    """What a round receipt anchors: number of entries and the last ``entry_hash``."""

    length: int
    head_hash: str


class PrivacyLedger:
    """One hospital's ledger file, opened for appending with its signing identity.

    Invariant: the file always holds a complete, correctly chained list of entries; the
    signing key is used only through ``Identity.sign`` and never written anywhere.
    """

    def __init__(self, path: Path, identity: Identity, carry: Carry | None = None) -> None:
        self.path = Path(path)
        self.identity = identity
        check_hospital_id(identity.hospital)
        self._entries = read_entries(self.path)
        for e in self._entries:
            if e.get("hospital") != identity.hospital:
                raise LedgerError(f"{self.path}: holds entries of another hospital")
        self.carry = carry
        self._carried_value = carry.entry_value() if carry is not None else (
            self._entries[0].get("carried") if self._entries else None)
        if self._entries and self._entries[0].get("carried") != self._carried_value:
            raise LedgerError(f"{self.path}: its entries carry other earlier runs than the "
                              "budget store says")
        self._carried = list(carry.mechanisms) if carry is not None else (
            carried_of(self._entries[0]) if self._entries else [])

    @staticmethod
    def in_run_dir(run_dir: Path, identity: Identity) -> PrivacyLedger:
        """Open ``DIR/ledger/<hospital>.jsonl`` and (re)write the public identity beside it;
        with ``DIR/budget/<hospital>.json`` (:mod:`fedrx.dp.budget_store`) the ledger carries
        the earlier runs' charges on the same patients and keeps its store record current."""
        write_public_identity(run_dir, identity.public)
        return PrivacyLedger(ledger_path(run_dir, identity.hospital), identity,
                             read_carry(run_dir, identity.hospital))

    @property
    def entries(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self._entries]

    def head(self) -> LedgerHead:
        last = self._entries[-1]["entry_hash"] if self._entries else GENESIS_HASH
        return LedgerHead(len(self._entries), last)

    def own_history(self) -> list[Mechanism]:
        """Every mechanism this ledger charged (without the carried earlier runs)."""
        return [m for m in (mechanism_of(e) for e in self._entries) if m is not None]

    def history(self) -> list[Mechanism]:
        """Every charged mechanism so far, the carried earlier runs' first (what the
        accountant replays and calibration starts from)."""
        return [*self._carried, *self.own_history()]

    def append(
        self,
        *,
        round: int,
        mechanism: Mechanism | None,
        max_grad_norm: float,
        delta: float,
        accountant: str,
        model_hash: str,
        budget_epsilon: float,
        status: str = "trained",
        distributed: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Sign and durably append one entry; returns it.

        ``epsilon`` is recomputed from the WHOLE history plus ``mechanism`` (None or
        ``status="refused"`` records a refused round: steps 0, epsilon unchanged).
        Rounds must strictly increase. ``distributed``: distributed DP's share description
        (:meth:`fedrx.dp.distributed.sizing.ShareSizing.describe`), signed as the key
        ``distributed``; the entry's ``noise_multiplier`` is then its charged sigma.
        """
        if status not in STATUSES:
            raise LedgerError(f"status must be one of {STATUSES}")
        if self._entries and round <= int(self._entries[-1]["round"]):
            raise LedgerError(f"round {round} is not after the last recorded round "
                              f"{self._entries[-1]['round']}")
        hist = self.history()
        if status == "trained":
            if mechanism is None or mechanism.steps < 1:
                raise LedgerError("a trained entry needs a mechanism with steps >= 1")
            hist.append(mechanism)
        eps = compute_epsilon(hist, delta, accountant)
        m = mechanism
        entry: dict[str, Any] = {
            "format": FORMAT,
            "seq": len(self._entries),
            "round": int(round),
            "hospital": self.identity.hospital,
            "privacy_unit": PRIVACY_UNIT,
            "status": status,
            "sample_rate": float(m.sample_rate) if m else 0.0,
            "noise_multiplier": float(m.noise_multiplier) if m else 0.0,
            "max_grad_norm": float(max_grad_norm),
            "steps": int(m.steps) if (m and status == "trained") else 0,
            "delta": float(delta),
            "epsilon": float(eps),
            "budget_epsilon": float(budget_epsilon),
            "accountant": accountant,
            "library_versions": library_versions(),
            "model_hash": str(model_hash),
            "prev_hash": self.head().head_hash,
        }
        if self._carried_value is not None:
            entry["carried"] = self._carried_value
        if distributed is not None:  # distributed DP: the shares behind the charged sigma
            entry["distributed"] = dict(distributed)
        entry["signature"] = self.identity.sign(signing_bytes(entry)).hex()
        entry["entry_hash"] = compute_entry_hash(entry)
        new = [*self._entries, entry]
        atomic_write_bytes(self.path, b"".join(canonical_json(e) + b"\n" for e in new))
        self._entries = new
        if self.carry is not None and self.carry.record is not None:
            record_charges(self.carry.record, self.own_history(), eps, entry["entry_hash"])
        return dict(entry)
