"""CKKS key epochs: the signed manifest, sealed key packages, key generation and opening.

See :mod:`fedrx.secagg.ckks` ("Key epochs and custody").
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import tenseal as ts

from fedrx.canonical import canonical_json
from fedrx.errors import ConfigError, CryptoError, SignatureError
from fedrx.secagg.ckks.ciphertext import CkksPublicContext, sha256
from fedrx.secagg.ckks.params import CkksParams
from fedrx.secagg.ckks.secret import CkksSecretKey
from fedrx.secagg.identity import Federation, Identity
from fedrx.secagg.seal import SealLabel, open_sealed, seal

SECRET_KEY_PURPOSE = "ckks-secret-key"  # noqa: S105 (a seal label, not a secret)
_MANIFEST_DOMAIN = b"fedrx-ckks-manifest/1\x00"
_PACKAGE_DOMAIN = b"fedrx-ckks-package/1\x00"
_COMMIT_DOMAIN = b"fedrx-ckks-key-commitment/1\x00"
_SECRET_MAGIC = b"FRXCKKS1"
_MAX_SECRET_CONTEXT = 4 * 1024 * 1024


@dataclass(frozen=True)
class EpochManifest:
    """Public, signed description of one CKKS key epoch (all hashes are 32-byte SHA-256)."""

    federation_id: bytes
    epoch: int
    key_holder: str
    params: CkksParams
    public_context_sha256: bytes
    key_commitment: bytes
    recipients: tuple[str, ...]
    signature: bytes = b""

    def statement(self) -> bytes:
        """The bytes the key holder signs: the domain, then :func:`fedrx.canonical.canonical_json`
        of the fields (bytes as hex). Hospital ids must be ASCII (CryptoError otherwise), so
        these bytes are also what ``json.dumps(sort_keys=True, separators=(",", ":"))``
        gives, the encoding manifests were signed with before the one canonical JSON."""
        if not all(h.isascii() for h in (self.key_holder, *self.recipients)):
            raise CryptoError("CKKS manifest hospital ids must be ASCII")
        return _MANIFEST_DOMAIN + canonical_json({
            "federation_id": self.federation_id.hex(), "epoch": self.epoch,
            "key_holder": self.key_holder, "params": self.params.to_json(),
            "public_context_sha256": self.public_context_sha256.hex(),
            "key_commitment": self.key_commitment.hex(), "recipients": list(self.recipients),
        })

    @property
    def key_id(self) -> bytes:
        """32-byte id of this epoch's keys: SHA-256 of the signed statement."""
        return sha256(self.statement())

    def verify(self, federation: Federation) -> None:
        """Raise CryptoError unless the key holder's pinned Ed25519 key signed this manifest."""
        try:
            federation.verify(self.key_holder, self.signature, self.statement())
        except SignatureError:
            raise SignatureError(f"CKKS epoch {self.epoch} manifest is not signed by its key "
                                 f"holder {self.key_holder!r}") from None
        self.params.validate()


@dataclass(frozen=True)
class SealedKeyPackage:
    """The epoch's secret material sealed to ONE hospital, signed by the key holder."""

    recipient: str
    epoch: int
    key_id: bytes
    sealed: bytes
    signature: bytes

    def statement(self) -> bytes:
        return (_PACKAGE_DOMAIN + self.key_id + struct.pack(">Q", self.epoch)
                + self.recipient.encode() + b"\x00" + sha256(self.sealed))

    def verify(self, federation: Federation, key_holder: str) -> None:
        """Raise SignatureError unless ``key_holder``'s pinned key signed this package."""
        try:
            federation.verify(key_holder, self.signature, self.statement())
        except SignatureError:
            raise SignatureError("CKKS key package is not signed by the epoch's key holder"
                                 ) from None

    def __repr__(self) -> str:
        return (f"SealedKeyPackage(recipient={self.recipient!r}, epoch={self.epoch}, "
                f"key_id={self.key_id.hex()[:16]}, sealed=<{len(self.sealed)} bytes>)")


def _encode_secret(context_bytes: bytes, flood_key: bytes) -> bytes:
    return _SECRET_MAGIC + struct.pack(">I", len(context_bytes)) + context_bytes + flood_key


def _decode_secret(blob: bytes) -> tuple[bytes, bytes]:
    head = len(_SECRET_MAGIC) + 4
    if len(blob) < head + 32 or blob[:len(_SECRET_MAGIC)] != _SECRET_MAGIC:
        raise CryptoError("sealed CKKS key package has a malformed payload")
    (n,) = struct.unpack(">I", blob[len(_SECRET_MAGIC):head])
    if n > _MAX_SECRET_CONTEXT or len(blob) != head + n + 32:
        raise CryptoError("sealed CKKS key package has a malformed payload")
    return blob[head:head + n], blob[head + n:]


def _public_bytes(ctx: ts.Context) -> bytes:
    return ctx.serialize(save_public_key=False, save_secret_key=False,
                         save_galois_keys=False, save_relin_keys=False)


