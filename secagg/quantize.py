"""Fixed-point quantisation of weighted model deltas for masking modulo ``R = 2**m``.

Input (from the round logic): a float64 vector ``v = [c * delta_1, ..., c * delta_d, c]``
where ``c`` is the hospital's example count, an integer in ``[0, max_count]``.

Encoding, per hospital:

1. ``delta = v[:d] / c`` (``c = 0`` requires ``v[:d] == 0``).
2. **Clip the L2 norm of the unweighted delta** to ``clip_norm`` = B:
   ``delta <- delta * min(1, B / ||delta||_2)``. Hence every coordinate has ``|delta_i| <= B``.
3. Scale: ``y_i = c * delta_i * 2**frac_bits`` (so ``|y_i| <= M = max_count * B * 2**f``;
   a final clamp to ``[-M, M]`` absorbs floating-point overshoot).
4. **Unbiased stochastic rounding**: ``x_i = floor(y_i) + [u_i < y_i - floor(y_i)]`` with
   ``u_i`` uniform on ``[0, 1)`` with 53-bit resolution from an AES-CTR stream keyed by
   ``os.urandom`` (never numpy's RNG). ``E[x_i] = y_i`` (exactly, up to the 2**-53 grid).
   ``u_i = (w_i >> 11) * 2**-53`` for the i-th little-endian 64-bit keystream word; the
   comparison is done exactly in integers (``w_i >> 11 < frac_i * 2**53``,
   :func:`fedrx.csprng.bernoulli`).
5. The count ``c`` is carried exactly as an integer coordinate, and the number of clipped
   coordinates (``d`` if the norm clip fired on a non-zero delta, else 0; non-zero entries
   only) as another, so the aggregator learns only their SUMS.

The encoded vector has length ``d + 2``; entries are signed integers stored mod ``R`` as uint64.

Modulus rule: per hospital every encoded entry has ``|x| <= per_bound = max(ceil(M),
max_count, d)``, so any sum over ``n`` hospitals lies in ``[-n*per_bound, n*per_bound]``.
We pick the smallest ``m`` with ``2**m > 2 * n * per_bound``; a centred lift of the sum
mod ``2**m`` then recovers it exactly (no wrap-around). ``m > 64`` is refused with a
:class:`~fedrx.errors.ConfigError` that names the knobs to turn down.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from fedrx.csprng import bernoulli
from fedrx.errors import ConfigError, ProtocolAbort
from fedrx.secagg.prg import prg_words

MAX_MODULUS_BITS = 64


@dataclass(frozen=True)
class QuantConfig:
    """Quantisation parameters shared by all parties of a round.

    ``clip_norm``: L2 bound B on the unweighted delta (model-parameter units).
    ``frac_bits``: fixed-point fractional bits f (resolution 2**-f in weighted units).
    ``max_count``: largest example count c a hospital may report.
    """

    clip_norm: float = 1.0
    frac_bits: int = 16
    max_count: int = 100_000

    def check(self) -> None:
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ConfigError("clip_norm must be a finite positive number")
        if not isinstance(self.frac_bits, int) or not 0 <= self.frac_bits <= 52:
            raise ConfigError("frac_bits must be an integer in [0, 52]")
        if not isinstance(self.max_count, int) or self.max_count < 1:
            raise ConfigError("max_count must be a positive integer")


def value_bound(cfg: QuantConfig) -> float:
    """M = max_count * clip_norm * 2**frac_bits: largest |scaled weighted delta| coordinate."""
    return cfg.max_count * cfg.clip_norm * float(2**cfg.frac_bits)


def per_hospital_bound(cfg: QuantConfig, model_length: int) -> int:
    """Largest |encoded entry| a single honest hospital can produce."""
    return max(math.ceil(value_bound(cfg)), cfg.max_count, model_length)


def modulus_bits(cfg: QuantConfig, n_hospitals: int, model_length: int) -> int:
    """Smallest m with 2**m > 2 * n * per_bound; ConfigError naming the fix if m > 64."""
    cfg.check()
    if n_hospitals < 1 or model_length < 0:
        raise ConfigError("need n_hospitals >= 1 and model_length >= 0")
    need = 2 * n_hospitals * per_hospital_bound(cfg, model_length)
    m = max(need.bit_length(), 1)
    if m > MAX_MODULUS_BITS:
        raise ConfigError(
            f"masking modulus would need {m} bits (> {MAX_MODULUS_BITS}) for {n_hospitals} "
            f"hospitals, clip_norm={cfg.clip_norm}, frac_bits={cfg.frac_bits}, "
            f"max_count={cfg.max_count}: the sum could wrap; lower frac_bits by at least "
            f"{m - MAX_MODULUS_BITS}, or lower clip_norm or max_count, or use fewer hospitals")
    return m


@dataclass(frozen=True)
class ClipStats:
    """What clipping did to one hospital's input (safe to log locally)."""

    norm: float
    norm_clipped: bool
    clipped_coordinates: int


