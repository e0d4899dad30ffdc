"""Randomness for DP-SGD: Gaussian noise and Poisson-sampling coins.

Two sources implement :class:`NoiseSource`:

* :class:`SecureNoise` (``secure=True``, the only one allowed in deployment configs): an
  OS-keyed :class:`fedrx.csprng.KeyStream` (ChaCha20 keyed with 32 bytes from
  ``os.urandom``) is the bit generator. Uniforms take the top 53 bits of each 64-bit
  keystream word, ``u = ((w >> 11) + 0.5) * 2**-53`` (never 0 or 1). Gaussians come from
  :meth:`~fedrx.csprng.KeyStream.normal_f32` (Box-Muller: 53-bit float64 radius, tails to
  8.57 sigma; 24-bit float32 angle; float32 product, 24-bit mantissa, far finer than the
  noise grid of ``snap_to_grid``). The key lives only inside the stream (never in
  ``repr``, logs or errors) and there is no way to set it, so runs are not reproducible,
  on purpose.
* :class:`SeededNoise` (``secure=False``): a seeded ``torch.Generator`` (Mersenne
  Twister). Reproducible, for research runs and tests. **NOT for deployment**: its state
  is predictable from a few outputs, so anyone who learns it can subtract the noise.

SeededNoise returns float64 tensors, SecureNoise float32 ones (added to float64 sums by
DP-SGD); both count every value they hand out in ``draws`` (tests use it to show that a
refused round drew nothing).

Floating-point caveat (Mironov, CCS 2012): a float64 Gaussian is not an exact Gaussian.
:func:`fedrx.dp.dpsgd` adds it to the float64 clipped sum and rounds the result to a
power-of-two grid far below the noise scale (see ``snap_to_grid``), which removes the
low-order bits these attacks read; it is a mitigation, not a proof (threat_model.md §5).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch

from fedrx.csprng import KeyStream

_TWO_M53 = 2.0**-53


class NoiseSource(Protocol):
    """What DP-SGD needs from a random source."""

    secure: bool
    draws: int

    def uniform(self, n: int) -> np.ndarray:
        """``n`` float64 uniforms in the open interval (0, 1)."""
        ...

    def normal(self, shape: tuple[int, ...], std: float) -> torch.Tensor:
        """A float64 tensor of i.i.d. N(0, std**2) values."""
        ...


class SecureNoise:
    """CSPRNG-backed source: an OS-keyed :class:`fedrx.csprng.KeyStream` (see module doc)."""

    secure = True

    def __init__(self) -> None:
        self.draws = 0
        self._stream = KeyStream()

    def __repr__(self) -> str:
        return "SecureNoise(chacha20, <key hidden>)"

    def uniform(self, n: int) -> np.ndarray:
        self.draws += n
        return self._stream.uniform(n)

    def normal(self, shape: tuple[int, ...], std: float) -> torch.Tensor:
        n = math.prod(shape)
        self.draws += n
        # float32 values (exact in float64); callers add them to float64 sums
        return torch.from_numpy(self._stream.normal_f32(n, std)).reshape(shape)


class SeededNoise:
    """Reproducible source from a seeded ``torch.Generator``. NOT for deployment."""

    secure = False

    def __init__(self, seed: int) -> None:
        self.draws = 0
        self._gen = torch.Generator().manual_seed(int(seed))

    def __repr__(self) -> str:
        return "SeededNoise(torch, not for deployment)"

    def uniform(self, n: int) -> np.ndarray:
        self.draws += n
        u = torch.rand(n, generator=self._gen, dtype=torch.float64).numpy()
        return np.clip(u, _TWO_M53, 1.0 - _TWO_M53)

    def normal(self, shape: tuple[int, ...], std: float) -> torch.Tensor:
        self.draws += math.prod(shape)
        return torch.randn(shape, generator=self._gen, dtype=torch.float64) * std


def make_noise_source(secure: bool, seed: int | None = None) -> NoiseSource:
    """``secure=True``: :class:`SecureNoise` (``seed`` must be None); else :class:`SeededNoise`."""
    from fedrx.errors import ConfigError

    if secure:
        if seed is not None:
            raise ConfigError("secure noise cannot be seeded; use secure_noise=False for "
                              "reproducible research runs (not for deployment)")
        return SecureNoise()
    return SeededNoise(0 if seed is None else seed)


def snap_to_grid(x: torch.Tensor, noise_std: float, bits: int = 20) -> torch.Tensor:
    """Round ``x`` to multiples of ``2**floor(log2(noise_std)) * 2**-bits``.

    The grid spacing is at most ``noise_std * 2**-bits`` (about 1e-6 of the noise for the
    default), so utility is unaffected, while the float64 low-order bits that
    floating-point attacks on the Gaussian mechanism read are discarded. No-op when
    ``noise_std`` is 0.
    """
    if noise_std <= 0:
        return x
    e = math.floor(math.log2(noise_std)) - bits
    # multiplying by powers of two is exact, so this is round(x / step) * step
    return x.mul(2.0**-e).round_().mul_(2.0**e)