@dataclass(frozen=True)
class CkksKeyring:
    """Everything distributed for one epoch: signed manifest, public context, sealed packages.

    Safe to hand to the aggregator: it contains no secret in the clear. The aggregator uses
    :meth:`server_context` and relays ``packages[h]`` to hospital ``h``, which calls
    :meth:`open`.
    """

    manifest: EpochManifest
    public_context: bytes
    packages: Mapping[str, SealedKeyPackage] = field(default_factory=dict)

    @property
    def key_id(self) -> bytes:
        return self.manifest.key_id

    @property
    def epoch(self) -> int:
        return self.manifest.epoch

    @staticmethod
    def create(holder: Identity, federation: Federation, *, epoch: int, federation_id: bytes,
               params: CkksParams | None = None,
               recipients: Sequence[str] | None = None) -> CkksKeyring:
        """Generate epoch ``epoch``'s keys at the key holder and seal them to ``recipients``.

        ``recipients`` defaults to every federation member (the holder included: it opens its
        own package like everyone else). Secret material exists in the clear only inside this
        call and inside each recipient after :meth:`open`.
        """
        params = params or CkksParams()
        params.validate()
        if not 0 <= epoch < 2**63:
            raise ConfigError("CKKS epoch must be a non-negative integer")
        if len(federation_id) != 32:
            raise ConfigError("federation_id must be 32 bytes")
        federation.get(holder.hospital)
        rcpts = tuple(sorted(recipients if recipients is not None else federation.members))
        if not rcpts or len(set(rcpts)) != len(rcpts):
            raise ConfigError("CKKS recipients must be a non-empty list without repeats")
        for h in rcpts:
            federation.get(h)
        if not all(h.isascii() for h in (holder.hospital, *rcpts)):
            raise ConfigError("CKKS manifest hospital ids must be ASCII")
        try:
            ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree,
                             coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
                             encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC, n_threads=1)
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"TenSEAL rejected the CKKS parameters: {exc}") from None
        ctx.global_scale = params.scale
        public = _public_bytes(ctx)
        secret = _encode_secret(
            ctx.serialize(save_public_key=False, save_secret_key=True,
                          save_galois_keys=False, save_relin_keys=False),
            os.urandom(32))
        del ctx
        unsigned = EpochManifest(federation_id, epoch, holder.hospital, params, sha256(public),
                                 sha256(_COMMIT_DOMAIN + secret), rcpts)
        manifest = EpochManifest(**{**unsigned.__dict__,
                                    "signature": holder.sign(unsigned.statement())})
        key_id = manifest.key_id
        packages = {}
        for h in rcpts:
            box = seal(federation.get(h).seal_key(), secret,
                       SealLabel(SECRET_KEY_PURPOSE, h, epoch, key_id))
            pkg = SealedKeyPackage(h, epoch, key_id, box, b"")
            packages[h] = SealedKeyPackage(h, epoch, key_id, box, holder.sign(pkg.statement()))
        return CkksKeyring(manifest, public, packages)

    def server_context(self, federation: Federation) -> CkksPublicContext:
        """The aggregator's context, after checking the manifest signature and context hash."""
        self.manifest.verify(federation)
        return CkksPublicContext(self.manifest, self.public_context)

    def open(self, identity: Identity, federation: Federation,
             package: SealedKeyPackage | None = None) -> CkksSecretKey:
        """Open ``identity``'s package (default: ``packages[identity.hospital]``).

        Checks, in order: manifest signature (pinned key holder), that the package is addressed
        to this hospital for this epoch/key id and signed by the key holder, the AEAD, the
        commitment in the manifest, and that the key's public context is the manifest's.
        """
        me = identity.hospital
        m = self.manifest
        m.verify(federation)
        if package is None:
            if me not in self.packages:
                raise CryptoError(f"no CKKS key package for {me!r} in epoch {m.epoch}")
            package = self.packages[me]
        if me not in m.recipients:
            raise CryptoError(f"{me!r} is not a recipient of CKKS epoch {m.epoch}")
        if package.recipient != me or package.epoch != m.epoch or package.key_id != m.key_id:
            raise CryptoError(f"CKKS key package is addressed to {package.recipient!r} epoch "
                              f"{package.epoch}, not to {me!r} epoch {m.epoch}")
        package.verify(federation, m.key_holder)
        secret = open_sealed(identity.seal_private(), package.sealed,
                             SealLabel(SECRET_KEY_PURPOSE, me, m.epoch, m.key_id))
        if sha256(_COMMIT_DOMAIN + secret) != m.key_commitment:
            raise CryptoError("CKKS key package does not match the manifest's key commitment")
        ctx_bytes, flood_key = _decode_secret(secret)
        try:
            ctx = ts.context_from(ctx_bytes, n_threads=1)
        except (ValueError, RuntimeError, TypeError):
            raise CryptoError("CKKS secret context does not parse") from None
        if not ctx.has_secret_key() or sha256(_public_bytes(ctx)) != m.public_context_sha256:
            raise CryptoError("CKKS secret context does not match the manifest")
        return CkksSecretKey(m, ctx, flood_key)
