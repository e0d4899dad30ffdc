"""The pinned keys the audit checks ledgers against (never the identity beside a ledger).

A federation file is either

* a deployment's ``federation.json`` (``fedrx-deployment/2``, written by ``fedrx certs
  init``, copied to every site): its ``federation`` member pins every hospital's Ed25519
  ``sign_public`` and ``aggregator_sign_public`` pins the aggregator's receipt key; or
* a simulation's ``DIR/federation.json`` (``fedrx-federation/1``,
  :meth:`~fedrx.secagg.identity.Federation.to_json`, written by ``fedrx simulate`` with DP
  on): the keys of the hospitals that ran in it, no aggregator key (no receipts).

:func:`find_pins` looks for one at ``--federation FILE``, else ``federation.json`` or
``certs/federation.json`` in the audited folder or one of its 3 parent folders, else
beside the anchors file or up to 3 folders above it. A federation file found IN the audited
folder is that run's own (``run_scope``): every member must have a ledger there.

The pin is only as trustworthy as the copy of the federation file: an auditor passes the
copy that was distributed to the sites (``--federation``), not one from the folder under
audit, when the folder itself may have been rewritten.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fedrx.atomic import atomic_write_text
from fedrx.errors import ConfigError, LedgerError
from fedrx.secagg.identity import Federation, PublicIdentity

RUN_FEDERATION = "federation.json"
DEPLOYMENT_FORMAT = "fedrx-deployment/2"
FEDERATION_FORMAT = "fedrx-federation/1"


@dataclass(frozen=True)
class Pins:
    """Pinned hospital keys (``members``), the aggregator's receipt key (32 bytes, None
    for a simulation), the file they come from, and whether that file is the audited run's
    own (every member must then have a ledger)."""

    members: Mapping[str, PublicIdentity]
    source: Path
    aggregator_sign_public: bytes | None = None
    run_scope: bool = field(default=False)


def write_run_federation(run_dir: Path, federation: Federation) -> Path:
    """``DIR/federation.json``: the simulation's pinned keys (atomic)."""
    p = Path(run_dir) / RUN_FEDERATION
    atomic_write_text(p, json.dumps(federation.to_json(), indent=1, sort_keys=True) + "\n")
    return p


def load_pins(path: Path, *, run_scope: bool = False) -> Pins:
    """Read a deployment or simulation federation file; :class:`LedgerError` (one line)
    when it is unreadable or neither."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LedgerError(f"federation file {path} not found") from None
    except (OSError, ValueError) as exc:
        raise LedgerError(f"federation file {path} is unreadable: {exc}") from None
    fmt = obj.get("format") if isinstance(obj, dict) else None
    key = None
    try:
        if fmt == DEPLOYMENT_FORMAT:
            fed = Federation.from_json(obj.get("federation"))
            key = bytes.fromhex(obj["aggregator_sign_public"])
            if len(key) != 32:
                raise ValueError
        elif fmt == FEDERATION_FORMAT:
            fed = Federation.from_json(obj)
        else:
            raise LedgerError(f"federation file {path} is neither {DEPLOYMENT_FORMAT} nor "
                              f"{FEDERATION_FORMAT}")
    except (ConfigError, KeyError, TypeError, ValueError):
        raise LedgerError(f"federation file {path}: malformed pinned keys "
                          "(federation members or aggregator_sign_public)") from None
    return Pins(dict(fed.members), path, key, run_scope)


def _candidates(folder: Path) -> list[Path]:
    out: list[Path] = []
    for d in [folder, *list(folder.parents)[:3]]:
        out += [d / RUN_FEDERATION, d / "certs" / RUN_FEDERATION]
    return out


def find_pins(audit_path: Path, anchors_path: Path | None = None,
              federation_path: Path | None = None) -> Pins | None:
    """The pinned federation for auditing ``audit_path`` (see module doc); None if none."""
    if federation_path is not None:
        fp = Path(federation_path)
        own = audit_path.is_dir() and fp.resolve().parent == Path(audit_path).resolve()
        return load_pins(fp, run_scope=own)
    base = Path(audit_path).resolve()
    folder = base if base.is_dir() else base.parent.parent  # a ledger file: DIR/ledger/h
    cands = _candidates(folder)
    if anchors_path is not None:
        cands += _candidates(Path(anchors_path).resolve().parent)
    for c in cands:
        if c.is_file():
            return load_pins(c, run_scope=c.parent == folder)
    return None
