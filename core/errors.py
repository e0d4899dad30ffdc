"""The fedrx exception hierarchy.

Every error a user can cause (bad data, bad configuration, a protocol violation by a
peer) is a :class:`FedrxError`. The CLI turns any ``FedrxError`` into ONE line on
stderr and a non-zero exit code; anything else is a bug and keeps its traceback.

Messages must never contain secret material (keys, seeds, shares, raw updates).
"""

from __future__ import annotations


class FedrxError(Exception):
    """Base class of all user-facing fedrx errors."""

    exit_code: int = 2


class DataError(FedrxError):
    """Input EHR data is missing, unreadable, or not in a supported layout."""


class ConfigError(FedrxError):
    """A configuration value or combination of values is invalid."""


class ProtocolError(FedrxError):
    """A federation round cannot proceed (invalid transition, abort, peer misbehaviour)."""


class CryptoError(FedrxError):
    """A cryptographic check failed (bad signature, failed decryption, wrong key)."""


class LedgerError(FedrxError):
    """The privacy ledger is missing, malformed, or fails verification."""


# One type per kind of failure. Verification raises one of these; it never returns False.


class SignatureError(CryptoError):
    """A signature does not verify against the pinned public key."""


class ShareError(CryptoError):
    """A secret share is malformed, from the wrong party, or inconsistent with the others."""


class CiphertextError(CryptoError):
    """A ciphertext (AEAD, sealed box, CKKS) is malformed or fails to decrypt."""


class ProtocolAbort(ProtocolError):
    """A round must stop: too few survivors, or a peer broke the protocol. ``reason`` is
    safe to record in the round record (no secrets)."""

    def __init__(self, reason: str, stage: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.stage = stage


class BudgetExceeded(FedrxError):
    """The next round would take the hospital past its epsilon budget (raised before any
    noise is drawn)."""

    exit_code = 3
