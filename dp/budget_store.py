"""A per-dataset privacy budget carried across runs on the same patients.

Every run that trains with DP on a hospital's patients is charged to ONE budget: a new run
starts from what earlier runs already spent on those patients and refuses past the budget.

Store layout (``ROOT``: :func:`resolve_store`)::

    ROOT/salt                       32 random bytes (os.urandom), made on first use
    ROOT/records/<record>.json      one record per (run, hospital)

A record (``fedrx-budget-record/1``) holds ``patients``: the sorted HMAC-SHA256 (keyed by
``salt``, first 32 hex digits) of each training patient's canonical record (patient id and
every visit, :func:`patient_bytes` is up to the caller), and ``mechanisms``: the run's own
charged ``[[sample_rate, noise_multiplier, steps], ...]``, rewritten (atomically) on every
ledger append, so a run that crashes stays charged for what its ledger holds. A new run of a
hospital carries in the mechanisms of EVERY record that shares at least one patient with it:
an upper bound on what any one of its patients has spent (each patient's own history is a
subset). The carried mechanisms go into every entry of the new ledger (signed key
``carried``, :mod:`fedrx.dp.ledger`) and into its accountant and calibration.

``DIR/budget/<hospital>.json`` (``fedrx-carry/1``) tells the run's ledger what it carries
and which record to keep up to date.

What this does NOT cover (threat_model.md): a patient whose records differ in any way
between two runs (another export, another filter) is a different patient here; a store
that is deleted, or a run pointed at another store, starts from zero; the store guards an
honest operator against accidental overspending, not a malicious one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrx.atomic import atomic_write_bytes, atomic_write_text
from fedrx.dp.accountants.mechanism import Mechanism
from fedrx.errors import ConfigError, LedgerError

STORE_ENV = "FEDRX_BUDGET_STORE"
AUTO = "auto"
"""The ``budget_store`` value for the default store beside the run folder."""
DEFAULT_DIRNAME = ".fedrx-budget"
RECORD_FORMAT = "fedrx-budget-record/1"
CARRY_FORMAT = "fedrx-carry/1"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def resolve_store(configured: str | os.PathLike | None, out_dir: Path) -> tuple[Path, bool]:
    """(store folder, chosen explicitly): ``configured`` (``budget_store`` setting) if
    given and not ``"auto"``, else the ``FEDRX_BUDGET_STORE`` environment variable, else
    (not explicit) ``<parent of out_dir>/.fedrx-budget`` (runs kept side by side, e.g.
    ``runs/a`` and ``runs/b``, share one budget)."""
    if configured and str(configured) != AUTO:
        return Path(configured), True
    env = os.environ.get(STORE_ENV, "")
    if env:
        return Path(env), True
    return Path(out_dir).resolve().parent / DEFAULT_DIRNAME, False


def check_delta(delta: float, n_patients: int, hospital: str) -> None:
    """``delta < 1/N`` for a hospital of ``N`` training patients, else one-line ConfigError.

    Why: (epsilon, delta)-DP permits a mechanism that publishes one random patient's records
    outright with probability delta per patient; with ``delta >= 1/N`` that leaks a whole
    patient's records in expectation, whatever epsilon says."""
    if n_patients >= 1 and not delta < 1.0 / n_patients:
        raise ConfigError(
            f"delta {delta:g} is not below 1/N = 1/{n_patients} for hospital {hospital} "
            f"({n_patients} training patients): with delta >= 1/N, (epsilon, delta)-DP allows "
            "publishing a whole patient's records; choose delta < 1/N (default: 10x below)")


def mechanisms_json(mechs: Sequence[Mechanism]) -> list[list[float | int]]:
    """``[[sample_rate, noise_multiplier, steps], ...]`` (as records and ``carried`` hold)."""
    return [[float(m.sample_rate), float(m.noise_multiplier), int(m.steps)] for m in mechs]


def mechanisms_from_json(obj: Any) -> list[Mechanism]:
    """Inverse of :func:`mechanisms_json`; :class:`LedgerError` for anything malformed."""
    try:
        return [Mechanism(float(q), float(s), int(n)) for q, s, n in obj]
    except (TypeError, ValueError, ConfigError):
        raise LedgerError("malformed list of mechanisms") from None


@dataclass(frozen=True)
class Carry:
    """What a run's ledger carries in: earlier runs' ``mechanisms`` on the same patients,
    the ``runs`` (record ids) they come from, and the ``record`` this run's own charges are
    written to (None: nothing to keep up to date)."""

    hospital: str
    mechanisms: tuple[Mechanism, ...]
    runs: tuple[str, ...]
    record: Path | None = None

    def entry_value(self) -> dict[str, Any]:
        """The signed ``carried`` key of every ledger entry."""
        return {"mechanisms": mechanisms_json(self.mechanisms), "runs": list(self.runs)}


