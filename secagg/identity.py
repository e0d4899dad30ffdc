"""Long-term hospital identities and the federation's pinned public keys.

Each hospital holds an :class:`Identity`: an Ed25519 signing key (signs protocol messages
and its privacy ledger) and an X25519 key (receives sealed secrets such as a CKKS secret
key). The :class:`Federation` pins every hospital's public keys; a message whose signature
does not verify against the pinned key is rejected. Keys are generated from the OS CSPRNG
by the ``cryptography`` package.

Private keys are serialised only as raw 32-byte values inside files the hospital owns
(PEM/PKCS8 for interoperability); they never appear in logs, reprs or error messages.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedrx.errors import ConfigError, CryptoError, SignatureError

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NOENC = serialization.NoEncryption()


@dataclass(frozen=True)
class PublicIdentity:
    """A hospital's pinned public keys (32 raw bytes each)."""

    hospital: str
    sign_public: bytes
    seal_public: bytes

    def verify(self, signature: bytes, message: bytes) -> None:
        """Return if ``signature`` is this hospital's Ed25519 signature on ``message``;
        raise :class:`fedrx.errors.SignatureError` otherwise (also for a malformed key or
        signature)."""
        try:
            Ed25519PublicKey.from_public_bytes(self.sign_public).verify(signature, message)
        except (InvalidSignature, ValueError):
            raise SignatureError(f"signature of {self.hospital} does not verify") from None

    def seal_key(self) -> X25519PublicKey:
        return X25519PublicKey.from_public_bytes(self.seal_public)

    def to_json(self) -> dict:
        return {"hospital": self.hospital, "sign_public": self.sign_public.hex(),
                "seal_public": self.seal_public.hex()}

    @staticmethod
    def from_json(obj: Mapping) -> PublicIdentity:
        try:
            pub = PublicIdentity(str(obj["hospital"]), bytes.fromhex(obj["sign_public"]),
                                 bytes.fromhex(obj["seal_public"]))
        except (KeyError, TypeError, ValueError):
            raise ConfigError("malformed public identity (need hospital, sign_public, "
                              "seal_public as hex)") from None
        if len(pub.sign_public) != 32 or len(pub.seal_public) != 32:
            raise ConfigError(f"public identity of {pub.hospital}: keys must be 32 bytes")
        return pub


class Identity:
    """A hospital's long-term private keys. ``repr`` never shows key material."""

    def __init__(self, hospital: str, sign_key: Ed25519PrivateKey, seal_key: X25519PrivateKey):
        self.hospital = hospital
        self._sign = sign_key
        self._seal = seal_key

    @staticmethod
    def generate(hospital: str) -> Identity:
        return Identity(hospital, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    def __repr__(self) -> str:
        return f"Identity(hospital={self.hospital!r}, <private keys hidden>)"

    @property
    def public(self) -> PublicIdentity:
        return PublicIdentity(
            self.hospital,
            self._sign.public_key().public_bytes(_RAW, _RAW_PUB),
            self._seal.public_key().public_bytes(_RAW, _RAW_PUB),
        )

    def sign(self, message: bytes) -> bytes:
        return self._sign.sign(message)

    def seal_private(self) -> X25519PrivateKey:
        """The X25519 key for opening sealed boxes addressed to this hospital."""
        return self._seal

    def save(self, path: Path) -> None:
        """Write both private keys (hex of raw bytes) to ``path`` with mode 0600, atomically."""
        from fedrx.atomic import atomic_write_text

        data = json.dumps({
            "format": "fedrx-identity/1", "hospital": self.hospital,
            "sign_private": self._sign.private_bytes(_RAW, _RAW_PRIV, _NOENC).hex(),
            "seal_private": self._seal.private_bytes(_RAW, _RAW_PRIV, _NOENC).hex(),
        })
        atomic_write_text(Path(path), data, mode=0o600)

    @staticmethod
    def load(path: Path) -> Identity:
        try:
            obj = json.loads(Path(path).read_text())
            if obj.get("format") != "fedrx-identity/1":
                raise ValueError
            return Identity(
                str(obj["hospital"]),
                Ed25519PrivateKey.from_private_bytes(bytes.fromhex(obj["sign_private"])),
                X25519PrivateKey.from_private_bytes(bytes.fromhex(obj["seal_private"])),
            )
        except OSError as exc:
            raise ConfigError(f"cannot read identity {path}: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ConfigError(f"identity file {path} is malformed") from None


@dataclass(frozen=True)
class Federation:
    """The pinned public identities of every hospital, by hospital id."""

    members: Mapping[str, PublicIdentity]

    def get(self, hospital: str) -> PublicIdentity:
        try:
            return self.members[hospital]
        except KeyError:
            raise CryptoError(f"hospital {hospital!r} is not in the federation") from None

    def verify(self, hospital: str, signature: bytes, message: bytes) -> None:
        """Return if ``signature`` is ``hospital``'s pinned key's signature on ``message``;
        raise :class:`fedrx.errors.SignatureError` otherwise (also for a hospital outside
        the federation)."""
        pub = self.members.get(hospital)
        if pub is None:
            raise SignatureError(f"no pinned key for {hospital!r}: not in the federation")
        pub.verify(signature, message)

    def to_json(self) -> dict:
        return {"format": "fedrx-federation/1",
                "members": [self.members[h].to_json() for h in sorted(self.members)]}

    @staticmethod
    def from_json(obj: Mapping) -> Federation:
        if not isinstance(obj, Mapping) or obj.get("format") != "fedrx-federation/1":
            raise ConfigError("not a fedrx-federation/1 document")
        members = [PublicIdentity.from_json(m) for m in obj.get("members", [])]
        ids = [m.hospital for m in members]
        if len(set(ids)) != len(ids):
            raise ConfigError("federation lists a hospital twice")
        return Federation({m.hospital: m for m in members})

    @staticmethod
    def of(identities: list[Identity]) -> Federation:
        return Federation({i.hospital: i.public for i in identities})
