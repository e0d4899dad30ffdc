"""``ckks-threshold`` configuration, the flooding size and the stated precision bound.

Parameters (defaults; :class:`ThresholdConfig`)
-----------------------------------------------
* Ring N = 8192, RNS primes of 60 and 59 bits:
  log2 Q = 119 <= 218, the HomomorphicEncryption.org bound for 128-bit classical security at
  N = 8192 (ternary secret); OpenFHE enforces it (``HEStd_128_classic``). Key switching is BV
  with no special primes (fedrx only adds: no relinearisation or rotation keys exist).
  N = 4096 would need log2 Q <= 109, too little for the flooding below at Δ = 2^59.
* Scale Δ = 2^59; a decryptable sum needs |Σ x| < Q / (2Δ) ~ 2^59: hospitals keep
  |x_i| <= ``max_abs_sum / n``.
* Packing: 8192 real values per ciphertext (4096 complex slots, a value in the real and one in
  the imaginary part of each: OpenFHE's COMPLEX data type). Wire: 2 polynomials x 2 primes x
  8 bytes per coefficient, one value per coefficient = 32 bytes per value.

Flooding (IND-CPA-D)
--------------------
Each partial decryption reveals c1·k_j + e_j; the fused output reveals Δm + e_ct + Σ e_j,
where the ciphertext noise e_ct depends on the secret key. Following Li, Micciancio, Schultz
and Sorrell (CRYPTO 2022, the analysis behind OpenFHE's NOISE_FLOODING_DECRYPT), Gaussian
flooding of standard deviation ``sqrt(24 · q) · 2^(κ/2) · B`` keeps s = κ bits of security for
q decryption queries with ciphertext noise at most B (per coefficient). Every decrypting
hospital adds that much on its own (so ONE honest decryptor suffices); here κ = 30
(OpenFHE's default statistical security), q = ``flood_queries`` ciphertext decryptions per
key epoch (a hospital refuses more; the aggregator re-keys first), and
``B = T · sqrt(c · ((4/3) n N σ² + σ²))`` bounds the sum of c fresh public-key encryptions
under an n-party key (v ternary, e and e_pk Gaussian σ = 3.19, s = Σ s_i ternary; T = 8).

Precision: a value (real or imaginary part of a slot) of the fused sum is off by at most
(T = 8 standard deviations)::

    8 · sqrt(N/2) · sqrt(t · (σ_f² + σ_mp²) + (B/8)²) / Δ            (error_bound)

where σ_mp = 2^20 is the noise OpenFHE's multiparty decryption adds itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fedrx.errors import ConfigError
from fedrx.secagg.thckks.engine import EngineParams

SIGMA_E = 3.19
TAIL = 8.0
SIGMA_MP = 2.0 ** 20


@dataclass(frozen=True)
class ThresholdConfig:
    """``threshold`` t (None: a majority, n // 2 + 1), ``min_contributors`` (fewest listed
    uploads a hospital decrypts the sum of), ``rotate_every`` (rounds per key epoch),
    ``flood_queries`` (ciphertext decryptions per epoch), ``stat_security`` κ (bits),
    ``max_abs_sum`` (largest |sum| entry), the engine's CKKS parameters."""

    threshold: int | None = None
    min_contributors: int = 2
    rotate_every: int = 10
    flood_queries: int = 4096
    stat_security: int = 30
    max_abs_sum: float = 2.0 ** 40
    engine: EngineParams = field(default_factory=EngineParams)

    def check(self) -> None:
        if self.threshold is not None and self.threshold < 2:
            raise ConfigError("ckks-threshold: threshold must be >= 2")
        if self.min_contributors < 2:
            raise ConfigError("ckks-threshold: min_contributors must be >= 2")
        if self.rotate_every < 1 or self.flood_queries < 1:
            raise ConfigError("ckks-threshold: rotate_every and flood_queries must be >= 1")
        if not 0 < self.max_abs_sum <= 2.0 ** 50:
            raise ConfigError("ckks-threshold: max_abs_sum must be in (0, 2^50]")
        if not 20 <= self.stat_security <= 80:
            raise ConfigError("ckks-threshold: stat_security must be in [20, 80]")

    def t_of(self, n: int) -> int:
        """The threshold for an epoch of ``n`` members."""
        t = self.threshold if self.threshold is not None else n // 2 + 1
        if not 2 <= t <= n:
            raise ConfigError(f"ckks-threshold: threshold {t} impossible for {n} members")
        return t


def noise_bound(ring_dim: int, members: int, contributions: int) -> float:
    """B: bound on a coefficient of the noise of a sum of ``contributions`` fresh encryptions
    under a ``members``-party joint key."""
    var = (4.0 / 3.0) * members * ring_dim * SIGMA_E ** 2 + SIGMA_E ** 2
    return TAIL * math.sqrt(contributions * var)


def flood_sigma(cfg: ThresholdConfig, ring_dim: int, members: int, contributions: int) -> float:
    """Coefficient standard deviation of ONE decryptor's flooding noise."""
    return (math.sqrt(24.0 * cfg.flood_queries) * 2.0 ** (cfg.stat_security / 2)
            * noise_bound(ring_dim, members, contributions))


def error_bound(cfg: ThresholdConfig, ring_dim: int, members: int, contributions: int,
                threshold: int) -> float:
    """Bound on |fused value - true sum| (units of the summed vector)."""
    sf = flood_sigma(cfg, ring_dim, members, contributions)
    b = noise_bound(ring_dim, members, contributions) / TAIL
    std = math.sqrt(ring_dim / 2) * math.sqrt(threshold * (sf ** 2 + SIGMA_MP ** 2) + b ** 2)
    return TAIL * std / 2.0 ** cfg.engine.scale_bits
