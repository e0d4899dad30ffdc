"""CKKS parameters (additions only) and the ``ckks`` protection's configuration.

See :mod:`fedrx.secagg.ckks` for the numbers behind the defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from fedrx.errors import ConfigError

#: Max total coefficient-modulus bits for 128-bit classical security with a ternary secret
#: (HomomorphicEncryption.org security standard, Table 1; the same bounds SEAL enforces).
HE_STANDARD_MAX_LOGQ_128: Mapping[int, int] = {
    1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881,
}
#: Same table for 256-bit classical security (for information; not required).
HE_STANDARD_MAX_LOGQ_256: Mapping[int, int] = {
    1024: 13, 2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476,
}


@dataclass(frozen=True)
class CkksParams:
    """CKKS parameters for additions only (see module docstring for the defaults' numbers).

    ``noise_sigma`` is SEAL's error standard deviation; ``tail`` the number of standard
    deviations the per-slot error bound allows (``8`` -> failure probability ~1e-15 per slot).
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (56, 40)
    scale_bits: int = 32
    noise_sigma: float = 3.24
    tail: float = 8.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "coeff_mod_bit_sizes", tuple(self.coeff_mod_bit_sizes))

    @property
    def slots(self) -> int:
        """Real values per ciphertext (N/2)."""
        return self.poly_modulus_degree // 2

    @property
    def data_modulus_bits(self) -> int:
        """Bits of the single data-level prime q."""
        return self.coeff_mod_bit_sizes[0]

    @property
    def scale(self) -> float:
        return float(2 ** self.scale_bits)

    def validate(self) -> None:
        """Raise ConfigError unless the parameters are additions-only and >= 128-bit secure."""
        n = self.poly_modulus_degree
        if n not in HE_STANDARD_MAX_LOGQ_128:
            raise ConfigError(f"CKKS poly_modulus_degree {n} not in the HE standard table")
        if len(self.coeff_mod_bit_sizes) != 2:
            raise ConfigError("CKKS for aggregation uses exactly one data prime plus the special "
                              "prime (coeff_mod_bit_sizes of length 2): no modulus chain")
        if any(not 20 <= b <= 60 for b in self.coeff_mod_bit_sizes):
            raise ConfigError("CKKS coefficient primes must be 20..60 bits")
        total = sum(self.coeff_mod_bit_sizes)
        if total > HE_STANDARD_MAX_LOGQ_128[n]:
            raise ConfigError(f"CKKS log2 Q = {total} exceeds {HE_STANDARD_MAX_LOGQ_128[n]} bits, "
                              f"the 128-bit security bound at N = {n}")
        if not 20 <= self.scale_bits <= self.data_modulus_bits - 4:
            raise ConfigError("CKKS scale_bits must be in [20, data prime bits - 4]")
        if not (0 < self.noise_sigma < 100 and 1 <= self.tail <= 40):
            raise ConfigError("CKKS noise_sigma/tail out of range")

    def security_bits(self) -> int:
        """Classical security level met per the HE standard table: 256 or 128."""
        total = sum(self.coeff_mod_bit_sizes)
        return 256 if total <= HE_STANDARD_MAX_LOGQ_256[self.poly_modulus_degree] else 128

    def max_abs_sum(self) -> float:
        """Largest |Σ x| per slot that decrypts correctly: ``2^(q_bits-2-scale_bits)``, minus 1."""
        return float(2 ** (self.data_modulus_bits - 2 - self.scale_bits) - 1)

    def max_abs_input(self, n_participants: int) -> float:
        """Per-hospital |x_i| limit so that any sum of up to ``n_participants`` cannot wrap."""
        return self.max_abs_sum() / max(1, n_participants)

    def slot_error_std(self, n: int = 1) -> float:
        """Std of one slot's error after summing ``n`` fresh ciphertexts (independent case)."""
        n_poly = self.poly_modulus_degree
        return math.sqrt(n * n_poly * (self.noise_sigma ** 2 + 1 / 12) / 2) / self.scale

    def sum_error_bound(self, n: int) -> float:
        """Per-slot bound on |decrypt(Σ_{i<n} ct_i) − Σ x_i|: ``n·tail·slot_error_std(1)``."""
        return max(1, n) * self.tail * self.slot_error_std(1)

    def chunk_count(self, length: int) -> int:
        """Ciphertexts needed for a vector of ``length`` values (ceil(length / slots))."""
        return max(1, -(-length // self.slots))

    def chunk_sizes(self, length: int) -> list[int]:
        """Number of used slots of each chunk, in order."""
        k = self.chunk_count(length)
        return [self.slots] * (k - 1) + [length - self.slots * (k - 1)]

    @property
    def max_chunk_bytes(self) -> int:
        """Upper bound on one serialised ciphertext: 2 polys x N x 8 bytes + framing slack."""
        return 16 * self.poly_modulus_degree * (len(self.coeff_mod_bit_sizes) - 1) + 4096

    def to_json(self) -> dict:
        return {"poly_modulus_degree": self.poly_modulus_degree,
                "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
                "scale_bits": self.scale_bits, "noise_sigma": self.noise_sigma, "tail": self.tail}

    @staticmethod
    def from_json(obj: Mapping) -> CkksParams:
        try:
            p = CkksParams(int(obj["poly_modulus_degree"]),
                           tuple(int(b) for b in obj["coeff_mod_bit_sizes"]),
                           int(obj["scale_bits"]), float(obj["noise_sigma"]), float(obj["tail"]))
        except (KeyError, TypeError, ValueError):
            raise ConfigError("malformed CKKS parameters") from None
        p.validate()
        return p


@dataclass(frozen=True)
class CkksConfig:
    """Configuration of the ``ckks`` protection (identical at every party).

    ``min_contributors``: fewest valid uploads an aggregate must have before the aggregator
    asks for, and a hospital performs, its decryption (>= 2). ``decryptors``: how many live
    hospitals are asked to decrypt (>= 1; with more, the aggregator cross-checks them).
    ``flood_bits``: flooding noise std as a power-of-two multiple of the CKKS error std
    (None disables flooding; the output is still rounded to the error grid).
    ``rotate_every``: start a new key epoch every that many rounds (None: one epoch for the
    life of the aggregator's protection instance). ``params``: CKKS parameters.
    ``max_count``: largest example count one hospital may contribute (its input's last
    entry, an integer); ``clip_norm``: L2 bound on a hospital's unweighted delta, applied
    before encryption (None: no clipping; entries are still bounded by the CKKS range). A
    decrypted sum outside what these allow is refused (secagg/ckks/sum_check.py).
    """

    min_contributors: int = 2
    decryptors: int = 2
    flood_bits: int | None = 16
    rotate_every: int | None = None
    params: CkksParams = CkksParams()
    max_count: int = 100_000
    clip_norm: float | None = None

    def check(self) -> None:
        if self.min_contributors < 2:
            raise ConfigError("ckks min_contributors must be >= 2 (a hospital must never "
                              "decrypt a single update)")
        if self.decryptors < 1:
            raise ConfigError("ckks decryptors must be >= 1")
        if self.flood_bits is not None and not 0 <= self.flood_bits <= 40:
            raise ConfigError("ckks flood_bits must be in [0, 40] or None")
        if self.rotate_every is not None and self.rotate_every < 1:
            raise ConfigError("ckks rotate_every must be >= 1 or None")
        if isinstance(self.max_count, bool) or not isinstance(self.max_count, int) \
                or self.max_count < 1:
            raise ConfigError("ckks max_count must be a positive integer")
        if self.clip_norm is not None and not (math.isfinite(self.clip_norm)
                                               and self.clip_norm > 0):
            raise ConfigError("ckks clip_norm must be a finite positive number or None")
        self.params.validate()
