"""A hospital's check of the aggregator's signed round receipt (RoundResult).

Every RoundResult must carry the round receipt signed by the aggregator's Ed25519 key pinned
in the federation file (:mod:`fedrx.receipts`). The check: the receipt is canonical JSON, its
signature verifies against the pinned key, it is of this federation and of this hospital's
derived session (:func:`fedrx.protocol.context.derive_session_id`), it matches the
RoundResult field by field, the ledger head it names for THIS hospital is this hospital's own
ledger entry of that round (no ledger / no entry: it must name none; a receipt naming no head
for this hospital, e.g. it dropped out before its TrainAck arrived, is accepted unless it lists
the hospital as a contributor), and its round is after the last receipt kept (no replay).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from fedrx.errors import ProtocolError, SignatureError
from fedrx.receipts import receipt_bytes, verify_receipt


class ReceiptRejected(ProtocolError):
    """The receipt fails one check; ``why`` says which (no secrets: receipts are public)."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def check_round_result(r: Any, *, hospital: str, deployment: Any,
                       own_head: Callable[[int], str],
                       previous: Mapping[str, Any] | None,
                       session_id: bytes | None = None) -> dict[str, Any]:
    """The signed receipt of RoundResult ``r`` (a ``fedrx.v1.RoundResult``), verified as the
    module doc says; raises :class:`ReceiptRejected` otherwise. ``own_head(round)``: this
    hospital's ledger entry hash of that round ("" without one); ``previous``: the newest
    receipt already accepted; ``session_id``: the session this hospital derived from the pinned
    federation (None: not checked, a party without a pinned round policy)."""
    h = hospital
    try:
        body = json.loads(r.receipt.decode("utf-8"))
        canonical = isinstance(body, dict) and receipt_bytes(body) == r.receipt
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        canonical = False
    if not r.receipt or not canonical:
        raise ReceiptRejected("missing or malformed receipt")
    signed = {**body, "signature": r.signature.hex()}
    try:
        verify_receipt(signed, deployment.aggregator_sign_public)
    except SignatureError:
        raise ReceiptRejected("signature does not verify against the pinned aggregator "
                              "key") from None
    heads = body["ledger_heads"] if isinstance(body["ledger_heads"], dict) else {}
    if body["federation_id"] != deployment.federation_id:
        raise ReceiptRejected("receipt of another federation")
    if session_id is not None and body["session_id"] != session_id.hex():
        raise ReceiptRejected("receipt of another session")
    if (body["round"], body["status"], body["model_hash"], list(body["contributors"]),
            heads.get(h, "")) != (r.round, r.status, r.model_hash, list(r.contributors),
                                  r.ledger_head):
        raise ReceiptRejected("receipt does not match the RoundResult")
    own = own_head(int(body["round"]))
    if h in heads and heads[h] != own:
        raise ReceiptRejected("the receipt's ledger head is not this hospital's ledger entry "
                              "of that round")
    if own and h in body["contributors"] and h not in heads:
        raise ReceiptRejected("the receipt lists this hospital as a contributor but omits its "
                              "ledger head")
    if previous is not None and int(body["round"]) <= int(previous["round"]):
        raise ReceiptRejected(f"replayed or out-of-order receipt (round {body['round']} is "
                              f"not after round {previous['round']})")
    return signed
