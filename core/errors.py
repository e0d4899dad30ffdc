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
