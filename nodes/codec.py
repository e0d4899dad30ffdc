"""Conversion between fedrx's protocol dataclasses and the ``fedrx.v1`` protobuf messages.

Hand-written (the generated modules under ``fedrx.proto.gen`` are never edited). No pickle,
no eval: numpy arrays travel as raw little-endian bytes + dtype + shape (:func:`encode_array`)
and every decoded value is validated against :class:`Limits` before a dataclass is built:

* arrays: dtype in an allow-list, ``len(data) == prod(shape) * itemsize``, at most
  ``max_elements`` entries, 1-D where the protocol says so, finite where required;
* identifiers (hospital ids, stages, kinds): non-empty, at most 128 characters;
* byte strings: at most ``max_bytes_field`` bytes; repeated fields: at most
  ``max_repeated`` entries; ``params_json`` a JSON object of plain values.

A violation raises :class:`CodecError` (a :class:`~fedrx.errors.ProtocolError`): the node
rejects the frame with a gRPC status / an Error frame and keeps serving.

Chunking (:func:`chunk_envelope`, :class:`Reassembler`): a serialised Envelope above
``CHUNK_BYTES`` (1 MiB) travels as consecutive chunks; the first declares the total size and
SHA-256, which the receiver checks against its limit BEFORE buffering and against the bytes
after reassembly.

Adding a message type = one proto message + one ``oneof`` field in ``Envelope`` + one
:func:`_register` call with an encoder and a decoder here (the CKKS stage messages of
:mod:`fedrx.secagg.ckks.messages` are registered this way; importing this module
therefore imports TenSEAL).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedrx.errors import ConfigError, ProtocolError
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb
from fedrx.protocol.messages import EvalReport, EvalRequest, TrainAck, TrainRequest
from fedrx.protocol.protection import PlainUpload, PlainUploadRequest
from fedrx.secagg.ckks import keyring as ckks
from fedrx.secagg.ckks import messages as pc
from fedrx.secagg.ckks.params import CkksParams
from fedrx.secagg.mask import messages as mk

CHUNK_BYTES = 1 << 20
"""Largest Envelope slice per frame (bytes). Frames stay far below MAX_FRAME_BYTES."""
MAX_FRAME_BYTES = 4 << 20
"""grpc max send/receive message length set on every channel and server (bytes)."""
MAX_ID_CHARS = 128
ALLOWED_DTYPES = ("<f4", "<f8", "<u8", "<i8")


class CodecError(ProtocolError):
    """A message could not be encoded or failed validation on decode."""

    code = "malformed"


class OversizeError(CodecError):
    """A message declares or carries more bytes/elements than the limits allow."""

    code = "oversized"


@dataclass(frozen=True)
class Limits:
    """Decode limits. ``max_message_bytes``: one reassembled Envelope (bytes);
    ``max_elements``: entries of one array; ``max_bytes_field``: one bytes field;
    ``max_repeated``: entries of one repeated field."""

    max_message_bytes: int = 256 << 20
    max_elements: int = 16 << 20
    max_bytes_field: int = 256 << 20
    max_repeated: int = 100_000


DEFAULT_LIMITS = Limits()


# ------------------------------------------------------------------------------ arrays


def encode_array(a: np.ndarray) -> pb.Array:
    """Raw little-endian C-order bytes + dtype + shape."""
    arr = np.asarray(a)
    dt = arr.dtype.newbyteorder("<")
    if dt.str not in ALLOWED_DTYPES:
        raise CodecError(f"cannot encode array of dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=dt)
    return pb.Array(dtype=dt.str, shape=list(arr.shape), data=arr.tobytes())


def decode_array(msg: pb.Array, lim: Limits, *, dtype: str | None = None, ndim: int | None = 1,
                 finite: bool = False, what: str = "array") -> np.ndarray:
    """Validate and decode; returns a writable native-endian copy."""
    if msg.dtype not in ALLOWED_DTYPES or (dtype is not None and msg.dtype != dtype):
        raise CodecError(f"{what}: dtype {msg.dtype[:16]!r} not allowed"
                         + (f" (expected {dtype})" if dtype else ""))
    shape = tuple(int(s) for s in msg.shape)
    if ndim is not None and len(shape) != ndim:
        raise CodecError(f"{what}: expected {ndim} dimension(s), got {len(shape)}")
    n = math.prod(shape)
    if n > lim.max_elements:
        raise OversizeError(f"{what}: {n} elements exceeds the limit {lim.max_elements}")
    dt = np.dtype(msg.dtype)
    if len(msg.data) != n * dt.itemsize:
        raise CodecError(f"{what}: {len(msg.data)} bytes do not match shape {shape} "
                         f"of {msg.dtype}")
    arr = np.frombuffer(msg.data, dtype=dt).reshape(shape).astype(dt.newbyteorder("="))
    if finite and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise CodecError(f"{what}: non-finite values")
    return arr


# ----------------------------------------------------------------------- field checks


def _id(s: str, what: str) -> str:
    if not isinstance(s, str) or not s or len(s) > MAX_ID_CHARS or not s.isprintable():
        raise CodecError(f"{what}: invalid identifier")
    return s


def _ids(items: Any, lim: Limits, what: str) -> tuple[str, ...]:
    if len(items) > lim.max_repeated:
        raise OversizeError(f"{what}: too many entries")
    return tuple(_id(s, what) for s in items)


def _bytes(b: bytes, lim: Limits, what: str, exact: int | None = None) -> bytes:
    if len(b) > lim.max_bytes_field:
        raise OversizeError(f"{what}: {len(b)} bytes exceeds the limit")
    if exact is not None and len(b) != exact:
        raise CodecError(f"{what}: expected {exact} bytes, got {len(b)}")
    return bytes(b)


def _rep(items: Any, lim: Limits, what: str) -> Any:
    if len(items) > lim.max_repeated:
        raise OversizeError(f"{what}: too many entries")
    return items


def _round(r: int) -> int:
    if not 1 <= r < 2**62:
        raise CodecError(f"round {r} out of range")
    return int(r)


def _plain_json(v: Any, depth: int = 0) -> bool:
    if depth > 8:
        return False
    if v is None or isinstance(v, bool | int | str):
        return True
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, list):
        return all(_plain_json(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain_json(x, depth + 1) for k, x in v.items())
    return False


def _params_out(params: Any) -> str:
    d = dict(params)
    for k, v in list(d.items()):
        if isinstance(v, bytes):
            d[k] = v.decode("ascii") if v.isascii() else v.hex()
    if not _plain_json(d):
        raise CodecError("round params must be plain JSON values")
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def _params_in(text: str) -> dict[str, Any]:
    if len(text) > 65536:
        raise OversizeError("params_json too long")
    try:
        d = json.loads(text or "{}")
    except ValueError:
        raise CodecError("params_json is not JSON") from None
    if not isinstance(d, dict) or not _plain_json(d):
        raise CodecError("params_json must be a JSON object of plain values")
    return d


def _sums_out(sums: Any) -> dict[str, pb.MetricSums]:
    out = {}
    for kind, values in sums.items():
        m = pb.MetricSums()
        for k, v in values.items():
            if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
                raise CodecError(f"metric {k!r} is not a number")
            if isinstance(v, int | np.integer):
                m.values[k].integer = int(v)
            else:
                m.values[k].real = float(v)
        out[kind] = m
    return out


def _sums_in(sums: Any, lim: Limits) -> dict[str, dict[str, float | int]]:
    if len(sums) > 4:
        raise CodecError("too many metric groups")
    out: dict[str, dict[str, float | int]] = {}
    for kind, m in sums.items():
        _id(kind, "metric group")
        _rep(m.values, Limits(max_repeated=64), "metric sums")
        d: dict[str, float | int] = {}
        for k, num in m.values.items():
            _id(k, "metric name")
            which = num.WhichOneof("value")
            if which == "integer":
                d[k] = int(num.integer)
            elif which == "real" and math.isfinite(num.real):
                d[k] = float(num.real)
            else:
                raise CodecError(f"metric {k[:32]!r} is missing or not finite")
        out[kind] = d
    return out


# -------------------------------------------------------------------- message table

Encoder = Callable[[Any], Any]
Decoder = Callable[[Any, Limits], Any]
_BY_TYPE: dict[type, tuple[str, Encoder]] = {}
_BY_FIELD: dict[str, Decoder] = {}


def _register(cls: type, field: str, enc: Encoder, dec: Decoder) -> None:
    _BY_TYPE[cls] = (field, enc)
    _BY_FIELD[field] = dec


def _dec_train(m: pb.TrainRequest, lim: Limits) -> TrainRequest:
    w = decode_array(m.weights, lim, dtype="<f4", finite=True, what="weights")
    if m.vector_length != w.size + 1:
        raise CodecError(f"vector_length {m.vector_length} != {w.size} weights + 1")
    parts = _ids(m.participants, lim, "participants")
    if len(set(parts)) != len(parts):
        raise CodecError("participants listed twice")
    return TrainRequest(_bytes(m.session_id, lim, "session_id", 32), _round(m.round), parts, w,
                        _id(m.model_hash, "model_hash"), _id(m.protection, "protection"),
                        int(m.vector_length), _params_in(m.params_json))


_register(TrainRequest, "train_request", lambda r: pb.TrainRequest(
    session_id=r.session_id, round=r.round, participants=list(r.participants),
    weights=encode_array(np.asarray(r.weights, dtype=np.float32)), model_hash=r.model_hash,
    protection=r.protection, vector_length=r.vector_length,
    params_json=_params_out(r.params)), _dec_train)

_register(TrainAck, "train_ack", lambda a: pb.TrainAck(
    round=a.round, hospital=a.hospital, status=a.status, reason=a.reason,
    ledger_head=a.ledger_head),
    lambda m, lim: TrainAck(_round(m.round), _id(m.hospital, "hospital"),
                            _id(m.status, "status"), m.reason[:1000], m.ledger_head[:256]))

_register(EvalRequest, "eval_request", lambda r: pb.EvalRequest(
    round=r.round, weights=encode_array(np.asarray(r.weights, dtype=np.float32)),
    model_hash=r.model_hash, part=r.part, personalize=bool(r.personalize)),
    lambda m, lim: EvalRequest(_round(m.round), decode_array(
        m.weights, lim, dtype="<f4", finite=True, what="weights"), _id(m.model_hash, "hash"),
        _id(m.part, "part"), bool(m.personalize)))

_register(EvalReport, "eval_report", lambda r: pb.EvalReport(
    round=r.round, hospital=r.hospital, sums=_sums_out(r.sums)),
    lambda m, lim: EvalReport(_round(m.round), _id(m.hospital, "hospital"),
                              _sums_in(m.sums, lim)))

_register(PlainUploadRequest, "plain_upload_request",
          lambda r: pb.PlainUploadRequest(round=r.round),
          lambda m, lim: PlainUploadRequest(_round(m.round)))

_register(PlainUpload, "plain_upload",
          lambda r: pb.PlainUpload(vector=encode_array(np.asarray(r.vector, np.float64))),
          lambda m, lim: PlainUpload(decode_array(m.vector, lim, dtype="<f8", finite=True,
                                                  what="vector")))

# -- mask


def _ad_out(a: mk.AdvertiseKeys) -> pb.AdvertiseKeys:
    return pb.AdvertiseKeys(hospital=a.hospital, round=a.round, enc_public=a.enc_public,
                            mask_public=a.mask_public, signature=a.signature)


def _ad_in(m: pb.AdvertiseKeys, lim: Limits) -> mk.AdvertiseKeys:
    return mk.AdvertiseKeys(_id(m.hospital, "hospital"), _round(m.round),
                            _bytes(m.enc_public, lim, "enc_public", 32),
                            _bytes(m.mask_public, lim, "mask_public", 32),
                            _bytes(m.signature, lim, "signature", 64))


def _share_out(s: mk.EncryptedShare) -> pb.EncryptedShare:
    return pb.EncryptedShare(sender=s.sender, receiver=s.receiver, nonce=s.nonce,
                             ciphertext=s.ciphertext)


def _share_in(m: pb.EncryptedShare, lim: Limits) -> mk.EncryptedShare:
    return mk.EncryptedShare(_id(m.sender, "sender"), _id(m.receiver, "receiver"),
                             _bytes(m.nonce, lim, "nonce", 12),
                             _bytes(m.ciphertext, Limits(max_bytes_field=4096), "ciphertext"))


def _sig_out(s: mk.ConsistencySignature) -> pb.ConsistencySignature:
    return pb.ConsistencySignature(hospital=s.hospital, round=s.round, signature=s.signature)


def _sig_in(m: pb.ConsistencySignature, lim: Limits) -> mk.ConsistencySignature:
    return mk.ConsistencySignature(_id(m.hospital, "hospital"), _round(m.round),
                                   _bytes(m.signature, lim, "signature", 64))


def _dec_masked(m: pb.MaskedInput, lim: Limits) -> mk.MaskedInput:
    if not 1 <= m.modulus_bits <= 64:
        raise CodecError("modulus_bits out of range")
    if m.length > lim.max_elements:
        raise OversizeError(f"masked vector of {m.length} entries exceeds the limit")
    if len(m.packed) != (m.length * m.modulus_bits + 7) // 8:
        raise CodecError("packed vector length does not match length * modulus_bits")
    return mk.MaskedInput(_id(m.hospital, "hospital"), _round(m.round), int(m.modulus_bits),
                          int(m.length), _bytes(m.packed, lim, "packed"))


_register(mk.AdvertiseRequest, "advertise_request",
          lambda r: pb.AdvertiseRequest(round=r.round),
          lambda m, lim: mk.AdvertiseRequest(_round(m.round)))
_register(mk.AdvertiseKeys, "advertise_keys", _ad_out, _ad_in)
_register(mk.ShareKeysRequest, "share_keys_request", lambda r: pb.ShareKeysRequest(
    round=r.round, advertised=[_ad_out(a) for a in r.advertised]),
    lambda m, lim: mk.ShareKeysRequest(_round(m.round), tuple(
        _ad_in(a, lim) for a in _rep(m.advertised, lim, "advertised"))))
_register(mk.ShareKeysReply, "share_keys_reply", lambda r: pb.ShareKeysReply(
    hospital=r.hospital, round=r.round, shares=[_share_out(s) for s in r.shares]),
    lambda m, lim: mk.ShareKeysReply(_id(m.hospital, "hospital"), _round(m.round), tuple(
        _share_in(s, lim) for s in _rep(m.shares, lim, "shares"))))
_register(mk.MaskedInputRequest, "masked_input_request", lambda r: pb.MaskedInputRequest(
    round=r.round, shares=[_share_out(s) for s in r.shares]),
    lambda m, lim: mk.MaskedInputRequest(_round(m.round), tuple(
        _share_in(s, lim) for s in _rep(m.shares, lim, "shares"))))
_register(mk.MaskedInput, "masked_input", lambda r: pb.MaskedInput(
    hospital=r.hospital, round=r.round, modulus_bits=r.modulus_bits, length=r.length,
    packed=r.packed), _dec_masked)
_register(mk.ConsistencyRequest, "consistency_request", lambda r: pb.ConsistencyRequest(
    round=r.round, survivors=list(r.survivors)),
    lambda m, lim: mk.ConsistencyRequest(_round(m.round), _ids(m.survivors, lim, "survivors")))
_register(mk.ConsistencySignature, "consistency_signature", _sig_out, _sig_in)
_register(mk.UnmaskRequest, "unmask_request", lambda r: pb.UnmaskRequest(
    round=r.round, survivors=list(r.survivors), dropped=list(r.dropped),
    signatures=[_sig_out(s) for s in r.signatures]),
    lambda m, lim: mk.UnmaskRequest(
        _round(m.round), _ids(m.survivors, lim, "survivors"), _ids(m.dropped, lim, "dropped"),
        tuple(_sig_in(s, lim) for s in _rep(m.signatures, lim, "signatures"))))
_register(mk.UnmaskReply, "unmask_reply", lambda r: pb.UnmaskReply(
    hospital=r.hospital, round=r.round, shares=[pb.RevealedShare(
        owner=s.owner, kind=s.kind, share=s.share) for s in r.shares]),
    lambda m, lim: mk.UnmaskReply(_id(m.hospital, "hospital"), _round(m.round), tuple(
        mk.RevealedShare(_id(s.owner, "owner"), _id(s.kind, "kind"),
                         _bytes(s.share, Limits(max_bytes_field=1024), "share"))
        for s in _rep(m.shares, lim, "shares"))))


# -- ckks
# Every nested object travels as explicit typed fields; ciphertexts, the key-less public
# context and sealed packages as opaque bytes with hard size caps (independent of the
# configured CKKS parameters: the largest ring the HE standard table allows).

MAX_CKKS_CHUNK_BYTES = 16 * 32768 + 4096
"""One serialised ciphertext: 2 polys x N x 8 bytes + slack at the largest N (32768)."""
MAX_CKKS_PUBLIC_CONTEXT = 4096
MAX_CKKS_SEALED_BYTES = (4 << 20) + 1024
"""A sealed key package: the secret context (<= 4 MiB in fedrx.secagg.ckks) + seal framing."""
MAX_CKKS_CHUNKS = 4096
"""Ciphertexts per upload/aggregate: 4096 x 4096 slots covers 16M parameters."""


def _ckks_params_out(p: CkksParams) -> pb.CkksParams:
    return pb.CkksParams(poly_modulus_degree=p.poly_modulus_degree,
                         coeff_mod_bit_sizes=list(p.coeff_mod_bit_sizes),
                         scale_bits=p.scale_bits, noise_sigma=p.noise_sigma, tail=p.tail)


def _ckks_params_in(m: pb.CkksParams) -> CkksParams:
    if len(m.coeff_mod_bit_sizes) > 8 or not (math.isfinite(m.noise_sigma)
                                                and math.isfinite(m.tail)):
        raise CodecError("malformed CKKS parameters")
    p = CkksParams(int(m.poly_modulus_degree), tuple(int(b) for b in m.coeff_mod_bit_sizes),
                   int(m.scale_bits), float(m.noise_sigma), float(m.tail))
    try:
        p.validate()
    except ConfigError as exc:
        raise CodecError(f"CKKS parameters: {exc}") from None
    return p


def _epoch(e: int) -> int:
    if not 0 <= e < 2**63:
        raise CodecError("CKKS epoch out of range")
    return int(e)


def _manifest_out(m: ckks.EpochManifest) -> pb.EpochManifest:
    return pb.EpochManifest(federation_id=m.federation_id, epoch=m.epoch, key_holder=m.key_holder,
                            params=_ckks_params_out(m.params),
                            public_context_sha256=m.public_context_sha256,
                            key_commitment=m.key_commitment, recipients=list(m.recipients),
                            signature=m.signature)


def _manifest_in(m: pb.EpochManifest, lim: Limits) -> ckks.EpochManifest:
    if not m.HasField("params"):
        raise CodecError("CKKS manifest without parameters")
    return ckks.EpochManifest(
        _bytes(m.federation_id, lim, "federation_id", 32), _epoch(m.epoch),
        _id(m.key_holder, "key_holder"), _ckks_params_in(m.params),
        _bytes(m.public_context_sha256, lim, "public_context_sha256", 32),
        _bytes(m.key_commitment, lim, "key_commitment", 32),
        _ids(m.recipients, lim, "recipients"), _bytes(m.signature, lim, "signature", 64))


def _package_out(p: ckks.SealedKeyPackage) -> pb.SealedKeyPackage:
    return pb.SealedKeyPackage(recipient=p.recipient, epoch=p.epoch, key_id=p.key_id,
                               sealed=p.sealed, signature=p.signature)


def _package_in(m: pb.SealedKeyPackage, lim: Limits) -> ckks.SealedKeyPackage:
    return ckks.SealedKeyPackage(
        _id(m.recipient, "recipient"), _epoch(m.epoch), _bytes(m.key_id, lim, "key_id", 32),
        _bytes(m.sealed, Limits(max_bytes_field=min(lim.max_bytes_field,
                                                    MAX_CKKS_SEALED_BYTES)), "sealed package"),
        _bytes(m.signature, lim, "signature", 64))


def _public_ctx(b: bytes, lim: Limits) -> bytes:
    return _bytes(b, Limits(max_bytes_field=MAX_CKKS_PUBLIC_CONTEXT), "public_context")


def _keyring_out(k: ckks.CkksKeyring) -> pb.CkksKeyring:
    return pb.CkksKeyring(manifest=_manifest_out(k.manifest), public_context=k.public_context,
                          packages=[_package_out(k.packages[h]) for h in sorted(k.packages)])


def _keyring_in(m: pb.CkksKeyring, lim: Limits) -> ckks.CkksKeyring:
    if not m.HasField("manifest"):
        raise CodecError("CKKS keyring without a manifest")
    pkgs: dict[str, ckks.SealedKeyPackage] = {}
    for p in _rep(m.packages, lim, "packages"):
        pkg = _package_in(p, lim)
        if pkg.recipient in pkgs:
            raise CodecError(f"two key packages for {pkg.recipient!r}")
        pkgs[pkg.recipient] = pkg
    return ckks.CkksKeyring(_manifest_in(m.manifest, lim), _public_ctx(m.public_context, lim),
                            pkgs)


def _header_out(h: pc.UploadHeader) -> pb.UploadHeader:
    return pb.UploadHeader(hospital=h.hospital, digests=list(h.digests), signature=h.signature)


def _header_in(m: pb.UploadHeader, lim: Limits) -> pc.UploadHeader:
    if len(m.digests) > MAX_CKKS_CHUNKS:
        raise OversizeError("upload header: too many digests")
    return pc.UploadHeader(_id(m.hospital, "hospital"),
                           tuple(_bytes(d, lim, "digest", 32) for d in m.digests),
                           _bytes(m.signature, lim, "signature", 64))


def _ciphertexts(items: Any, lim: Limits, what: str) -> tuple[bytes, ...]:
    if len(items) > MAX_CKKS_CHUNKS:
        raise OversizeError(f"{what}: {len(items)} ciphertexts exceeds {MAX_CKKS_CHUNKS}")
    cap = Limits(max_bytes_field=min(lim.max_bytes_field, MAX_CKKS_CHUNK_BYTES))
    out = tuple(_bytes(c, cap, what) for c in items)
    if any(not c for c in out):
        raise CodecError(f"{what}: empty ciphertext")
    return out


def _delivery_in(m: pb.KeyDelivery, lim: Limits) -> pc.KeyDelivery:
    if not (m.HasField("manifest") and m.HasField("package")):
        raise CodecError("key delivery without manifest or package")
    return pc.KeyDelivery(_manifest_in(m.manifest, lim), _public_ctx(m.public_context, lim),
                          _package_in(m.package, lim))


def _upload_req_out(r: pc.CkksUploadRequest) -> pb.CkksUploadRequest:
    m = pb.CkksUploadRequest(session_id=r.session_id, round=r.round, epoch=r.epoch,
                             key_id=r.key_id, vector_length=r.vector_length)
    if r.delivery is not None:
        m.delivery.CopyFrom(pb.KeyDelivery(manifest=_manifest_out(r.delivery.manifest),
                                           public_context=r.delivery.public_context,
                                           package=_package_out(r.delivery.package)))
    return m


def _upload_req_in(m: pb.CkksUploadRequest, lim: Limits) -> pc.CkksUploadRequest:
    if not 1 <= m.vector_length <= lim.max_elements:
        raise OversizeError("CKKS vector_length out of range")
    return pc.CkksUploadRequest(
        _bytes(m.session_id, lim, "session_id", 32), _round(m.round), _epoch(m.epoch),
        _bytes(m.key_id, lim, "key_id", 32), int(m.vector_length),
        _delivery_in(m.delivery, lim) if m.HasField("delivery") else None)


def _upload_in(m: pb.CkksUpload, lim: Limits) -> pc.CkksUpload:
    if not m.HasField("header"):
        raise CodecError("CKKS upload without its signed header")
    hdr = _header_in(m.header, lim)
    chunks = _ciphertexts(m.chunks, lim, "ciphertext")
    if len(chunks) != len(hdr.digests):
        raise CodecError(f"CKKS upload has {len(chunks)} chunks for {len(hdr.digests)} digests")
    return pc.CkksUpload(_round(m.round), _bytes(m.key_id, lim, "key_id", 32), hdr, chunks)


def _decryption_in(m: pb.CkksDecryption, lim: Limits) -> pc.CkksDecryption:
    if not (math.isfinite(m.error_bound) and m.error_bound >= 0):
        raise CodecError("error_bound must be finite and >= 0")
    return pc.CkksDecryption(_id(m.hospital, "hospital"), _round(m.round),
                             _bytes(m.key_id, lim, "key_id", 32),
                             decode_array(m.total, lim, dtype="<f8", finite=True, what="total"),
                             float(m.error_bound))


_register(pc.CkksKeyringRequest, "ckks_keyring_request", lambda r: pb.CkksKeyringRequest(
    session_id=r.session_id, round=r.round, epoch=r.epoch),
    lambda m, lim: pc.CkksKeyringRequest(_bytes(m.session_id, lim, "session_id", 32),
                                         _round(m.round), _epoch(m.epoch)))
_register(pc.CkksKeyringReply, "ckks_keyring_reply", lambda r: pb.CkksKeyringReply(
    round=r.round, keyring=_keyring_out(r.keyring)),
    lambda m, lim: pc.CkksKeyringReply(_round(m.round), _keyring_in(m.keyring, lim)))
_register(pc.CkksUploadRequest, "ckks_upload_request", _upload_req_out, _upload_req_in)
_register(pc.CkksUpload, "ckks_upload", lambda r: pb.CkksUpload(
    round=r.round, key_id=r.key_id, header=_header_out(r.header), chunks=list(r.chunks)),
    _upload_in)
_register(pc.CkksDecryptRequest, "ckks_decrypt_request", lambda r: pb.CkksDecryptRequest(
    session_id=r.session_id, round=r.round, key_id=r.key_id,
    contributors=[_header_out(h) for h in r.contributors], aggregate=list(r.aggregate)),
    lambda m, lim: pc.CkksDecryptRequest(
        _bytes(m.session_id, lim, "session_id", 32), _round(m.round),
        _bytes(m.key_id, lim, "key_id", 32),
        tuple(_header_in(h, lim) for h in _rep(m.contributors, lim, "contributors")),
        _ciphertexts(m.aggregate, lim, "aggregate ciphertext")))
_register(pc.CkksDecryption, "ckks_decryption", lambda r: pb.CkksDecryption(
    hospital=r.hospital, round=r.round, key_id=r.key_id,
    total=encode_array(np.asarray(r.total, np.float64)), error_bound=r.error_bound),
    _decryption_in)


# ---------------------------------------------------------------------- public API


def supported(msg: Any) -> bool:
    return type(msg) in _BY_TYPE


def encode_message(msg: Any) -> pb.Envelope:
    """The Envelope for a protocol dataclass; CodecError for an unknown type."""
    try:
        field, enc = _BY_TYPE[type(msg)]
    except KeyError:
        raise CodecError(f"no wire encoding for {type(msg).__name__}") from None
    env = pb.Envelope()
    getattr(env, field).CopyFrom(enc(msg))
    return env


def decode_message(env: pb.Envelope, limits: Limits = DEFAULT_LIMITS) -> Any:
    """The validated protocol dataclass in ``env``; CodecError if anything is off."""
    field = env.WhichOneof("msg")
    if field is None or field not in _BY_FIELD:
        raise CodecError("empty or unknown envelope")
    try:
        return _BY_FIELD[field](getattr(env, field), limits)
    except CodecError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise CodecError(f"{field}: {type(exc).__name__}") from None


def envelope_field(env: pb.Envelope) -> str:
    return env.WhichOneof("msg") or ""


def to_bytes(msg: Any) -> bytes:
    return encode_message(msg).SerializeToString()


def from_bytes(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    if len(data) > limits.max_message_bytes:
        raise OversizeError(f"message of {len(data)} bytes exceeds the limit "
                            f"{limits.max_message_bytes}")
    env = pb.Envelope()
    try:
        env.ParseFromString(data)
    except Exception:  # protobuf raises DecodeError (a subclass of Exception)
        raise CodecError("envelope does not parse") from None
    return decode_message(env, limits)


# -------------------------------------------------------------------------- chunks


def chunk_envelope(data: bytes, chunk_bytes: int = CHUNK_BYTES) -> Iterator[pb.Chunk]:
    """Slices of a serialised Envelope; the first carries total size and SHA-256."""
    n = max(1, math.ceil(len(data) / chunk_bytes))
    digest = hashlib.sha256(data).digest()
    for i in range(n):
        part = data[i * chunk_bytes:(i + 1) * chunk_bytes]
        if i == 0:
            yield pb.Chunk(index=0, total_bytes=len(data), sha256=digest, last=n == 1,
                           data=part)
        else:
            yield pb.Chunk(index=i, last=i == n - 1, data=part)


class Reassembler:
    """Collects one chunked Envelope at a time. ``feed`` returns the bytes when complete.

    Invariants: chunks arrive in order with consecutive indices and the same header key;
    the declared total is checked against ``limits.max_message_bytes`` before buffering,
    and the SHA-256 and length after the last chunk.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS, chunk_bytes: int = CHUNK_BYTES):
        self.limits = limits
        self.chunk_bytes = chunk_bytes
        self._key: tuple | None = None
        self._parts: list[bytes] = []
        self._have = 0
        self._total = 0
        self._digest = b""

    @property
    def busy(self) -> bool:
        return self._key is not None

    def reset(self) -> None:
        self._key, self._parts, self._have, self._total, self._digest = None, [], 0, 0, b""

    def feed(self, key: tuple, chunk: pb.Chunk) -> bytes | None:
        if len(chunk.data) > self.chunk_bytes:
            self.reset()
            raise OversizeError(f"chunk of {len(chunk.data)} bytes exceeds {self.chunk_bytes}")
        if chunk.index == 0:
            if self._key is not None:
                self.reset()
                raise CodecError("new chunked message before the previous one completed")
            if chunk.total_bytes > self.limits.max_message_bytes:
                raise OversizeError(f"declared message size {chunk.total_bytes} exceeds the "
                                    f"limit {self.limits.max_message_bytes}")
            if len(chunk.sha256) != 32:
                raise CodecError("first chunk lacks a SHA-256")
            self._key, self._total, self._digest = key, int(chunk.total_bytes), chunk.sha256
        elif self._key != key or chunk.index != len(self._parts):
            self.reset()
            raise CodecError("chunk out of order or for another message")
        self._parts.append(chunk.data)
        self._have += len(chunk.data)
        if self._have > self._total:
            self.reset()
            raise OversizeError("chunks exceed the declared size")
        if not chunk.last:
            return None
        data = b"".join(self._parts)
        ok = len(data) == self._total and hashlib.sha256(data).digest() == self._digest
        self.reset()
        if not ok:
            raise CodecError("reassembled message does not match its size/SHA-256")
        return data
