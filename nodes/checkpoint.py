"""The aggregator's checkpoint store: the server state after every round, atomically.

Layout: ``CHECKPOINT/round-NNNNNN/`` (``weights.npy``, FedAdam moments, ``state.json``,
named blobs, ``seal.json``) and ``CHECKPOINT/LATEST`` naming the newest complete one;
``STARTED`` holds the number of the round in flight (burnt on restart: hospitals refuse a
round number they have seen).

Integrity covers the WHOLE checkpoint: ``state.json`` (round, session id, model hash,
optimizer settings, the round records with their metrics, meta) lists the SHA-256 of every
other file in the folder (``files``), and ``seal.json`` holds the SHA-256 of the exact bytes
of ``state.json`` and the aggregator's Ed25519 signature over them (its receipt-signing
identity). On load the seal, the signature (when the pinned key is given) and every listed
file's hash are checked before anything is used; any mismatch is one
:class:`~fedrx.errors.ConfigError`. Every ``.npy`` is read with ``allow_pickle=False``.

A failed write (full disk, ...) removes its ``.round-*.tmp/`` folder and leaves the previous
checkpoint (``LATEST``) untouched.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedrx.atomic import atomic_write_bytes, atomic_write_text, npy_bytes
from fedrx.canonical import json_default
from fedrx.errors import ConfigError
from fedrx.protocol.aggregator import ServerState
from fedrx.protocol.optim import ServerOptimizer
from fedrx.protocol.task import model_hash
from fedrx.secagg.identity import Identity

CKPT_FORMAT = "fedrx-checkpoint/2"
SELECTED_BLOB = "selected_model.npy"
STARTED = "STARTED"
STATE = "state.json"
SEAL = "seal.json"
_RESERVED = (STATE, SEAL)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(folder: Path, state: ServerState, rounds: list[dict[str, Any]],
                    meta: dict[str, Any], blobs: dict[str, bytes] | None = None,
                    signer: Identity | None = None) -> Path:
    """Write ``folder/round-NNNNNN/`` then atomically point ``folder/LATEST`` at it.

    Files: ``weights.npy`` (float32), ``opt_m.npy``/``opt_v.npy`` (FedAdam moments, if
    any), ``blobs`` (name -> bytes, e.g. the CKKS keyring: public data and sealed packages
    only), ``state.json`` (round, session id, model hash, optimizer settings, the round
    records so far, ``meta``, the SHA-256 of every other file) and ``seal.json`` (SHA-256 of
    ``state.json`` and ``signer``'s signature over it). Older checkpoints are removed after
    LATEST moves. On any error the temporary folder is removed; an ``OSError`` becomes one
    ConfigError line.
    """
    files: dict[str, bytes] = {"weights.npy": npy_bytes(state.weights.astype(np.float32))}
    opt = state.optimizer
    if opt.m is not None and opt.v is not None:
        files["opt_m.npy"], files["opt_v.npy"] = npy_bytes(opt.m), npy_bytes(opt.v)
    for bname, data in (blobs or {}).items():
        if "/" in bname or bname.startswith(".") or bname in files or bname in _RESERVED:
            raise ConfigError(f"invalid checkpoint blob name {bname!r}")
        files[bname] = data
    doc = {"format": CKPT_FORMAT, "round": state.round, "session_id": state.session_id.hex(),
           "model_hash": state.model_hash,
           "optimizer": {"name": opt.name, "lr": opt.lr, "beta1": opt.beta1,
                         "beta2": opt.beta2, "tau": opt.tau, "moments": opt.m is not None},
           "rounds": rounds, "meta": meta, "blobs": sorted(blobs or {}),
           "files": {n: _sha256(b) for n, b in sorted(files.items())}}
    state_bytes = (json.dumps(doc, default=json_default) + "\n").encode("utf-8")
    seal = {"state_sha256": _sha256(state_bytes),
            "signature": signer.sign(state_bytes).hex() if signer is not None else ""}
    name = f"round-{state.round:06d}"
    tmp = folder / f".{name}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for fname, data in files.items():
            atomic_write_bytes(tmp / fname, data)
        atomic_write_bytes(tmp / STATE, state_bytes)
        atomic_write_text(tmp / SEAL, json.dumps(seal) + "\n")
        final = folder / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        atomic_write_text(folder / "LATEST", name + "\n")
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConfigError(f"cannot write the checkpoint in {folder}: "
                          f"{exc.strerror or type(exc).__name__}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in folder.glob("round-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _open(folder: Path, key: bytes | None) -> tuple[Path, dict[str, Any]] | None:
    """(folder, state document) of the newest checkpoint after its seal (and signature, if
    ``key`` is given) verified; None if there is none."""
    latest = folder / "LATEST"
    if not latest.is_file():
        return None
    try:
        d = folder / latest.read_text().strip()
        if d.parent != folder or not d.name.startswith("round-"):
            raise ValueError("LATEST")
        state_bytes = (d / STATE).read_bytes()
        seal = json.loads((d / SEAL).read_text())
        doc = json.loads(state_bytes)
        if not isinstance(doc, dict) or doc.get("format") != CKPT_FORMAT:
            raise ValueError("format")
        ok = isinstance(seal, dict) and seal.get("state_sha256") == _sha256(state_bytes)
        signature = bytes.fromhex(str(seal.get("signature", ""))) if ok else b""
    except (OSError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"checkpoint in {folder} is unreadable ({type(exc).__name__})") \
            from None
    if not ok:
        raise ConfigError(f"checkpoint {d}: state.json does not match its seal (edited?)")
    if key is not None:
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(signature, state_bytes)
        except (InvalidSignature, ValueError):
            raise ConfigError(f"checkpoint {d}: not signed by the pinned aggregator "
                              "key (edited or foreign)") from None
    return d, doc


def _file(d: Path, doc: dict[str, Any], name: str) -> bytes:
    """The bytes of checkpoint file ``name``, checked against its hash in state.json."""
    files = doc.get("files")
    want = files.get(name) if isinstance(files, dict) else None
    try:
        data = (d / name).read_bytes() if isinstance(want, str) else None
    except OSError:
        data = None
    if data is None or _sha256(data) != want:
        raise ConfigError(f"checkpoint {d}: {name} is missing or does not match its "
                          "recorded hash")
    return data


def _npy(d: Path, doc: dict[str, Any], name: str) -> np.ndarray:
    return np.load(io.BytesIO(_file(d, doc, name)), allow_pickle=False)


def load_checkpoint(folder: Path, key: bytes | None = None
                    ) -> tuple[ServerState, list[dict[str, Any]], dict[str, Any]] | None:
    """(state, round records, meta) of the newest complete checkpoint, or None. ``key``:
    the aggregator's pinned Ed25519 public key (the checkpoint must be signed by it)."""
    opened = _open(folder, key)
    if opened is None:
        return None
    d, doc = opened
    try:
        w = _npy(d, doc, "weights.npy")
        o = doc["optimizer"]
        opt = ServerOptimizer(o["name"], lr=o["lr"], beta1=o["beta1"], beta2=o["beta2"],
                              tau=o["tau"])
        if o["moments"]:
            opt.m, opt.v = _npy(d, doc, "opt_m.npy"), _npy(d, doc, "opt_v.npy")
        state = ServerState(int(doc["round"]), w, opt, bytes.fromhex(doc["session_id"]))
        rounds, meta = list(doc["rounds"]), dict(doc.get("meta", {}))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"checkpoint {d} is unreadable ({type(exc).__name__})") from None
    if w.dtype != np.float32 or w.ndim != 1 or model_hash(w) != doc["model_hash"]:
        raise ConfigError(f"checkpoint {d}: weights do not match the recorded model hash")
    return state, rounds, meta


