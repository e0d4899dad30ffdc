"""The aggregator's record of signed round receipts and the anchors auditors check.

Each round record becomes a signed ``fedrx-receipt/1`` (:mod:`fedrx.receipts`); the
aggregator sends it to every hospital in its RoundResult and keeps all of them here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedrx.atomic import atomic_write_text
from fedrx.receipts import receipt_body, sign_receipt
from fedrx.secagg.identity import Identity

RECEIPTS_FORMAT = "fedrx-receipts/2"


def signed_receipts(rounds: list[dict[str, Any]], federation_id: str, session_id: bytes,
                    identity: Identity) -> list[dict[str, Any]]:
    """Every round record as a signed ``fedrx-receipt/1`` (:mod:`fedrx.receipts`; Ed25519 is
    deterministic, so re-signing a round gives the same signature)."""
    return [sign_receipt(identity, receipt_body(federation_id, session_id, r)) for r in rounds]


def write_receipts(out: Path, rounds: list[dict[str, Any]], federation_id: str,
                   session_id: bytes, identity: Identity) -> dict[str, Path]:
    """The aggregator's record of every round receipt, for auditors.

    ``OUT/receipts.json``: ``{"format": "fedrx-receipts/2", "federation_id", "session_id",
    "aggregator_sign_public", "rounds": [signed receipt, ...]}``; each receipt (see
    :mod:`fedrx.receipts`: round, status, model_hash, contributors, ledger_heads
    {hospital: head_hash}, signature) is the one sent to every hospital in its RoundResult.
    ``OUT/anchors.json`` (all hospitals) and ``OUT/anchors/<hospital>.json`` (one hospital,
    to audit that hospital's node folder): the NEWEST receipted head per hospital in the
    format of ``fedrx audit DIR --anchors FILE`` (:func:`fedrx.dp.audit.load_anchors`;
    hash-only: the head must be in the ledger), each with the signed ``receipt`` it comes
    from (verified by the audit against the pinned aggregator key).
    Returns ``{"receipts": path, "anchors": path, <hospital>: path}``.
    """
    recs = signed_receipts(rounds, federation_id, session_id, identity)
    heads: dict[str, dict[str, Any]] = {}
    for r in recs:
        for h, head in r["ledger_heads"].items():
            heads[h] = {"head_hash": head, "round": r["round"], "receipt": r}
    paths = {"receipts": out / "receipts.json", "anchors": out / "anchors.json"}
    atomic_write_text(paths["receipts"], json.dumps(
        {"format": RECEIPTS_FORMAT, "federation_id": federation_id,
         "session_id": session_id.hex(),
         "aggregator_sign_public": identity.public.sign_public.hex(), "rounds": recs},
        indent=1) + "\n")
    atomic_write_text(paths["anchors"], json.dumps(heads, indent=1, sort_keys=True) + "\n")
    for h, v in heads.items():
        paths[h] = out / "anchors" / f"{h}.json"
        paths[h].parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(paths[h], json.dumps({h: v}, indent=1) + "\n")
    return paths
