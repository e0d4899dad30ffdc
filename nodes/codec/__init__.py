"""Conversion between fedrx's protocol dataclasses and the ``fedrx.v1`` protobuf messages.

Hand-written (the generated modules under ``fedrx.proto.gen`` are never edited). No pickle,
no eval. A message is written down once, as a :class:`~.fields.MessageSpec` next to the
others of its protection (:mod:`.control`, :mod:`.plain`, :mod:`.mask`, :mod:`.ckks`): one
validating rule per dataclass field; :func:`~.fields.to_pb` / :func:`~.fields.from_pb` walk
the dataclass fields generically, and registration checks the rules cover exactly the
dataclass's fields and the protobuf message's fields. Numpy arrays travel as raw
little-endian bytes + dtype + shape (:func:`~.fields.encode_array`).

Adding a message type = one proto message + one ``oneof`` field in ``Envelope`` + one
:func:`~.fields.message` call and one ``ENVELOPE_FIELDS`` entry in its protection's module.
Importing this package imports TenSEAL (through the CKKS message types).

Framing of Envelopes into gRPC frames and chunks lives in :mod:`fedrx.nodes.wire`.
"""

from __future__ import annotations

from typing import Any

from fedrx.nodes.codec import ckks, control, mask, plain, thckks
from fedrx.nodes.codec.fields import (
    DEFAULT_LIMITS,
    CodecError,
    Limits,
    OversizeError,
    from_pb,
    to_pb,
)
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb
from fedrx.protocol.messages import EvalReport

__all__ = ["DEFAULT_LIMITS", "ENVELOPE_FIELDS", "CodecError", "Limits", "OversizeError",
           "check_received", "decode_message", "encode_message", "from_bytes", "to_bytes"]

ENVELOPE_FIELDS: dict[type, str] = {**control.ENVELOPE_FIELDS, **plain.ENVELOPE_FIELDS,
                                    **mask.ENVELOPE_FIELDS, **ckks.ENVELOPE_FIELDS,
                                    **thckks.ENVELOPE_FIELDS}
"""Top-level message type -> its ``Envelope.msg`` oneof field."""
_BY_FIELD: dict[str, type] = {f: cls for cls, f in ENVELOPE_FIELDS.items()}


def encode_message(msg: Any) -> pb.Envelope:
    """The Envelope for a protocol dataclass; CodecError for an unknown type."""
    field = ENVELOPE_FIELDS.get(type(msg))
    if field is None:
        raise CodecError(f"no wire encoding for {type(msg).__name__}")
    env = pb.Envelope()
    getattr(env, field).CopyFrom(to_pb(msg))
    return env


def decode_message(env: pb.Envelope, limits: Limits = DEFAULT_LIMITS) -> Any:
    """The validated protocol dataclass in ``env``; CodecError if anything is off."""
    field = env.WhichOneof("msg")
    if field is None or field not in _BY_FIELD:
        raise CodecError("empty or unknown envelope")
    try:
        return from_pb(_BY_FIELD[field], getattr(env, field), limits)
    except CodecError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise CodecError(f"{field}: {type(exc).__name__}") from None


def check_received(msg: Any) -> None:
    """Checks a receiver makes on a decoded message beyond its wire rules (CodecError):
    an EvalReport must be poolable (:func:`~.control.check_poolable`)."""
    if isinstance(msg, EvalReport):
        control.check_poolable(msg.sums)


def to_bytes(msg: Any) -> bytes:
    """The serialised Envelope of ``msg``."""
    return encode_message(msg).SerializeToString()


def from_bytes(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Parse and validate a serialised Envelope (at most ``limits.max_message_bytes``)."""
    if len(data) > limits.max_message_bytes:
        raise OversizeError(f"message of {len(data)} bytes exceeds the limit "
                            f"{limits.max_message_bytes}")
    env = pb.Envelope()
    try:
        env.ParseFromString(data)
    except Exception:  # protobuf raises DecodeError (a subclass of Exception)
        raise CodecError("envelope does not parse") from None
    return decode_message(env, limits)
