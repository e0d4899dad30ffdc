"""Field rules: how one dataclass field travels in its protobuf message and how it is checked.

A message's codec is a :class:`MessageSpec`: its protobuf type and one :class:`Rule` per
dataclass field (same name as the protobuf field unless ``pb=`` says otherwise). The generic
converter (:func:`to_pb`, :func:`from_pb`) walks the dataclass fields; each rule encodes its
value and, on decode, validates it against :class:`Limits` before the dataclass is built:

* arrays (:class:`Array`): dtype in :data:`ALLOWED_DTYPES` and equal to the declared one,
  ``len(data) == prod(shape) * itemsize``, at most ``max_elements`` entries, 1-D, finite;
* identifiers (:class:`Id`, :class:`Ids`): non-empty printable text of at most
  :data:`MAX_ID_CHARS` characters;
* byte strings (:class:`Bytes`): at most ``max_bytes_field`` bytes (or the rule's own
  smaller cap), an exact length where the protocol fixes one;
* integers (:class:`Int`, :data:`ROUND`, :data:`EPOCH`): within the rule's range;
* repeated fields (:class:`Many`): at most ``max_repeated`` entries (or the rule's cap).

A violation raises :class:`CodecError` (:class:`OversizeError` for sizes), both
:class:`~fedrx.errors.ProtocolError`: the node rejects the frame and keeps serving.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedrx.errors import ProtocolError
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb

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


# ------------------------------------------------------------------------------- rules


class Rule:
    """One field: ``encode`` a dataclass value into a protobuf value (None: leave unset);
    ``decode`` the protobuf message's field ``name`` into a validated value."""

    pb: str | None = None

    def encode(self, value: Any) -> Any:
        return value

    def decode(self, msg: Any, name: str, lim: Limits) -> Any:
        raise NotImplementedError


def check_id(s: str, what: str) -> str:
    if not isinstance(s, str) or not s or len(s) > MAX_ID_CHARS or not s.isprintable():
        raise CodecError(f"{what}: invalid identifier")
    return s


def check_count(items: Any, cap: int, what: str) -> Any:
    if len(items) > cap:
        raise OversizeError(f"{what}: {len(items)} entries exceeds the limit {cap}")
    return items


@dataclass(frozen=True)
class Id(Rule):
    """An identifier (hospital id, stage, kind, hash text)."""

    def decode(self, msg: Any, name: str, lim: Limits) -> str:
        return check_id(getattr(msg, name), name)


@dataclass(frozen=True)
class Text(Rule):
    """Free text kept to its first ``max_chars`` characters (reasons, ledger heads)."""

    max_chars: int

    def decode(self, msg: Any, name: str, lim: Limits) -> str:
        return str(getattr(msg, name))[:self.max_chars]


@dataclass(frozen=True)
class Ids(Rule):
    """Repeated identifiers -> tuple; ``unique``: no id twice."""

    unique: bool = False

    def encode(self, value: Any) -> list[str]:
        return list(value)

    def decode(self, msg: Any, name: str, lim: Limits) -> tuple[str, ...]:
        out = tuple(check_id(s, name) for s in check_count(getattr(msg, name),
                                                              lim.max_repeated, name))
        if self.unique and len(set(out)) != len(out):
            raise CodecError(f"{name} listed twice")
        return out


@dataclass(frozen=True)
class Bytes(Rule):
    """A byte string: exactly ``exact`` bytes if set, at most ``cap`` (and the limit's
    ``max_bytes_field``) bytes, non-empty if ``nonempty``."""

    exact: int | None = None
    cap: int | None = None
    nonempty: bool = False

    def check(self, b: bytes, lim: Limits, what: str) -> bytes:
        cap = lim.max_bytes_field if self.cap is None else min(self.cap, lim.max_bytes_field)
        if len(b) > cap:
            raise OversizeError(f"{what}: {len(b)} bytes exceeds the limit {cap}")
        if self.exact is not None and len(b) != self.exact:
            raise CodecError(f"{what}: expected {self.exact} bytes, got {len(b)}")
        if self.nonempty and not b:
            raise CodecError(f"{what}: empty")
        return bytes(b)

    def decode(self, msg: Any, name: str, lim: Limits) -> bytes:
        return self.check(getattr(msg, name), lim, name)


@dataclass(frozen=True)
class Int(Rule):
    """An integer in ``[lo, hi]``; ``hi`` may name a :class:`Limits` field. Out of range
    raises ``error`` (OversizeError for counts bounded by a limit)."""

    lo: int = 0
    hi: int | str = 2**64 - 1
    error: type[CodecError] = CodecError

    def decode(self, msg: Any, name: str, lim: Limits) -> int:
        v = int(getattr(msg, name))
        hi = getattr(lim, self.hi) if isinstance(self.hi, str) else self.hi
        if not self.lo <= v <= hi:
            raise self.error(f"{name} {v} out of range")
        return v


ROUND = Int(1, 2**62 - 1)
"""A round number: 1 <= round < 2**62."""
EPOCH = Int(0, 2**63 - 1)
"""A CKKS key epoch: 0 <= epoch < 2**63."""


@dataclass(frozen=True)
class Ints(Rule):
    """Repeated integers in ``[lo, hi]`` -> tuple, at most ``cap`` entries."""

    cap: int
    lo: int = 0
    hi: int = 2**32 - 1

    def encode(self, value: Any) -> list[int]:
        return list(value)

    def decode(self, msg: Any, name: str, lim: Limits) -> tuple[int, ...]:
        items = getattr(msg, name)
        if len(items) > self.cap:
            raise CodecError(f"{name}: more than {self.cap} entries")
        out = tuple(int(v) for v in items)
        if any(not self.lo <= v <= self.hi for v in out):
            raise CodecError(f"{name}: entry out of range")
        return out


