"""The one canonical JSON encoding that fedrx signs and hashes.

Sorted keys, no spaces, UTF-8 (non-ASCII kept as is), NaN and Infinity refused. Privacy
ledger entries (``docs/ledger.md``) and round receipts are signed over these bytes, so an
auditor can re-create them with any JSON library that sorts keys.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np


def canonical_json(obj: Any) -> bytes:
    """Canonical encoding of ``obj`` (sorted keys, ``,``/``:`` separators, UTF-8)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for results documents: numpy scalars and arrays as
    numbers and lists, bytes as hex."""
    if isinstance(o, np.integer | np.floating):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, bytes):
        return o.hex()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
