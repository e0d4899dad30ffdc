"""``fedrx certs init``: a private CA, mutual-TLS certificates and the pinned federation file.

Layout written under ``OUT`` (private keys mode 0600, never logged)::

    ca.pem  ca.key                       EC P-256 CA (10 years), signs every HOSPITAL's
                                         TLS certificate
    aggregator.pem  aggregator.key       serverAuth+clientAuth, SAN localhost, 127.0.0.1, ::1,
                                         issued by a one-shot aggregator root (below)
    aggregator.identity.json             the aggregator's Ed25519 receipt-signing identity
    hospitals/<id>/tls.pem  tls.key      clientAuth, CN = SAN = the hospital id
    hospitals/<id>/identity.json         the hospital's long-term Ed25519/X25519 identity
    federation.json                      the deployment file (:class:`Deployment`)

``federation.json`` (``fedrx-deployment/1``) pins every identity: the federation's public
keys (:meth:`Federation.to_json`), the SHA-256 fingerprint (of the DER encoding) of the CA
certificate, of the aggregator's TLS certificate and of each hospital's TLS certificate,
and the aggregator's Ed25519 receipt-signing public key (``aggregator_sign_public``, hex;
see :mod:`fedrx.receipts`).
A TLS peer whose certificate is not the pinned one for its hospital id is refused, even
if the CA signed it. Only public material goes into this file; it is copied to every site.

Hospitals pin the aggregator's certificate too, although grpc-python cannot show a client
the server's certificate: the aggregator's certificate is issued by a ONE-SHOT root whose
private key signs exactly that certificate and is then dropped (never written anywhere).
That root certificate travels inside ``federation.json`` (``aggregator_root_pem``) and is
the ONLY root a hospital trusts for the server, so a certificate that anyone (including
the holder of ``ca.key``) issues later for the aggregator's name fails the TLS handshake.
Renewing the aggregator certificate therefore means running ``fedrx certs init`` again
and distributing the new ``federation.json``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedrx.atomic import atomic_write_bytes
from fedrx.canonical import canonical_json
from fedrx.errors import ConfigError
from fedrx.nodes.taskspec import TaskSpec
from fedrx.secagg.identity import Federation, Identity

HOSPITAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
AGGREGATOR_CN = "fedrx-aggregator"
FORMAT = "fedrx-deployment/2"
AGGREGATOR_IDENTITY = "aggregator"
"""The name inside ``aggregator.identity.json`` (a :class:`Identity`; only its Ed25519 key
is used, to sign round receipts)."""


def fingerprint(pem: bytes) -> str:
    """SHA-256 (hex) of a PEM certificate's DER encoding."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise ConfigError("not a PEM certificate") from None
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True)
class Deployment:
    """The pinned deployment: federation keys + TLS fingerprints (hex SHA-256 of DER)."""

    federation: Federation
    ca_sha256: str
    aggregator_sha256: str
    tls_sha256: Mapping[str, str]
    aggregator_sign_public: bytes
    """The aggregator's pinned Ed25519 public key (32 raw bytes): signs round receipts."""
    aggregator_root: bytes
    """PEM of the one-shot root that issued the aggregator's TLS certificate (its key is
    gone): the only root hospitals trust for the server."""
    task: TaskSpec | None = None
    """The pinned task specification (``task.json``), with its SHA-256; None in a
    federation file made without ``--task``."""

    def to_json(self) -> dict:
        doc = {"format": FORMAT, "federation": self.federation.to_json(),
               "ca_sha256": self.ca_sha256, "aggregator_sha256": self.aggregator_sha256,
               "tls_sha256": dict(sorted(self.tls_sha256.items())),
               "aggregator_sign_public": self.aggregator_sign_public.hex(),
               "aggregator_root_pem": self.aggregator_root.decode("ascii")}
        if self.task is not None:
            doc["task"] = self.task.to_json()
            doc["task_sha256"] = self.task.sha256
        return doc

    def pinned_task(self, where: str) -> TaskSpec:
        """The pinned task spec; ConfigError if the federation file pins none."""
        if self.task is None:
            raise ConfigError(f"{where}: the federation file pins no task spec (run "
                              "`fedrx task init`, then `fedrx certs init --task task.json`)")
        return self.task

    @property
    def federation_id(self) -> str:
        """SHA-256 of the canonical JSON of the pinned content."""
        return hashlib.sha256(canonical_json(self.to_json())).hexdigest()

    @property
    def hospitals(self) -> list[str]:
        return sorted(self.federation.members)

    def hospital_for_cert(self, pem: bytes) -> str | None:
        """The hospital whose pinned TLS certificate is ``pem`` (None if none is)."""
        fp = fingerprint(pem)
        for h, pinned in self.tls_sha256.items():
            if pinned == fp:
                return h
        return None

    @staticmethod
    def load(path: Path) -> Deployment:
        try:
            obj = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read federation file {path}: {exc.strerror}") from None
        except ValueError:
            raise ConfigError(f"federation file {path} is not JSON") from None
        if isinstance(obj, dict) and obj.get("format") == "fedrx-deployment/1":
            raise ConfigError(f"federation file {path} predates aggregator certificate "
                              "pinning (fedrx-deployment/1): run `fedrx certs init` again")
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ConfigError(f"federation file {path} is not a {FORMAT} document")
        fed = Federation.from_json(obj.get("federation"))
        tls = obj.get("tls_sha256")
        if not isinstance(tls, dict) or set(tls) != set(fed.members):
            raise ConfigError(f"federation file {path}: tls_sha256 must pin every member")
        for v in [obj.get("ca_sha256"), obj.get("aggregator_sha256"), *tls.values()]:
            if not isinstance(v, str) or not re.fullmatch(r"[0-9a-f]{64}", v):
                raise ConfigError(f"federation file {path}: malformed fingerprint")
        agg_pub = obj.get("aggregator_sign_public")
        if not isinstance(agg_pub, str) or not re.fullmatch(r"[0-9a-f]{64}", agg_pub):
            raise ConfigError(f"federation file {path}: aggregator_sign_public must be the "
                              "aggregator's Ed25519 public key (64 hex digits)")
        root = obj.get("aggregator_root_pem")
        try:
            root_cert = x509.load_pem_x509_certificate(str(root).encode("ascii"))
            is_ca = root_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except (ValueError, UnicodeError, x509.ExtensionNotFound):
            is_ca = False
        if not isinstance(root, str) or not is_ca:
            raise ConfigError(f"federation file {path}: aggregator_root_pem must be the PEM "
                              "CA certificate that issued the aggregator's certificate")
        task = None
        if "task" in obj:
            task = TaskSpec.from_json(obj["task"], f"federation file {path} (task)")
            if obj.get("task_sha256") != task.sha256:
                raise ConfigError(f"federation file {path}: the pinned task spec was edited "
                                  f"after pinning (SHA-256 {task.sha256[:16]}... is not the "
                                  f"pinned {str(obj.get('task_sha256'))[:16]}...)")
        return Deployment(fed, obj["ca_sha256"], obj["aggregator_sha256"], dict(tls),
                          bytes.fromhex(agg_pub), root.encode("ascii"), task)


