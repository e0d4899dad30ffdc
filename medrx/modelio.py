"""Save and load model weights without pickle.

Weights go to a ``.npz`` (numpy arrays only, loaded with ``allow_pickle=False``) and the
metadata (architecture, vocabulary sizes, SHA-256 of the weights) to a JSON file beside it.
Both are written atomically: a crash never leaves a half-written model.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedrx.atomic import atomic_write_bytes, atomic_write_text
from fedrx.errors import DataError


def state_to_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def weights_hash(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and little-endian bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode() + b"\0" + str(a.dtype).encode() + b"\0" + str(a.shape).encode())
        h.update(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


def save_model(path: Path, model: nn.Module, meta: dict) -> str:
    """Write ``path`` (.npz) and ``path.with_suffix('.json')``; return the weights hash."""
    path = Path(path)
    arrays = state_to_arrays(model)
    digest = weights_hash(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_text(path.with_suffix(".json"),
                      json.dumps({**meta, "weights_sha256": digest}, indent=1) + "\n")
    return digest


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(Path(path), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot load model weights {path}: {exc}") from None


def load_into(model: nn.Module, path: Path) -> None:
    """Load weights saved by :func:`save_model`, verifying the recorded hash if present."""
    arrays = load_arrays(path)
    meta_path = Path(path).with_suffix(".json")
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise DataError(f"{meta_path}: not valid JSON") from None
        if meta.get("weights_sha256") and meta["weights_sha256"] != weights_hash(arrays):
            raise DataError(f"{path}: weights do not match the hash in {meta_path.name}")
    try:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise DataError(f"{path}: weights do not fit this model ({first})") from None
