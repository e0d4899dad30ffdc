"""The aggregator's checkpoint store: the server state after every round, atomically.

Layout: ``CHECKPOINT/round-NNNNNN/`` (``weights.npy``, FedAdam moments, ``state.json``,
named blobs) and ``CHECKPOINT/LATEST`` naming the newest complete one; ``STARTED`` holds
the number of the round in flight (burnt on restart: hospitals refuse a round number they
have seen). Every ``.npy`` is read with ``allow_pickle=False``; every value read back is
checked (format, types, the weights against their recorded model hash).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from fedrx.atomic import atomic_write_bytes, atomic_write_npy, atomic_write_text, npy_bytes
from fedrx.canonical import json_default
from fedrx.errors import ConfigError
from fedrx.protocol.aggregator import ServerState
from fedrx.protocol.optim import ServerOptimizer
from fedrx.protocol.task import model_hash

CKPT_FORMAT = "fedrx-checkpoint/1"
SELECTED_BLOB = "selected_model.npy"
STARTED = "STARTED"

def save_checkpoint(folder: Path, state: ServerState, rounds: list[dict[str, Any]],
                    meta: dict[str, Any], blobs: dict[str, bytes] | None = None) -> Path:
    """Write ``folder/round-NNNNNN/`` then atomically point ``folder/LATEST`` at it.

    Files: ``weights.npy`` (float32), ``opt_m.npy``/``opt_v.npy`` (FedAdam moments, if
    any), ``state.json`` (round, session id, model hash, optimizer settings, the round
    records so far, ``meta``) and ``blobs`` (name -> bytes, e.g. the CKKS keyring as a
    ``fedrx.v1.CkksKeyring`` protobuf: public data and sealed packages only). All ``.npy``
    are written with ``allow_pickle=False``. Older checkpoints are removed after LATEST moves.
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = f"round-{state.round:06d}"
    tmp = folder / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    opt = state.optimizer
    atomic_write_npy(tmp / "weights.npy", state.weights.astype(np.float32))
    if opt.m is not None and opt.v is not None:
        atomic_write_npy(tmp / "opt_m.npy", opt.m)
        atomic_write_npy(tmp / "opt_v.npy", opt.v)
    doc = {"format": CKPT_FORMAT, "round": state.round, "session_id": state.session_id.hex(),
           "model_hash": state.model_hash,
           "optimizer": {"name": opt.name, "lr": opt.lr, "beta1": opt.beta1,
                         "beta2": opt.beta2, "tau": opt.tau, "moments": opt.m is not None},
           "rounds": rounds, "meta": meta, "blobs": sorted(blobs or {})}
    atomic_write_text(tmp / "state.json", json.dumps(doc, default=json_default) + "\n")
    for bname, data in (blobs or {}).items():
        if "/" in bname or bname.startswith("."):
            raise ConfigError(f"invalid checkpoint blob name {bname!r}")
        atomic_write_bytes(tmp / bname, data)
    final = folder / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write_text(folder / "LATEST", name + "\n")
    for old in folder.glob("round-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(folder: Path) -> tuple[ServerState, list[dict[str, Any]],
                                           dict[str, Any]] | None:
    """(state, round records, meta) of the newest complete checkpoint, or None."""
    latest = folder / "LATEST"
    if not latest.is_file():
        return None
    d = folder / latest.read_text().strip()
    try:
        doc = json.loads((d / "state.json").read_text())
        if doc.get("format") != CKPT_FORMAT:
            raise ValueError("format")
        w = np.load(d / "weights.npy", allow_pickle=False)
        o = doc["optimizer"]
        opt = ServerOptimizer(o["name"], lr=o["lr"], beta1=o["beta1"], beta2=o["beta2"],
                              tau=o["tau"])
        if o["moments"]:
            opt.m = np.load(d / "opt_m.npy", allow_pickle=False)
            opt.v = np.load(d / "opt_v.npy", allow_pickle=False)
        state = ServerState(int(doc["round"]), w, opt, bytes.fromhex(doc["session_id"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"checkpoint {d} is unreadable ({type(exc).__name__})") from None
    if w.dtype != np.float32 or w.ndim != 1 or model_hash(w) != doc["model_hash"]:
        raise ConfigError(f"checkpoint {d}: weights do not match the recorded model hash")
    return state, list(doc["rounds"]), dict(doc.get("meta", {}))


def load_blobs(folder: Path, prefix: str) -> dict[str, bytes]:
    """Every blob of the newest checkpoint whose name starts with ``prefix`` (prefix
    removed), as recorded in its ``state.json``."""
    latest = folder / "LATEST"
    if not latest.is_file():
        return {}
    d = folder / latest.read_text().strip()
    try:
        names = json.loads((d / "state.json").read_text()).get("blobs", [])
        return {n[len(prefix):]: (d / n).read_bytes() for n in names
                if isinstance(n, str) and n.startswith(prefix) and "/" not in n}
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(f"checkpoint {d}: blobs unreadable ({type(exc).__name__})") from None


def load_blob(folder: Path, name: str) -> bytes | None:
    """A blob saved with the newest checkpoint (None if there is none)."""
    latest = folder / "LATEST"
    if not latest.is_file():
        return None
    p = folder / latest.read_text().strip() / name
    return p.read_bytes() if p.is_file() else None


SELECTED_BLOB = "selected_model.npy"


def selected_blob(weights: np.ndarray | None) -> dict[str, bytes]:
    """The model of the best-validation round so far, checkpointed with the state."""
    return {} if weights is None else {SELECTED_BLOB: npy_bytes(weights)}


def restore_selected(folder: Path, best: dict[str, Any] | None) -> np.ndarray | None:
    """The checkpointed selected model, checked against the selected round's model hash."""
    if best is None:
        return None
    data = load_blob(folder, SELECTED_BLOB)
    try:
        w = np.load(io.BytesIO(data), allow_pickle=False) if data is not None else None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"checkpoint in {folder}: selected model is unreadable "
                          f"({type(exc).__name__})") from None
    if w is None or model_hash(w) != best["model_hash"]:
        raise ConfigError(f"checkpoint in {folder}: selected model (round {best['round']}) "
                          "is missing or does not match its recorded model hash")
    return w


def read_started(folder: Path) -> int:
    """The round that was in flight at the last stop (0 if none recorded)."""
    p = folder / STARTED
    if not p.is_file():
        return 0
    text = p.read_text().strip()
    if text and not text.isdigit():
        raise ConfigError(f"{p} does not hold a round number")
    return int(text or 0)


def write_started(folder: Path, rnd: int) -> None:
    """Record that round ``rnd`` is starting (before anything is sent for it)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / STARTED, f"{rnd}\n")