def carry_path(run_dir: Path, hospital: str) -> Path:
    if not _SAFE.match(hospital):
        raise ConfigError(f"hospital id {hospital!r} is not a safe file name")
    return Path(run_dir) / "budget" / f"{hospital}.json"


def write_carry(run_dir: Path, carry: Carry) -> Path:
    p = carry_path(run_dir, carry.hospital)
    atomic_write_text(p, json.dumps({
        "format": CARRY_FORMAT, "hospital": carry.hospital, **carry.entry_value(),
        "record": str(carry.record) if carry.record else None}, indent=1) + "\n")
    return p


def read_carry(run_dir: Path, hospital: str) -> Carry | None:
    """``DIR/budget/<hospital>.json`` (None when absent)."""
    p = carry_path(run_dir, hospital)
    if not p.is_file():
        return None
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
        if obj.get("format") != CARRY_FORMAT or obj.get("hospital") != hospital:
            raise ValueError
        rec = obj.get("record")
        return Carry(hospital, tuple(mechanisms_from_json(obj["mechanisms"])),
                     tuple(str(r) for r in obj["runs"]), Path(rec) if rec else None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, LedgerError):
        raise LedgerError(f"budget carry file {p} is unreadable or malformed") from None


def record_charges(record: Path, mechanisms: Sequence[Mechanism], epsilon: float,
                   head: str) -> None:
    """Rewrite a store record's own charges (called by the ledger after every append)."""
    try:
        obj = json.loads(Path(record).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LedgerError(f"budget store record {record} is unreadable: {exc}") from None
    obj.update(mechanisms=mechanisms_json(mechanisms), epsilon=float(epsilon), head=head)
    try:
        atomic_write_text(Path(record), json.dumps(obj, indent=1) + "\n")
    except OSError as exc:
        raise LedgerError(f"budget store record {record}: cannot write "
                          f"({exc.strerror or type(exc).__name__})") from None


class BudgetStore:
    """The store under ``root`` (created on first use)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _salt(self) -> bytes:
        p = self.root / "salt"
        if not p.is_file():
            try:
                atomic_write_bytes(p, os.urandom(32), mode=0o600)
            except OSError as exc:
                raise ConfigError(f"budget store {self.root}: cannot write there "
                                  f"({exc.strerror or type(exc).__name__})") from None
        try:
            salt = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"budget store {self.root}: cannot read its salt "
                              f"({exc.strerror or type(exc).__name__})") from None
        if len(salt) != 32:
            raise LedgerError(f"budget store {self.root}: salt is not 32 bytes")
        return salt

    def patient_keys(self, patients: Iterable[bytes]) -> list[str]:
        """Sorted keyed fingerprints of the patients' canonical records."""
        salt = self._salt()
        return sorted({hmac.new(salt, p, hashlib.sha256).hexdigest()[:32] for p in patients})

    def records(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted((self.root / "records").glob("*.json")):
            try:
                obj = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise LedgerError(f"budget store record {p} is unreadable") from None
            if isinstance(obj, dict) and obj.get("format") == RECORD_FORMAT:
                out.append(obj | {"id": p.stem})
        return out

    def prior(self, keys: Sequence[str]) -> tuple[list[Mechanism], list[str]]:
        """(mechanisms, record ids) of every record sharing a patient with ``keys``."""
        mine = set(keys)
        mechs: list[Mechanism] = []
        runs: list[str] = []
        for r in self.records():
            if mine.isdisjoint(r.get("patients", ())):
                continue
            own = mechanisms_from_json(r.get("mechanisms", []))
            if own:
                mechs.extend(own)
                runs.append(r["id"])
        return mechs, runs

    def open_run(self, run_dir: Path, hospital: str, keys: Sequence[str],
                 prior: tuple[list[Mechanism], list[str]] | None = None) -> Carry:
        """Register a run of ``hospital`` on ``keys`` and write its carry file; returns the
        carry (``prior``: a result of :meth:`prior` already computed)."""
        mechs, runs = prior if prior is not None else self.prior(keys)
        rid = hashlib.sha256(f"{Path(run_dir).resolve()}\0{hospital}\0{os.urandom(8).hex()}"
                             .encode()).hexdigest()[:20]
        rec = self.root / "records" / f"{rid}.json"
        carry = Carry(hospital, tuple(mechs), tuple(runs), rec)
        try:
            atomic_write_text(rec, json.dumps({
                "format": RECORD_FORMAT, "hospital": hospital,
                "run": str(Path(run_dir).resolve()), "patients": list(keys),
                "mechanisms": [], "epsilon": 0.0, "head": ""}) + "\n")
            write_carry(run_dir, carry)
        except OSError as exc:
            raise ConfigError(f"budget store {self.root}: cannot write a record "
                              f"({exc.strerror or type(exc).__name__})") from None
        return carry
