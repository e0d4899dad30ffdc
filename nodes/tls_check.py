"""A node's TLS private key, checked before anything listens or dials: it must be a PEM
private key and the key of the node's own certificate. grpc would otherwise fail later
with an error naming the address (``Failed to bind to 127.0.0.1:0``), not the key file."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedrx.errors import ConfigError


def check_key_pair(cert_pem: bytes, key_pem: bytes, cert: Path, key: Path) -> None:
    """Raise ConfigError naming ``key`` unless ``key_pem`` is an unencrypted PEM private key
    whose public key is the one in certificate ``cert_pem`` (file ``cert``)."""
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"private key {key} is not an unencrypted PEM private key") from None
    try:
        public = x509.load_pem_x509_certificate(cert_pem).public_key()
    except ValueError:
        raise ConfigError(f"certificate {cert} is not a PEM certificate") from None
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(*raw) != public.public_bytes(*raw):
        raise ConfigError(f"private key {key} does not belong to certificate {cert}")
