"""A CKKS key epoch (manifest, public context, sealed packages) as canonical JSON bytes.

This is how the aggregator checkpoints its key epoch: public data and sealed packages only
(nothing here can decrypt). Byte strings are lowercase hex; the document is
:func:`fedrx.canonical.canonical_json` of::

    {"format": "fedrx-ckks-keyring/1",
     "manifest": {"federation_id", "epoch", "key_holder", "params", "public_context_sha256",
                  "key_commitment", "recipients", "signature"},
     "public_context": hex,
     "packages": {hospital: {"recipient", "epoch", "key_id", "sealed", "signature"}}}

:func:`keyring_from_json` only parses (every field type- and size-checked, CryptoError on
anything malformed); the caller verifies signatures (:meth:`AggregatorKeyState.install`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fedrx.canonical import canonical_json
from fedrx.errors import ConfigError, CryptoError
from fedrx.secagg.ckks.keyring import CkksKeyring, EpochManifest, SealedKeyPackage
from fedrx.secagg.ckks.params import CkksParams

FORMAT = "fedrx-ckks-keyring/1"
#: Largest checkpointed keyring accepted (bytes): 4 MiB secret context x up to 64 sealed
#: packages, hex-encoded, is far below; a bigger blob is refused before it is parsed.
MAX_KEYRING_JSON = 1 << 30


def keyring_to_json(ring: CkksKeyring) -> bytes:
    """Canonical JSON bytes of ``ring`` (see module doc)."""
    m = ring.manifest
    return canonical_json({
        "format": FORMAT,
        "manifest": {
            "federation_id": m.federation_id.hex(), "epoch": m.epoch,
            "key_holder": m.key_holder, "params": m.params.to_json(),
            "public_context_sha256": m.public_context_sha256.hex(),
            "key_commitment": m.key_commitment.hex(), "recipients": list(m.recipients),
            "signature": m.signature.hex()},
        "public_context": ring.public_context.hex(),
        "packages": {h: {"recipient": p.recipient, "epoch": p.epoch, "key_id": p.key_id.hex(),
                         "sealed": p.sealed.hex(), "signature": p.signature.hex()}
                     for h, p in ring.packages.items()},
    })


def _field(obj: Mapping[str, Any], key: str, kind: type) -> Any:
    v = obj.get(key)
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise CryptoError(f"checkpointed CKKS keyring: field {key!r} missing or malformed")
    return v


def _hex(obj: Mapping[str, Any], key: str, size: int | None = None) -> bytes:
    try:
        b = bytes.fromhex(_field(obj, key, str))
    except ValueError:
        raise CryptoError(f"checkpointed CKKS keyring: field {key!r} is not hex") from None
    if size is not None and len(b) != size:
        raise CryptoError(f"checkpointed CKKS keyring: field {key!r} is not {size} bytes")
    return b


def _epoch(obj: Mapping[str, Any]) -> int:
    e = _field(obj, "epoch", int)
    if not 0 <= e < 2**63:
        raise CryptoError("checkpointed CKKS keyring: epoch out of range")
    return e


def keyring_from_json(data: bytes) -> CkksKeyring:
    """Parse :func:`keyring_to_json` output; CryptoError if malformed (signatures unchecked)."""
    if not isinstance(data, (bytes, bytearray)) or len(data) > MAX_KEYRING_JSON:
        raise CryptoError("checkpointed CKKS keyring is not bytes or too large")
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CryptoError("checkpointed CKKS keyring is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CryptoError(f"checkpointed CKKS keyring is not a {FORMAT} document")
    m = _field(doc, "manifest", dict)
    recipients = _field(m, "recipients", list)
    if not all(isinstance(r, str) for r in recipients):
        raise CryptoError("checkpointed CKKS keyring: malformed recipients")
    try:
        params = CkksParams.from_json(_field(m, "params", dict))
    except ConfigError:
        raise CryptoError("checkpointed CKKS keyring: malformed parameters") from None
    manifest = EpochManifest(
        _hex(m, "federation_id", 32), _epoch(m), _field(m, "key_holder", str), params,
        _hex(m, "public_context_sha256", 32), _hex(m, "key_commitment", 32),
        tuple(recipients), _hex(m, "signature"))
    packages = {}
    for h, p in _field(doc, "packages", dict).items():
        if not isinstance(p, dict):
            raise CryptoError("checkpointed CKKS keyring: malformed package")
        packages[h] = SealedKeyPackage(_field(p, "recipient", str), _epoch(p),
                                       _hex(p, "key_id", 32), _hex(p, "sealed"),
                                       _hex(p, "signature"))
    return CkksKeyring(manifest, _hex(doc, "public_context"), packages)
