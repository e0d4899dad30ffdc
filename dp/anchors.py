"""Anchored ledger heads: what makes a truncated ledger tail detectable.

A ledger alone is a valid chain after its tail is cut off; only a head recorded elsewhere,
best in a round receipt the aggregator signed (:mod:`fedrx.receipts`), reveals the cut.

Sources, in the order ``fedrx audit`` uses them when no ``--anchors FILE`` is given
(:func:`find_anchors`; the first that exists wins):

1. ``DIR/anchors.json`` (an aggregator's anchors file copied beside the ledgers);
2. ``P/aggregator/anchors/<h>.json`` for a hospital node folder ``DIR`` (``DIR/state.json``
   names the hospital ``h``) and ``P`` the folder itself or one of its 3 parents (the
   ``fedrx demo grpc`` layout), else ``P/aggregator/anchors.json`` for a run folder;
3. ``DIR/receipts.jsonl``: the signed receipts a hospital node verified and kept (the newest
   receipt naming each hospital's head);
4. ``DIR/results.json`` of ``fedrx simulate``: the ledger heads of its round records,
   UNSIGNED (same folder, same writer): they detect a cut tail, not a rewrite of both files.

Anchors file format (``--anchors``): ``{"<hospital>": {"length": n, "head_hash": "<hex>",
"receipt": {signed receipt}}, ...}``; ``length`` may be omitted (hash-only: the head must be
in the ledger, LedgerHead length -1); ``receipt`` is optional.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrx.dp.ledger import LedgerHead
from fedrx.errors import LedgerError


@dataclass(frozen=True)
class Anchors:
    """Anchored heads by hospital, the signed receipts they come from (by hospital; absent
    for unsigned anchors) and where they were read (``signed``: every head has a receipt)."""

    heads: Mapping[str, LedgerHead]
    receipts: Mapping[str, Mapping[str, Any]]
    source: Path

    @property
    def signed(self) -> bool:
        return bool(self.heads) and set(self.heads) <= set(self.receipts)


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


def anchors_file(path: Path) -> Anchors:
    return Anchors(load_anchors(path), load_anchor_receipts(path), Path(path))


def _node_hospital(folder: Path) -> str | None:
    p = folder / "state.json"
    try:
        obj = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None
    except (OSError, ValueError):
        raise LedgerError(f"node state {p} is unreadable") from None
    if isinstance(obj, dict) and isinstance(obj.get("hospital"), str):
        return obj["hospital"]
    return None


def _from_receipts(path: Path, only: str | None) -> Anchors:
    heads: dict[str, LedgerHead] = {}
    receipts: dict[str, dict[str, Any]] = {}
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            for h, head in dict(rec.get("ledger_heads") or {}).items():
                if head and (only is None or h == only):
                    heads[h] = LedgerHead(-1, str(head))
                    receipts[h] = dict(rec)
    except (OSError, ValueError, TypeError, AttributeError):
        raise LedgerError(f"receipts {path} are unreadable or malformed") from None
    return Anchors(heads, receipts, path)


def _from_results(path: Path) -> Anchors:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        heads = {str(h): LedgerHead(-1, str(v))
                 for r in doc.get("rounds", []) for h, v in dict(r.get("ledger_heads")
                                                                 or {}).items() if v}
    except (OSError, ValueError, TypeError, AttributeError):
        raise LedgerError(f"results {path} are unreadable or malformed") from None
    return Anchors(heads, {}, path)


def find_anchors(audit_path: Path) -> Anchors | None:
    """The default anchors for ``fedrx audit DIR`` (see module doc), None when none exist."""
    folder = Path(audit_path).resolve()
    if folder.is_file():
        folder = folder.parent.parent
    if (folder / "anchors.json").is_file():
        return anchors_file(folder / "anchors.json")
    node = _node_hospital(folder)
    for p in [folder, *list(folder.parents)[:3]]:
        agg = p / "aggregator" / "anchors"
        if node is not None and (agg / f"{node}.json").is_file():
            return anchors_file(agg / f"{node}.json")
        if node is None and (p / "aggregator" / "anchors.json").is_file():
            return anchors_file(p / "aggregator" / "anchors.json")
    if (folder / "receipts.jsonl").is_file():
        found = _from_receipts(folder / "receipts.jsonl", node)
        if found.heads:
            return found
    if (folder / "results.json").is_file():
        found = _from_results(folder / "results.json")
        if found.heads:
            return found
    return None


def audit_receipts(anchors: Mapping[str, LedgerHead], receipts: Mapping[str, Mapping],
                   aggregator_public: bytes) -> list[tuple[str, str, str]]:
    """``(hospital, kind, message)`` for every anchor receipt that fails: signature by the
    pinned aggregator key, and the anchored head must be the one it names."""
    from fedrx.errors import SignatureError
    from fedrx.receipts import verify_receipt

    out: list[tuple[str, str, str]] = []
    for h, rec in sorted(receipts.items()):
        try:
            verify_receipt(rec, aggregator_public)
        except SignatureError:
            out.append((h, "receipt-bad-signature", "the anchor's round receipt is not "
                        "signed by the pinned aggregator key (edited or forged)"))
            continue
        heads = rec.get("ledger_heads")
        anchor = anchors.get(h)
        if not isinstance(heads, Mapping) or anchor is None or \
                heads.get(h) != anchor.head_hash:
            out.append((h, "receipt-mismatch", "the anchored head is not the one the "
                        "signed receipt names for this hospital"))
    return out
