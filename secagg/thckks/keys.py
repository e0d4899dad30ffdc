"""A hospital's threshold-CKKS key epoch: its Shamir share of the joint secret key, the joint
public key, and how many ciphertext decryptions it has flooded under this epoch.

Stored (optionally) next to the hospital's identity as ``<hospital>.thckks.json``, written
atomically with mode 0600; the share is never logged and never in an error message or repr.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace
from pathlib import Path

from fedrx.atomic import atomic_write_bytes
from fedrx.canonical import canonical_json
from fedrx.errors import ConfigError

FORMAT = "fedrx-thckks-keys/1"


@dataclass(frozen=True)
class EpochKeys:
    """``members`` sorted; this hospital's Shamir index is its 1-based position in them."""

    hospital: str
    epoch: int
    members: tuple[str, ...]
    threshold: int
    key_id: bytes
    joint_public: bytes
    share: bytes
    queries_used: int = 0

    def __repr__(self) -> str:
        return (f"EpochKeys(hospital={self.hospital!r}, epoch={self.epoch}, "
                f"t={self.threshold}/{len(self.members)}, queries_used={self.queries_used})")

    @property
    def index(self) -> int:
        return self.members.index(self.hospital) + 1

    def spent(self, queries: int) -> EpochKeys:
        return replace(self, queries_used=self.queries_used + queries)

    def to_bytes(self) -> bytes:
        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        return canonical_json({
            "format": FORMAT, "hospital": self.hospital, "epoch": self.epoch,
            "members": list(self.members), "threshold": self.threshold,
            "key_id": self.key_id.hex(), "joint_public": b64(self.joint_public),
            "share": b64(self.share), "queries_used": self.queries_used})

    @staticmethod
    def from_bytes(data: bytes) -> EpochKeys:
        try:
            d = json.loads(data)
            if d.get("format") != FORMAT:
                raise ValueError
            keys = EpochKeys(str(d["hospital"]), int(d["epoch"]),
                             tuple(str(m) for m in d["members"]), int(d["threshold"]),
                             bytes.fromhex(d["key_id"]), base64.b64decode(d["joint_public"]),
                             base64.b64decode(d["share"]), int(d["queries_used"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ConfigError("threshold-CKKS key file is malformed") from None
        if keys.hospital not in keys.members or len(keys.key_id) != 32:
            raise ConfigError("threshold-CKKS key file is malformed")
        return keys


def key_path(key_dir: Path, hospital: str) -> Path:
    return Path(key_dir) / f"{hospital}.thckks.json"


def save_keys(key_dir: Path, keys: EpochKeys) -> None:
    """Write the epoch atomically, mode 0600."""
    atomic_write_bytes(key_path(key_dir, keys.hospital), keys.to_bytes(), mode=0o600)


def load_keys(key_dir: Path, hospital: str) -> EpochKeys | None:
    """The stored epoch of ``hospital`` (None if none); ConfigError if it is another's,
    malformed, or readable by others."""
    path = key_path(key_dir, hospital)
    if not path.exists():
        return None
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"threshold-CKKS key file {path} is readable by others (want 0600)")
    keys = EpochKeys.from_bytes(path.read_bytes())
    if keys.hospital != hospital:
        raise ConfigError(f"threshold-CKKS key file {path} belongs to {keys.hospital!r}")
    return keys