@dataclass(frozen=True)
class Flag(Rule):
    def encode(self, value: Any) -> bool:
        return bool(value)

    def decode(self, msg: Any, name: str, lim: Limits) -> bool:
        return bool(getattr(msg, name))


@dataclass(frozen=True)
class Real(Rule):
    """A finite float, at least ``lo`` if set."""

    lo: float | None = None

    def decode(self, msg: Any, name: str, lim: Limits) -> float:
        v = float(getattr(msg, name))
        if not math.isfinite(v) or (self.lo is not None and v < self.lo):
            raise CodecError(f"{name} must be finite" + ("" if self.lo is None
                                                         else f" and >= {self.lo}"))
        return v


@dataclass(frozen=True)
class Array(Rule):
    """A 1-D numpy vector of ``dtype`` (encoded as that dtype), finite if ``finite``."""

    dtype: str
    finite: bool = True

    def encode(self, value: Any) -> pb.Array:
        return encode_array(np.asarray(value, dtype=np.dtype(self.dtype)))

    def decode(self, msg: Any, name: str, lim: Limits) -> np.ndarray:
        return decode_array(getattr(msg, name), lim, dtype=self.dtype, finite=self.finite,
                            what=name)


@dataclass(frozen=True)
class Nested(Rule):
    """A nested message (a dataclass with its own spec); ``optional``: None when unset,
    else a missing message is refused."""

    cls: type
    optional: bool = False

    def encode(self, value: Any) -> Any:
        return None if value is None else to_pb(value)

    def decode(self, msg: Any, name: str, lim: Limits) -> Any:
        if not msg.HasField(name):
            if self.optional:
                return None
            raise CodecError(f"{type(msg).__name__} without its {name}")
        return from_pb(self.cls, getattr(msg, name), lim)


@dataclass(frozen=True)
class Many(Rule):
    """A repeated field of ``item`` (a :class:`Nested` class or a :class:`Bytes` rule) ->
    tuple, at most ``cap`` entries (default: the limit's ``max_repeated``)."""

    item: type | Bytes
    cap: int | None = None

    def encode(self, value: Any) -> list[Any]:
        if isinstance(self.item, Bytes):
            return list(value)
        return [to_pb(v) for v in value]

    def decode(self, msg: Any, name: str, lim: Limits) -> tuple[Any, ...]:
        items = check_count(getattr(msg, name),
                            lim.max_repeated if self.cap is None else self.cap, name)
        if isinstance(self.item, Bytes):
            return tuple(self.item.check(b, lim, name) for b in items)
        return tuple(from_pb(self.item, m, lim) for m in items)


@dataclass(frozen=True)
class Keyed(Rule):
    """A mapping ``key -> message`` travelling as a repeated field sorted by key (the key is
    the message's own field ``key``); a key present twice is refused."""

    cls: type
    key: str

    def encode(self, value: Mapping[str, Any]) -> list[Any]:
        return [to_pb(value[k]) for k in sorted(value)]

    def decode(self, msg: Any, name: str, lim: Limits) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m in check_count(getattr(msg, name), lim.max_repeated, name):
            item = from_pb(self.cls, m, lim)
            k = getattr(item, self.key)
            if k in out:
                raise CodecError(f"{name}: two entries for {k!r}")
            out[k] = item
        return out


# ---------------------------------------------------------------------- the converter


@dataclass(frozen=True)
class MessageSpec:
    """How dataclass ``cls`` maps onto protobuf message ``pb_cls``: one rule per field, and
    ``check(obj, limits)`` for cross-field invariants (raises CodecError)."""

    cls: type
    pb_cls: type
    rules: Mapping[str, Rule]
    check: Callable[[Any, Limits], None] | None = None


SPECS: dict[type, MessageSpec] = {}


def message(cls: type, pb_cls: type, check: Callable[[Any, Limits], None] | None = None,
            **rules: Rule) -> MessageSpec:
    """Register the spec of ``cls``. Every dataclass field needs a rule and every protobuf
    field must be covered (checked here, at import): a schema drift fails loudly."""
    names = [f.name for f in dataclasses.fields(cls)]
    if set(rules) != set(names):
        raise TypeError(f"{cls.__name__}: rules for {sorted(rules)}, fields {names}")
    pb_fields = {f.name for f in pb_cls.DESCRIPTOR.fields}
    covered = {r.pb or n for n, r in rules.items()}
    if covered != pb_fields:
        raise TypeError(f"{cls.__name__}: rules cover {sorted(covered)}, "
                        f"{pb_cls.__name__} has {sorted(pb_fields)}")
    spec = MessageSpec(cls, pb_cls, {n: rules[n] for n in names}, check)
    SPECS[cls] = spec
    return spec


def to_pb(obj: Any) -> Any:
    """The protobuf message for dataclass ``obj``; CodecError for an unknown type."""
    spec = SPECS.get(type(obj))
    if spec is None:
        raise CodecError(f"no wire encoding for {type(obj).__name__}")
    kw = {}
    for name, rule in spec.rules.items():
        v = rule.encode(getattr(obj, name))
        if v is not None:
            kw[rule.pb or name] = v
    return spec.pb_cls(**kw)


def from_pb(cls: type, msg: Any, lim: Limits) -> Any:
    """The validated ``cls`` instance in protobuf message ``msg``; CodecError if anything
    is off."""
    spec = SPECS[cls]
    obj = cls(**{name: rule.decode(msg, rule.pb or name, lim)
                 for name, rule in spec.rules.items()})
    if spec.check is not None:
        spec.check(obj, lim)
    return obj