def _coins(n: int, key: bytes | None = None) -> np.ndarray:
    """n uniform 64-bit words from AES-CTR keyed by os.urandom (one stream, no copies).

    ``key`` (32 bytes) replaces the OS key ONLY for reproducible research runs
    (:func:`rounding_key`); deployments leave it None.
    """
    if key is not None and len(key) != 32:
        raise ConfigError("rounding key must be 32 bytes")
    return prg_words(key if key is not None else os.urandom(32), n, 8)


def rounding_key(seed: int, hospital: str, rnd: int) -> bytes:
    """Deterministic coin key for stochastic rounding from (seed, hospital, round).

    For reproducibility only (two runs, e.g. in-process and over gRPC, then agree bit for
    bit). Anyone who knows the seed can predict the rounding direction of each coordinate,
    which tells them nothing the masked sum does not, up to one quantization step per
    coordinate; deployments keep the default OS-random coins.
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    info = b"fedrx/rounding-coins/1\0" + hospital.encode() + b"\0" + str(int(rnd)).encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        int(seed).to_bytes(16, "big", signed=True))


def _stochastic_round_into(y: np.ndarray, out: np.ndarray, key: bytes | None = None) -> None:
    """out[:] = floor(y) + [u < y - floor(y)] (int64; ``y`` float64, same shape)."""
    fl = np.floor(y)
    np.copyto(out, fl, casting="unsafe")
    frac = np.subtract(y, fl, out=fl)
    up = bernoulli(frac, _coins(y.size, key).reshape(y.shape))
    np.add(out, up, out=out)


def stochastic_round(y: np.ndarray) -> np.ndarray:
    """Unbiased stochastic rounding of a float64 array to int64 (CSPRNG coins)."""
    y = np.asarray(y, dtype=np.float64)
    out = np.empty(y.shape, dtype=np.int64)
    _stochastic_round_into(y, out)
    return out


def encode(vector: np.ndarray, cfg: QuantConfig, m: int,
           coin_key: bytes | None = None) -> tuple[np.ndarray, ClipStats]:
    """Encode ``[c*delta..., c]`` to uint64 entries mod 2**m (length d + 2), plus clip stats.

    ``coin_key``: None (default, deployments) draws the rounding coins from a fresh OS key;
    a :func:`rounding_key` makes the encoding reproducible.
    """
    cfg.check()
    v = np.asarray(vector, dtype=np.float64)
    if v.ndim != 1 or v.size < 1:
        raise ConfigError("input must be a non-empty 1-D vector [c*delta..., c]")
    if not np.all(np.isfinite(v)):
        raise ConfigError("input vector has NaN or infinite entries")
    c = v[-1]
    if c != math.floor(c) or not 0 <= c <= cfg.max_count:
        raise ConfigError(f"example count must be an integer in [0, max_count={cfg.max_count}]; "
                          "raise max_count if hospitals have more examples")
    count = int(c)
    weighted = v[:-1]
    if count == 0:
        if np.any(weighted != 0):
            raise ConfigError("example count is 0 but the weighted delta is not zero")
        delta = np.zeros_like(weighted)
    else:
        delta = weighted / count
    # Pairwise-summed L2 norm, not BLAS: np.linalg.norm's ddot wakes OpenBLAS threads
    # that spin on the hospital's cores for milliseconds after every call.
    norm = math.sqrt(float(np.add.reduce(np.square(delta))))
    clipped = norm > cfg.clip_norm
    if clipped:
        delta = delta * (cfg.clip_norm / norm)
    bound = value_bound(cfg)
    y = np.multiply(delta, count * float(2**cfg.frac_bits))
    np.clip(y, -bound, bound, out=y)
    x = np.empty(v.size + 1, dtype=np.int64)
    _stochastic_round_into(y, x[:-2], coin_key)
    x[-2] = count
    n_clip = int(np.count_nonzero(delta)) if clipped else 0
    x[-1] = n_clip
    out = x.view(np.uint64)
    if m < 64:
        out &= np.uint64((1 << m) - 1)
    return out, ClipStats(norm, clipped, n_clip)


@dataclass(frozen=True)
class PreQuantised:
    """An input already in the integer ring's units (distributed DP: the hospital rounded its
    sum and added integer noise itself, so :func:`encode`'s clipping, which would act on the
    noisy share, must not run).

    ``values``: int64 weighted coordinates at scale ``2**frac_bits``; ``count``: the exact
    count entry; ``bound``: the sender's guarantee ``max |values| <= bound``.
    """

    values: np.ndarray
    count: int
    bound: int
    frac_bits: int


def encode_prequantised(x: PreQuantised, cfg: QuantConfig, m: int) -> np.ndarray:
    """``[values..., count, 0]`` mod ``2**m`` (uint64, length d + 2; no clipped coordinates).

    ConfigError unless ``frac_bits`` matches the round's, ``bound`` is within the per-hospital
    bound the modulus was sized for (so the n-hospital sum cannot wrap), every value is
    within ``bound`` and the count is in ``[0, max_count]``.
    """
    cfg.check()
    v = np.asarray(x.values)
    if v.ndim != 1 or v.dtype != np.int64:
        raise ConfigError("pre-quantised values must be a 1-D int64 vector")
    if x.frac_bits != cfg.frac_bits:
        raise ConfigError(f"pre-quantised input at {x.frac_bits} fractional bits, the round "
                          f"uses {cfg.frac_bits}")
    if not 0 <= x.count <= cfg.max_count:
        raise ConfigError(f"count must be an integer in [0, max_count={cfg.max_count}]")
    limit = per_hospital_bound(cfg, v.size)
    if not 0 <= x.bound <= limit:
        raise ConfigError(f"pre-quantised bound {x.bound} exceeds the per-hospital bound "
                          f"{limit} the modulus is sized for; raise max_count or clip_norm")
    if v.size and int(np.max(np.abs(v))) > x.bound:
        raise ConfigError("a pre-quantised value exceeds its stated bound")
    out = np.empty(v.size + 2, dtype=np.int64)
    out[:-2] = v
    out[-2] = int(x.count)
    out[-1] = 0
    enc = out.view(np.uint64)
    if m < 64:
        enc &= np.uint64((1 << m) - 1)
    return enc


def centred_lift(total: np.ndarray, m: int) -> np.ndarray:
    """Map uint64 values mod 2**m to signed integers in [-2**(m-1), 2**(m-1)) as int64.

    Sign extension without temporaries: with ``h = 2**(m-1)``, ``(x XOR h) - h`` (wrapping
    uint64) is ``x`` for ``x < h`` and ``x - 2**m`` otherwise; one new array, updated in
    place (the input is not modified).
    """
    t = np.asarray(total, dtype=np.uint64)
    if m >= 64:
        return t.view(np.int64).copy()
    s = np.bitwise_and(t, np.uint64((1 << m) - 1))
    half = np.uint64(1 << (m - 1))
    s ^= half
    s -= half
    return s.view(np.int64)


def sum_bounds(cfg: QuantConfig, contributors: int, model_length: int,
               count: int) -> tuple[int, float]:
    """(largest clipped-coordinate total, largest L2 norm of the scaled weighted sum) that
    ``contributors`` honest encodings with total example count ``count`` can produce.

    Each hospital's weighted delta ``c * delta`` has ``||c * delta||_2 <= c * B`` after
    clipping, so the scaled sum has norm ``<= count * B * 2**f``; stochastic rounding moves
    each coordinate of each encoding by less than 1, adding at most ``contributors *
    sqrt(d)`` to the norm. One part in 2**-40 of slack absorbs float64 rounding of the norm.
    """
    rounding = contributors * math.sqrt(model_length)
    norm = (count * cfg.clip_norm * float(2**cfg.frac_bits) + rounding) * (1 + 2.0**-40) + 1
    return contributors * model_length, norm


def check_sum(s: np.ndarray, cfg: QuantConfig, contributors: int, *,
              clip_bounded: bool = True) -> None:
    """ProtocolAbort unless the centred integer sum ``s`` (``[weighted..., count,
    clipped]``) is one that ``contributors`` honest encodings can produce: ``0 <= count <=
    contributors * max_count``, ``0 <= clipped <= contributors * d``, every weighted entry
    within ``contributors * per_hospital_bound`` and, for :func:`encode`'s clipped inputs
    (``clip_bounded``), the L2 norm of the weighted part within :func:`sum_bounds`. A sum
    outside these bounds (a wrong self-mask share revealed with exactly t answers, so
    undetectable by share consistency, decodes to garbage such as a count of -9e8) is
    refused instead of being used as an update. ``clip_bounded=False`` for
    :func:`encode_prequantised` inputs (distributed DP: the noise is not norm-bounded; the
    count, clipped and per-entry bounds still hold)."""
    if not isinstance(contributors, int) or contributors < 1:
        raise ProtocolAbort("a decoded sum needs at least one contributor")
    d = s.size - 2
    count, clipped = int(s[-2]), int(s[-1])
    if not 0 <= count <= contributors * cfg.max_count:
        raise ProtocolAbort(f"decoded example count {count} outside [0, {contributors} * "
                            f"max_count={cfg.max_count}]: the unmasked sum is corrupt")
    max_clipped, max_norm = sum_bounds(cfg, contributors, d, count)
    if not 0 <= clipped <= max_clipped:
        raise ProtocolAbort(f"decoded clipped-coordinate count {clipped} outside [0, "
                            f"{max_clipped}]: the unmasked sum is corrupt")
    w = s[:-2]
    limit = contributors * per_hospital_bound(cfg, d)
    if w.size and int(np.max(np.abs(w))) > limit:
        raise ProtocolAbort(f"a decoded entry exceeds {contributors} hospitals' bound: the "
                            "unmasked sum is corrupt")
    if not clip_bounded:
        return
    wf = w.astype(np.float64)
    norm = math.sqrt(float(np.add.reduce(np.square(wf))))
    if not norm <= max_norm:
        raise ProtocolAbort(f"decoded sum has L2 norm {norm / 2**cfg.frac_bits:.6g} above "
                            f"the {count} examples' clip bound "
                            f"{max_norm / 2**cfg.frac_bits:.6g}: the unmasked sum is corrupt")


def decode(total: np.ndarray, cfg: QuantConfig, m: int, contributors: int | None = None,
           *, clip_bounded: bool = True) -> tuple[np.ndarray, int]:
    """Decode a sum of encodings: (float64 ``[sum c*delta..., sum c]``, total clipped count).

    With ``contributors`` (|U3|; the aggregator always passes it) the sum is first checked
    against what that many honest encodings can produce (:func:`check_sum`, ProtocolAbort
    otherwise; ``clip_bounded=False`` when the inputs were :func:`encode_prequantised`);
    None skips the check (unit tests of the codec alone).
    """
    s = centred_lift(total, m)
    if contributors is not None:
        check_sum(s, cfg, contributors, clip_bounded=clip_bounded)
    out = np.empty(s.size - 1, dtype=np.float64)
    # times 2**-frac_bits: a power of two, so exactly the division by 2**frac_bits
    np.multiply(s[:-2], 2.0 ** -cfg.frac_bits, out=out[:-1])
    out[-1] = float(s[-2])
    return out, int(s[-1])