def load_blobs(folder: Path, prefix: str, key: bytes | None = None) -> dict[str, bytes]:
    """Every blob of the newest checkpoint whose name starts with ``prefix`` (prefix
    removed), as recorded in its ``state.json``, each checked against its hash."""
    opened = _open(folder, key)
    if opened is None:
        return {}
    d, doc = opened
    names = doc.get("blobs", [])
    if not isinstance(names, list):
        raise ConfigError(f"checkpoint {d}: blobs unreadable")
    return {n[len(prefix):]: _file(d, doc, n) for n in names
            if isinstance(n, str) and n.startswith(prefix)}


def load_blob(folder: Path, name: str, key: bytes | None = None) -> bytes | None:
    """A blob saved with the newest checkpoint (None if it has none), hash-checked."""
    opened = _open(folder, key)
    if opened is None:
        return None
    d, doc = opened
    if name not in doc.get("blobs", []):
        return None
    return _file(d, doc, name)


def selected_blob(weights: np.ndarray | None) -> dict[str, bytes]:
    """The model of the best-validation round so far, checkpointed with the state."""
    return {} if weights is None else {SELECTED_BLOB: npy_bytes(weights)}


def restore_selected(folder: Path, best: dict[str, Any] | None,
                     key: bytes | None = None) -> np.ndarray | None:
    """The checkpointed selected model, checked against the selected round's model hash."""
    if best is None:
        return None
    try:
        data = load_blob(folder, SELECTED_BLOB, key)
        w = np.load(io.BytesIO(data), allow_pickle=False) if data is not None else None
    except (OSError, ValueError, ConfigError):
        w = None
    if w is None or model_hash(w) != best["model_hash"]:
        raise ConfigError(f"checkpoint in {folder}: selected model (round {best['round']}) "
                          "is missing or does not match its recorded model hash")
    return w


def read_started(folder: Path) -> int:
    """The round that was in flight at the last stop (0 if none recorded)."""
    p = folder / STARTED
    if not p.is_file():
        return 0
    try:
        text = p.read_text().strip()
    except (OSError, UnicodeDecodeError):
        text = "?"
    if text and not (text.isascii() and text.isdigit()):
        raise ConfigError(f"{p} does not hold a round number")
    return int(text or 0)


def write_started(folder: Path, rnd: int) -> None:
    """Record that round ``rnd`` is starting (before anything is sent for it)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / STARTED, f"{rnd}\n")
    except OSError as exc:
        raise ConfigError(f"cannot write {folder / STARTED}: "
                          f"{exc.strerror or type(exc).__name__}") from None


def check_writable(folder: Path, what: str) -> None:
    """Create ``folder`` and prove a file can be written there, before any round starts
    (an unwritable out folder is one ConfigError line, not a failure at round 1)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / ".write-test", b"")
        (folder / ".write-test").unlink()
    except OSError as exc:
        raise ConfigError(f"{what} {folder} is not writable: "
                          f"{exc.strerror or type(exc).__name__}") from None
