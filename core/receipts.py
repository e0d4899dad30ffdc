"""Signed round receipts (``fedrx-receipt/1``).

After every round the aggregator signs, with its own Ed25519 key (created by ``fedrx certs
init`` as ``aggregator.identity.json``, public key pinned in ``federation.json`` as
``aggregator_sign_public``), the receipt::

    {"format": "fedrx-receipt/1", "federation_id", "session_id", "round", "status",
     "model_hash" (the global model after the round), "contributors",
     "ledger_heads": {hospital: head_hash}}

The signature covers :func:`receipt_bytes`: the canonical JSON of exactly those keys
(sorted keys, no spaces, UTF-8). A signed receipt is that object plus ``"signature"`` (hex).
It goes to every hospital in its RoundResult (verified there against the pinned key), into
``OUT/receipts.json`` and into the anchors files read by ``fedrx audit --anchors``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedrx.canonical import canonical_json
from fedrx.errors import SignatureError

RECEIPT_FORMAT = "fedrx-receipt/1"
RECEIPT_KEYS = ("format", "federation_id", "session_id", "round", "status", "model_hash",
                "contributors", "ledger_heads")


def receipt_body(federation_id: str, session_id: bytes, rec: Mapping[str, Any]) -> dict:
    """The unsigned receipt of one round record (a RoundOutcome as a dict)."""
    return {"format": RECEIPT_FORMAT, "federation_id": federation_id,
            "session_id": session_id.hex(), "round": int(rec["round"]),
            "status": str(rec["status"]), "model_hash": str(rec["model_hash"]),
            "contributors": [str(c) for c in rec["contributors"]],
            "ledger_heads": {str(h): str(v) for h, v in sorted(rec["ledger_heads"].items())}}


def receipt_bytes(receipt: Mapping[str, Any]) -> bytes:
    """What the signature covers: canonical JSON of the :data:`RECEIPT_KEYS` (a missing
    key raises KeyError, an extra key is not covered and ignored)."""
    return canonical_json({k: receipt[k] for k in RECEIPT_KEYS})


def sign_receipt(identity: Any, body: Mapping[str, Any]) -> dict:
    """``body`` plus ``signature`` (hex) by ``identity`` (anything with ``sign(bytes)``)."""
    return {**{k: body[k] for k in RECEIPT_KEYS},
            "signature": identity.sign(receipt_bytes(body)).hex()}


def verify_receipt(receipt: Any, public_key: bytes) -> Mapping[str, Any]:
    """``receipt`` itself once it is a well-formed signed receipt whose signature verifies
    against the raw 32-byte Ed25519 ``public_key``; raises :class:`SignatureError` (one
    line, no secret) otherwise, malformed input included."""
    if not isinstance(receipt, Mapping) or receipt.get("format") != RECEIPT_FORMAT:
        raise SignatureError("not a signed fedrx round receipt")
    try:
        sig = bytes.fromhex(str(receipt["signature"]))
        Ed25519PublicKey.from_public_bytes(public_key).verify(sig, receipt_bytes(receipt))
    except (InvalidSignature, KeyError, TypeError, ValueError):
        raise SignatureError(f"receipt of round {receipt.get('round')!r} does not verify "
                             "against the pinned aggregator key") from None
    return receipt