def _write(path: Path, data: bytes, private: bool) -> None:
    atomic_write_bytes(path, data, mode=0o600 if private else 0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject_cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool, sans: Sequence[x509.GeneralName],
          usages: Sequence[x509.ObjectIdentifier], days: int) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer if not ca else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), True))
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                          False), True)
    else:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                          False), True)
        b = b.add_extension(x509.ExtendedKeyUsage(list(usages)), False)
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), False)
    return b.sign(issuer_key, hashes.SHA256())


def init_certs(out: Path, hospitals: Sequence[str], *, days: int = 825,
               force: bool = False, task: TaskSpec | None = None) -> Deployment:
    """Create the CA, TLS certificates, identities and ``federation.json`` under ``out``;
    ``task``: the task spec to pin (also written to ``out/task.json``)."""
    out = Path(out)
    hs = [h.strip() for h in hospitals if h.strip()]
    if not hs:
        raise ConfigError("--hospitals: give at least one hospital id (comma-separated)")
    bad = [h for h in hs if not HOSPITAL_ID.match(h)]
    if bad:
        raise ConfigError(f"invalid hospital id {bad[0]!r} (letters, digits, _ . -; "
                          f"at most 64 characters)")
    if len(set(hs)) != len(hs):
        raise ConfigError("--hospitals lists a hospital twice")
    if not 1 <= days <= 36500:
        raise ConfigError(f"--days must be between 1 and 36500, got {days}")
    if (out / "federation.json").exists() and not force:
        raise ConfigError(f"{out}/federation.json exists; refusing to overwrite keys "
                          "(use a new folder)")
    try:  # before any key is generated: the folder must be one we can write into
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there "
                          f"({exc.strerror or type(exc).__name__})") from None
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedrx federation CA")])
    ca_cert = _cert("fedrx federation CA", ca_key, ca_name, ca_key, ca=True, sans=(),
                    usages=(), days=3650)
    pem = serialization.Encoding.PEM
    _write(out / "ca.key", _key_pem(ca_key), True)
    _write(out / "ca.pem", ca_cert.public_bytes(pem), False)
    # One-shot root for the aggregator: its key signs the aggregator's certificate below and
    # is then dropped (never written), so its certificate pins the aggregator's (see above).
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                              "fedrx aggregator pin (one-shot root)")])
    root_cert = _cert("fedrx aggregator pin (one-shot root)", root_key, root_name, root_key,
                      ca=True, sans=(), usages=(), days=3650)
    agg_key = ec.generate_private_key(ec.SECP256R1())
    agg = _cert(AGGREGATOR_CN, agg_key, root_name, root_key, ca=False, sans=[
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1"))],
        usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], days=days)
    del root_key  # nothing else is ever signed by it
    _write(out / "aggregator.key", _key_pem(agg_key), True)
    _write(out / "aggregator.pem", agg.public_bytes(pem), False)
    tls: dict[str, str] = {}
    identities = []
    for h in hs:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(h, key, ca_name, ca_key, ca=False, sans=[x509.DNSName(h)],
                     usages=[ExtendedKeyUsageOID.CLIENT_AUTH], days=days)
        d = out / "hospitals" / h
        _write(d / "tls.key", _key_pem(key), True)
        _write(d / "tls.pem", cert.public_bytes(pem), False)
        tls[h] = fingerprint(cert.public_bytes(pem))
        ident = Identity.generate(h)
        ident.save(d / "identity.json")
        identities.append(ident)
    agg_ident = Identity.generate(AGGREGATOR_IDENTITY)
    agg_ident.save(out / "aggregator.identity.json")  # mode 0600, atomic
    dep = Deployment(Federation.of(identities), fingerprint(ca_cert.public_bytes(pem)),
                     fingerprint(agg.public_bytes(pem)), tls, agg_ident.public.sign_public,
                     root_cert.public_bytes(pem), task)
    if task is not None:
        task.save(out / "task.json")
    _write(out / "federation.json", (json.dumps(dep.to_json(), indent=1) + "\n").encode(),
           False)
    return dep


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes for one party: the CA (root of trust), its certificate and private key."""

    ca: bytes
    cert: bytes
    key: bytes = b""

    def __repr__(self) -> str:
        return "TlsMaterial(<pem>, <pem>, <private key hidden>)"


def load_tls(ca: Path, cert: Path, key: Path, dep: Deployment, *,
             expect_hospital: str | None) -> TlsMaterial:
    """Read PEM files and check them against the pins (``expect_hospital`` None = aggregator)."""
    def read(p: Path, what: str) -> bytes:
        try:
            return Path(p).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {what} {p}: {exc.strerror}") from None

    mat = TlsMaterial(read(ca, "CA certificate"), read(cert, "certificate"),
                      read(key, "private key"))
    if fingerprint(mat.ca) != dep.ca_sha256:
        raise ConfigError(f"CA certificate {ca} is not the federation's pinned CA")
    fp = fingerprint(mat.cert)
    want = dep.aggregator_sha256 if expect_hospital is None else \
        dep.tls_sha256.get(expect_hospital)
    if fp != want:
        who = "the aggregator" if expect_hospital is None else f"hospital {expect_hospital}"
        raise ConfigError(f"certificate {cert} is not the one pinned for {who}")
    return mat
