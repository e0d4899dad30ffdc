"""A hospital node's state on disk: ``OUT/state.json`` (last round seen, receipts, round
log, kept result), ``OUT/receipts.jsonl`` (verified signed receipts) and the kept DP result
(:class:`fedrx.protocol.hospital.KeptResult`).

``OUT/kept_result.npy`` holds the vector (float64, written atomically, read with
``allow_pickle=False``); its round, model hash, participants, ledger head, re-use round and
the vector's SHA-256 are the ``kept`` object of ``OUT/state.json``. On load the vector must
match its hash and the ledger head must be a ``trained`` entry of this hospital's ledger
for that round (the result was charged), else the kept result is dropped: the next round
trains and pays again, which is always safe.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from fedrx.atomic import atomic_write_bytes, npy_bytes
from fedrx.errors import ConfigError
from fedrx.protocol.hospital import KeptResult

KEPT_FILE = "kept_result.npy"


def read_node_state(out: Path | None) -> dict[str, Any]:
    """``OUT/state.json`` ({} without ``out`` or before the first save)."""
    if out is None or not (out / "state.json").is_file():
        return {}
    try:
        return dict(json.loads((out / "state.json").read_text()))
    except (OSError, ValueError, TypeError):
        raise ConfigError(f"node state {out / 'state.json'} is unreadable") from None


def read_signed_receipts(out: Path | None) -> list[dict[str, Any]]:
    """The verified receipts kept in ``OUT/receipts.jsonl`` (oldest first)."""
    p = out / "receipts.jsonl" if out is not None else None
    if p is None or not p.is_file():
        return []
    try:
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        raise ConfigError(f"node receipts {p} are unreadable") from None


def save_kept(out: Path, kept: KeptResult | None, written: str) -> tuple[dict[str, Any] | None,
                                                                         str]:
    """Write ``kept``'s vector (only when it changed: ``written`` is the hash last written)
    or remove the file when there is none. Returns (the ``kept`` object for state.json, the
    vector hash now on disk)."""
    path = out / KEPT_FILE
    if kept is None:
        path.unlink(missing_ok=True)
        return None, ""
    data = npy_bytes(np.asarray(kept.vector, dtype=np.float64))
    digest = hashlib.sha256(data).hexdigest()
    if digest != written or not path.is_file():
        atomic_write_bytes(path, data)
    return kept.meta() | {"vector_sha256": digest}, digest


def load_kept(out: Path, meta: Any, ledger: list[dict[str, Any]]) -> KeptResult | None:
    """The kept result recorded in state.json (``meta``), or None if absent or not valid."""
    if not isinstance(meta, dict):
        return None
    try:
        data = (out / KEPT_FILE).read_bytes()
        if hashlib.sha256(data).hexdigest() != meta["vector_sha256"]:
            return None
        vector = np.load(io.BytesIO(data), allow_pickle=False)
        kept = KeptResult(int(meta["round"]), str(meta["model_hash"]),
                          tuple(sorted(str(p) for p in meta["participants"])), vector,
                          int(meta["n_examples"]),
                          None if meta["loss"] is None else float(meta["loss"]),
                          str(meta["ledger_head"]), int(meta["reused_in"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    charged = any(e.get("entry_hash") == kept.ledger_head and e.get("status") == "trained"
                  and int(e.get("round", -1)) == kept.round
                  and e.get("model_hash") == kept.model_hash for e in ledger)
    if vector.dtype != np.float64 or vector.ndim != 1 or not charged:
        return None
    return kept
