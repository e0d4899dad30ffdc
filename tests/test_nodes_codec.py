"""fedrx.v1 wire codec: round trips of every protocol message, validation of hostile input,
the wire bytes against golden vectors, and the generated code being up to date with the
.proto sources."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from ckks_golden import ckks_golden_samples
from thckks_golden import thckks_golden_samples

from fedrx.nodes import codec
from fedrx.nodes.codec import CodecError, Limits, OversizeError
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb
from fedrx.protocol.messages import EvalReport, EvalRequest, TrainAck, TrainRequest
from fedrx.protocol.protection import PlainUpload, PlainUploadRequest
from fedrx.protocol.task import model_hash
from fedrx.secagg.mask import messages as mk

W = np.arange(10, dtype=np.float32) / 7
SIG = bytes(range(64))
AD = mk.AdvertiseKeys("h1", 3, b"e" * 32, b"m" * 32, SIG)
SHARE = mk.EncryptedShare("h1", "h2", b"n" * 12, b"c" * 80)
CSIG = mk.ConsistencySignature("h2", 3, SIG)

MESSAGES = [
    TrainRequest(b"s" * 32, 3, ("h1", "h2"), W, model_hash(W), "mask", 11, {"x": 1}),
    TrainAck(3, "h1", "trained", "", "ab" * 32),
    TrainAck(3, "h2", "refused", "budget exhausted"),
    EvalRequest(3, W, model_hash(W), "test", True),
    EvalReport(3, "h1", {"global": {"jaccard": 1.5, "patients": 7},
                         "personal": {"jaccard": 0.25, "patients": 7}}),
    PlainUploadRequest(3),
    PlainUpload(np.linspace(-1, 1, 11)),
    mk.AdvertiseRequest(3),
    AD,
    mk.ShareKeysRequest(3, (AD, dataclasses.replace(AD, hospital="h2"))),
    mk.ShareKeysReply("h1", 3, (SHARE,)),
    mk.MaskedInputRequest(3, (SHARE,)),
    mk.MaskedInput("h1", 3, 20, 12, b"\x07" * 30),
    mk.ConsistencyRequest(3, ("h1", "h2", "h3")),
    CSIG,
    mk.UnmaskRequest(3, ("h1", "h2"), ("h3",), (CSIG,)),
    mk.UnmaskReply("h1", 3, (mk.RevealedShare("h2", mk.SELF_MASK, b"q" * 33),)),
]


def _eq(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and all(_eq(getattr(a, f.name), getattr(b, f.name))
                                          for f in dataclasses.fields(a))
    if isinstance(a, tuple | list):
        return type(a) is type(b) and len(a) == len(b) and all(map(_eq, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_eq(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_is_exact(msg):
    back = codec.from_bytes(codec.to_bytes(msg))
    assert _eq(msg, back)


def test_every_envelope_field_has_a_codec():
    fields = {f.name for f in pb.Envelope.DESCRIPTOR.oneofs_by_name["msg"].fields}
    assert fields == set(codec.ENVELOPE_FIELDS.values())


def _env_with(msg, mutate):
    env = codec.encode_message(msg)
    mutate(env)
    return env


@pytest.mark.parametrize("mutate,exc", [
    (lambda e: e.train_request.weights.shape.__setitem__(0, 11), CodecError),  # shape != data
    (lambda e: setattr(e.train_request.weights, "dtype", "|O"), CodecError),   # objects
    (lambda e: setattr(e.train_request.weights, "dtype", "<f8"), CodecError),  # wrong dtype
    (lambda e: setattr(e.train_request, "vector_length", 99), CodecError),
    (lambda e: setattr(e.train_request, "session_id", b"short"), CodecError),
    (lambda e: setattr(e.train_request, "params_json", "[1]"), CodecError),
    (lambda e: setattr(e.train_request, "params_json", "__import__('os')"), CodecError),
    (lambda e: setattr(e.train_request, "round", 0), CodecError),
    (lambda e: e.train_request.participants.append("h1"), CodecError),
    (lambda e: e.train_request.participants.append(""), CodecError),
], ids=["shape", "object-dtype", "dtype", "vlen", "session", "params", "eval", "round0",
        "dup", "empty-id"])
def test_hostile_train_requests_are_rejected(mutate, exc):
    with pytest.raises(exc):
        codec.decode_message(_env_with(MESSAGES[0], mutate))


def test_non_finite_and_oversized_arrays_are_rejected():
    bad = PlainUpload(np.array([1.0, np.nan]))
    with pytest.raises(CodecError, match="non-finite"):
        codec.from_bytes(codec.to_bytes(bad))
    big = PlainUpload(np.zeros(1000))
    with pytest.raises(OversizeError):
        codec.from_bytes(codec.to_bytes(big), Limits(max_elements=999))
    with pytest.raises(OversizeError):
        codec.from_bytes(codec.to_bytes(big), Limits(max_message_bytes=100))


def test_masking_fields_are_validated():
    env = codec.encode_message(mk.MaskedInput("h1", 3, 20, 12, b"\x07" * 30))
    env.masked_input.length = 13                       # packed size no longer matches
    with pytest.raises(CodecError):
        codec.decode_message(env)
    env = codec.encode_message(AD)
    env.advertise_keys.enc_public = b"x" * 31
    with pytest.raises(CodecError):
        codec.decode_message(env)
    with pytest.raises(CodecError):
        codec.from_bytes(b"\xff\xff\xff")                 # does not parse
    with pytest.raises(CodecError):
        codec.decode_message(pb.Envelope())               # empty
    with pytest.raises(CodecError):
        codec.encode_message(object())


def test_generated_code_is_up_to_date(tmp_path):
    import importlib.util

    root = Path(__file__).resolve().parents[1] / "proto"
    spec = importlib.util.spec_from_file_location("fedrx_proto_generate", root / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    fresh = gen.generate(tmp_path / "gen")
    for f in fresh:
        rel = f.relative_to(tmp_path / "gen")
        current = root / "gen" / rel
        assert current.is_file(), f"{rel} missing: run python proto/generate.py"
        assert current.read_bytes() == f.read_bytes(), \
            f"{rel} is stale: run python proto/generate.py"
    committed = {p.relative_to(root / "gen") for p in (root / "gen").rglob("*.py*")
                 if "__pycache__" not in p.parts}
    assert committed == {f.relative_to(tmp_path / "gen") for f in fresh}


# ------------------------------------------------------------------------------ ckks


def _ckks_round_through_codec():
    """One real CKKS round (3 hospitals) where every request and reply crosses the codec."""
    import os

    from fedrx.protocol.protection import RoundContext
    from fedrx.protocol.protections.ckks import make_ckks_protection
    from fedrx.secagg.ckks.messages import STAGES
    from fedrx.secagg.identity import Federation, Identity

    ids = [Identity.generate(h) for h in ("h1", "h2", "h3")]
    fed = Federation.of(ids)
    server_p = make_ckks_protection(federation=fed)
    ctx = RoundContext(os.urandom(32), 1, ("h1", "h2", "h3"), 5000, {})
    server = server_p.new_server(ctx)
    clients = {i.hospital: make_ckks_protection(federation=fed, identity=i).new_client(
        ctx, i.hospital) for i in ids}
    xs = {h: np.linspace(-1, 1, 5000) * k for k, h in enumerate(clients, 1)}
    for h, c in clients.items():
        c.set_input(xs[h])
    seen = []

    def rt(m):
        back = codec.from_bytes(codec.to_bytes(m))
        assert _eq(m, back)
        seen.append(back)
        return back

    for stage in STAGES:
        reqs = server.requests(stage, list(clients))
        server.collect(stage, {h: rt(clients[h].handle(stage, rt(r))) for h, r in reqs.items()})
    res = server.result()
    return res, sum(xs.values()), seen


def test_ckks_messages_round_trip_through_a_real_round():
    from fedrx.secagg.ckks import messages as pc

    res, exact, seen = _ckks_round_through_codec()
    assert np.max(np.abs(res.total - exact)) <= res.stats["error_bound"]
    kinds = {type(m) for m in seen}
    assert kinds == {pc.CkksKeyringRequest, pc.CkksKeyringReply, pc.CkksUploadRequest,
                     pc.CkksUpload, pc.CkksConfirmRequest, pc.CkksConfirmation,
                     pc.CkksDecryptRequest, pc.CkksDecryption}
    assert any(isinstance(m, pc.CkksUploadRequest) and m.delivery is not None for m in seen)


def test_ckks_fields_are_validated():
    from fedrx.secagg.ckks import messages as pc

    _, _, seen = _ckks_round_through_codec()
    up = next(m for m in seen if isinstance(m, pc.CkksUpload))
    req = next(m for m in seen if isinstance(m, pc.CkksUploadRequest) and m.delivery)
    ring = next(m for m in seen if isinstance(m, pc.CkksKeyringReply))

    def bad(msg, exc=CodecError):
        with pytest.raises(exc):
            codec.from_bytes(codec.to_bytes(msg))

    big = b"x" * (codec.ckks.MAX_CKKS_CHUNK_BYTES + 1)
    bad(dataclasses.replace(up, chunks=(big,) + up.chunks[1:]), OversizeError)
    bad(dataclasses.replace(up, chunks=up.chunks[:-1]))                  # chunks != digests
    bad(dataclasses.replace(up, key_id=b"k" * 31))
    bad(dataclasses.replace(up, header=dataclasses.replace(
        up.header, digests=(b"d" * 31,) + up.header.digests[1:])))
    bad(dataclasses.replace(up, header=dataclasses.replace(up.header, signature=b"s")))
    bad(dataclasses.replace(req, vector_length=0), OversizeError)
    bad(dataclasses.replace(req, delivery=dataclasses.replace(
        req.delivery, public_context=b"p" * 5000)), OversizeError)
    m = ring.keyring.manifest
    bad(dataclasses.replace(ring, keyring=dataclasses.replace(
        ring.keyring, manifest=dataclasses.replace(
            m, params=dataclasses.replace(m.params, poly_modulus_degree=1000)))))
    # a duplicated key package, and a manifest without parameters
    env = codec.encode_message(ring)
    env.ckks_keyring_reply.keyring.packages.append(env.ckks_keyring_reply.keyring.packages[0])
    with pytest.raises(CodecError):
        codec.decode_message(env)
    env = codec.encode_message(ring)
    env.ckks_keyring_reply.keyring.manifest.ClearField("params")
    with pytest.raises(CodecError):
        codec.decode_message(env)
    dec = next(m for m in seen if isinstance(m, pc.CkksDecryption))
    bad(dataclasses.replace(dec, total=np.array([np.nan])))
    bad(dataclasses.replace(dec, error_bound=float("inf")))


# ------------------------------------------------------------------------ golden bytes


def _golden_samples() -> dict[str, object]:
    """One deterministic sample of every Envelope message type (CKKS ones with synthetic
    bytes: the codec checks sizes, not cryptography). Keys: the Envelope field name."""
    from fedrx.secagg.ckks import keyring as ckks
    from fedrx.secagg.ckks import messages as pc
    from fedrx.secagg.ckks.params import CkksParams

    params = CkksParams()
    manifest = ckks.EpochManifest(b"f" * 32, 2, "h1", params, b"p" * 32, b"k" * 32,
                                  ("h1", "h2"), SIG)
    pkgs = {h: ckks.SealedKeyPackage(h, 2, b"i" * 32, b"sealed-" + h.encode() * 9, SIG)
            for h in ("h2", "h1")}
    hdr = pc.UploadHeader("h1", (b"a" * 32, b"b" * 32), SIG)
    names = ["train_request", "train_ack", "train_ack_refused", "eval_request", "eval_report",
             "plain_upload_request", "plain_upload", "advertise_request", "advertise_keys",
             "share_keys_request", "share_keys_reply", "masked_input_request", "masked_input",
             "consistency_request", "consistency_signature", "unmask_request", "unmask_reply"]
    out: dict[str, object] = dict(zip(names, MESSAGES, strict=True))
    out.update({
        "ckks_keyring_request": pc.CkksKeyringRequest(b"s" * 32, 3, 2),
        "ckks_keyring_reply": pc.CkksKeyringReply(3, ckks.CkksKeyring(manifest, b"ctx" * 20,
                                                                      pkgs)),
        "ckks_upload_request": pc.CkksUploadRequest(b"s" * 32, 3, 2, b"i" * 32, 5000),
        "ckks_upload_request_delivery": pc.CkksUploadRequest(
            b"s" * 32, 3, 2, b"i" * 32, 5000, pc.KeyDelivery(manifest, b"ctx" * 20, pkgs["h1"])),
        "ckks_upload": pc.CkksUpload(3, b"i" * 32, hdr, (b"c1" * 40, b"c2" * 40)),
        "ckks_decrypt_request": pc.CkksDecryptRequest(b"s" * 32, 3, b"i" * 32,
                                                      (hdr, dataclasses.replace(
                                                          hdr, hospital="h2")), (b"agg" * 30,)),
        "ckks_decryption": pc.CkksDecryption("h2", 3, b"i" * 32, np.linspace(-2, 2, 7), 1e-3),
    })
    out.update(thckks_golden_samples())
    out.update(ckks_golden_samples())
    return out


GOLDEN = Path(__file__).resolve().parent / "vectors" / "wire_golden.json"


def test_wire_bytes_match_the_golden_vectors():
    """Bytes captured from the hand-written codec before it became field-driven (deterministic
    serialisation, which fixes the order of map entries): the wire format must not change."""
    import json

    golden = json.loads(GOLDEN.read_text())
    samples = _golden_samples()
    assert set(golden) == set(samples)
    covered = {codec.encode_message(m).WhichOneof("msg") for m in samples.values()}
    assert covered == {f.name for f in pb.Envelope.DESCRIPTOR.oneofs_by_name["msg"].fields}
    for name, msg in samples.items():
        env = codec.encode_message(msg)
        assert env.SerializeToString(deterministic=True).hex() == golden[name], name
        if name == "eval_report":   # protobuf maps: entry order is not fixed across processes
            assert pb.Envelope.FromString(codec.to_bytes(msg)) == env
        else:
            assert codec.to_bytes(msg).hex() == golden[name], name
        assert _eq(codec.from_bytes(bytes.fromhex(golden[name])), msg), name


def test_mutated_wire_bytes_raise_codec_errors_only():
    """Byte flips, truncations and insertions of every golden message: decoding either yields
    a message or raises CodecError, never anything else."""
    import json
    import random

    rng = random.Random(12)
    golden = json.loads(GOLDEN.read_text())
    for name, hexdata in golden.items():
        data = bytes.fromhex(hexdata)
        for _ in range(150):
            b = bytearray(data)
            op = rng.randrange(3)
            i = rng.randrange(len(b))
            if op == 0:
                b[i] ^= 1 << rng.randrange(8)
            elif op == 1:
                del b[i:]
            else:
                b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
            try:
                codec.from_bytes(bytes(b))
            except CodecError:
                pass
            except Exception as exc:  # noqa: BLE001 - the assertion names what escaped
                raise AssertionError(f"{name}: {type(exc).__name__}: {exc}") from None
