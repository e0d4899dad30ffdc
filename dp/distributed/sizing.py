"""Sizing the noise shares of distributed DP and what the accountant may charge for them.

One DP-SGD step on the whole federation: hospital ``i`` releases (inside a secure sum)
``S_i + Z_i`` where ``S_i`` is the sum of its sampled patients' clipped gradients (each of
L2 norm <= C) and ``Z_i`` its noise share. The aggregator learns only ``sum_i S_i + Z_i``.

Trust assumption (the federation config's ``k``): in any round at most ``k`` of the
federation's ``n`` hospitals collude with the aggregator OR are missing from the sum
(dropped, or not selected), together. The hospitals missing from the survivors use up part
of ``k``, so the survivors that are honest number at least ``n - k`` whenever at least
``n - k`` hospitals survive. Each share is therefore sized so that ANY ``n - k`` honest
shares together supply the full noise, and a hospital refuses to release (unmask, decrypt)
a sum of fewer than ``n - k`` survivors (:func:`release_allowed`). The accountant charges
the noise of ``n - k`` shares only: colluders know (and subtract) their own.

Two share kinds:

* ``"gaussian"`` (``ckks``): ``Z_i ~ N(0, (sigma C)^2 / (n - k))`` per coordinate; the
  honest shares sum to ``N(0, (sigma C)^2)``: charged noise multiplier ``sigma``.
* ``"discrete"`` (``mask``, the integer ring ``Z / 2^m``), after Kairouz, Liu & Steinke,
  "The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure
  Aggregation" (ICML 2021): the hospital scales ``S_i`` by ``gamma = 2**scale_bits``,
  rounds every coordinate by unbiased randomised rounding, adds
  ``Z_i ~ N_Z(0, V)^d`` with the integer variance parameter ``V``.
  *Sensitivity*: with the rounding coins coupled between neighbouring datasets, the rounded
  sum moves by ``ceil(|gamma g_j|)`` per coordinate when one patient's clipped gradient
  ``g`` is added, so the L2 sensitivity in integer units is at most
  ``Delta2 = gamma C + sqrt(d)`` (the second term of the paper's bound, which does not
  need conditional rounding: per-patient units sit inside one hospital's rounded sum,
  where the paper's per-client conditional rounding does not apply) and the L1
  sensitivity ``Delta1 = min(sqrt(d) Delta2, Delta2^2)``. *Sum of shares*: the sum of
  ``h = n - k`` honest N_Z(0, V) shares is ``(eps^2 / 2)``-concentrated DP with
  ``eps = min(sqrt(Delta2^2/(hV) + tau Delta1 / 2), Delta2/sqrt(hV) + tau sqrt(Delta1))``,
  ``tau = 10 sum_{j=1}^{h-1} exp(-2 pi^2 V j/(j+1))`` (their Theorem 1 / Prop. 14); the
  accountant charges the Gaussian noise multiplier ``1/eps`` (for ``V >= 2**10`` tau is
  below ``1e-8000``: the discrete sum is accounted exactly as a Gaussian of variance
  ``h V``). *Modulus and modular clipping*: every share is bounded, ``|Z_ij| <=
  margin sqrt(V)``, checked before it is sent (a draw beyond it, probability
  ``<= 2 exp(-margin^2/2)`` per coordinate, refuses the round: the check reads only the
  noise, never the data), and ``|gamma S_ij| <= gamma N_i C`` holds by clipping; the
  modulus ``2**m > 2 n max_i bound_i`` then leaves no modular wrap: the modular clipping
  error of the paper is zero, not merely unlikely (:func:`modulus_bits_needed`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedrx.errors import ConfigError

KINDS = ("gaussian", "discrete")
NOISE_MARGIN = 40.0
"""Largest |noise share| in units of its sigma (tail ``2 exp(-800)`` per coordinate)."""


@dataclass(frozen=True)
class ShareSizing:
    """The noise shares of one distributed-DP step.

    ``n``: hospitals in the federation (one share each); ``k``: how many may collude with the
    aggregator or be missing, together (``0 <= k < n``); ``noise_multiplier``: the sigma the
    planned schedule is calibrated to (as central DP-SGD); ``clip``: per-patient L2 norm
    ``C``; ``dim``: coordinates ``d``; ``kind``: ``"gaussian"`` or ``"discrete"``;
    ``scale_bits``: discrete only, fixed-point bits (``gamma = 2**scale_bits``).
    """

    n: int
    k: int
    noise_multiplier: float
    clip: float
    dim: int
    kind: str = "discrete"
    scale_bits: int = 16

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"share kind must be one of {KINDS}, got {self.kind!r}")
        if not (isinstance(self.n, int) and self.n >= 1):
            raise ConfigError(f"distributed DP needs n >= 1 hospitals, got {self.n}")
        if not (isinstance(self.k, int) and 0 <= self.k < self.n):
            raise ConfigError(f"k (hospitals that may collude or drop) must be in [0, "
                              f"{self.n - 1}] for {self.n} hospitals, got {self.k}")
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise ConfigError("noise_multiplier must be a finite number > 0")
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ConfigError("clip norm must be a finite number > 0")
        if self.dim < 1:
            raise ConfigError("dim must be >= 1")
        if self.kind == "discrete" and not 0 <= self.scale_bits <= 40:
            raise ConfigError("scale_bits must be in [0, 40]")

    @property
    def honest(self) -> int:
        """Shares guaranteed honest in any released sum: ``n - k``."""
        return self.n - self.k

    @property
    def min_survivors(self) -> int:
        """Fewest survivors whose sum may be released: ``n - k``."""
        return self.n - self.k

    # -- discrete ----------------------------------------------------------------------
    @property
    def gamma(self) -> float:
        return float(2**self.scale_bits)

    @property
    def sensitivity(self) -> float:
        """L2 sensitivity of the pre-noise sum in the units of the noise (see module doc)."""
        if self.kind == "gaussian":
            return self.clip
        return self.gamma * self.clip + math.sqrt(self.dim)

    @property
    def sensitivity_l1(self) -> float:
        d2 = self.sensitivity
        return min(math.sqrt(self.dim) * d2, d2 * d2)

    @property
    def share_variance(self) -> int:
        """Discrete: integer variance parameter ``V`` of each share,
        ``ceil((sigma Delta2)^2 / (n - k))``."""
        if self.kind != "discrete":
            raise ConfigError("share_variance is for discrete shares")
        return max(1, math.ceil((self.noise_multiplier * self.sensitivity) ** 2 / self.honest))

    @property
    def share_std(self) -> float:
        """Standard deviation (sigma parameter) of one share, in noise units."""
        if self.kind == "gaussian":
            return self.noise_multiplier * self.clip / math.sqrt(self.honest)
        return math.sqrt(self.share_variance)

    def tau(self, share_variance: int | None = None) -> float:
        """Kairouz et al.'s tau for ``n - k`` discrete shares (0.0 for Gaussian ones)."""
        if self.kind == "gaussian":
            return 0.0
        v = share_variance if share_variance is not None else self.share_variance
        return 10.0 * sum(math.exp(-2.0 * math.pi**2 * v * j / (j + 1))
                          for j in range(1, self.honest))

    def charged_noise_multiplier(self, share_variance: int | None = None) -> float:
        """The Gaussian noise multiplier the accountant charges for the honest shares (of
        variance ``share_variance``, default :attr:`share_variance`)."""
        if self.kind == "gaussian":
            return self.noise_multiplier
        v = share_variance if share_variance is not None else self.share_variance
        d2, d1, tau = self.sensitivity, self.sensitivity_l1, self.tau(v)
        hv = self.honest * v
        eps = min(math.sqrt(d2 * d2 / hv + 0.5 * tau * d1),
                  d2 / math.sqrt(hv) + tau * math.sqrt(d1))
        return 1.0 / eps

    def noise_bound(self) -> int:
        """Discrete: largest |noise share| a hospital sends (``margin sqrt(V)``)."""
        return math.ceil(NOISE_MARGIN * math.sqrt(self.share_variance))

    def share_bound(self, n_patients: int) -> int:
        """Discrete: largest |entry| of a hospital's integer share: ``ceil(gamma N_i C) + 1``
        (clipped, randomly rounded sum) plus :meth:`noise_bound`."""
        return math.ceil(self.gamma * n_patients * self.clip) + 1 + self.noise_bound()

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {
            "mechanism": "distributed", "share_kind": self.kind, "shares": self.n, "k": self.k,
            "honest_shares": self.honest, "min_survivors": self.min_survivors,
            "noise_multiplier": self.noise_multiplier,
            "charged_noise_multiplier": self.charged_noise_multiplier(),
            "share_std": self.share_std, "dim": self.dim}
        if self.kind == "discrete":
            out |= {"scale_bits": self.scale_bits, "share_variance": self.share_variance,
                    "sensitivity": self.sensitivity, "tau": self.tau(),
                    "noise_margin": NOISE_MARGIN}
        return out


def release_allowed(sizing: ShareSizing, survivors: int) -> bool:
    """True iff a sum of ``survivors`` shares still holds ``n - k`` honest ones."""
    return survivors >= sizing.min_survivors


def modulus_bits_needed(n_hospitals: int, share_bound: int) -> int:
    """Smallest ``m`` with ``2**m > 2 n share_bound``: the centred sum never wraps."""
    if n_hospitals < 1 or share_bound < 1:
        raise ConfigError("need n_hospitals >= 1 and share_bound >= 1")
    return (2 * n_hospitals * share_bound).bit_length()


def wrap_probability(sizing: ShareSizing, steps: int) -> float:
    """Probability that any share of ``steps`` steps trips the noise bound (the round is
    then refused, never wrapped): ``n d steps 2 exp(-margin^2/2)``."""
    return min(1.0, sizing.n * sizing.dim * steps * 2.0 * math.exp(-NOISE_MARGIN**2 / 2.0))
