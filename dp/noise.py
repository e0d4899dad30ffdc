"""Randomness for DP-SGD: Gaussian noise and Poisson-sampling coins.

Two sources implement :class:`NoiseSource`:

* :class:`SecureNoise` (``secure=True``, the only one allowed in deployment configs): a
  ChaCha20 keystream (``cryptography``/OpenSSL) keyed with 32 bytes from ``os.urandom``
  is the bit generator. Uniforms take the top 53 bits of each 64-bit keystream word,
  ``u = ((w >> 11) + 0.5) * 2**-53`` (never 0 or 1); Gaussians come from the Marsaglia
  polar method in float64 (no trigonometric calls; rejected pairs are discarded). The
  key lives only inside the object (never in ``repr``, logs or errors) and there is no
  way to set it, so runs are not reproducible, on purpose. A fresh key is drawn before
  one key's counter space could be exhausted (never in practice).
* :class:`SeededNoise` (``secure=False``): a seeded ``torch.Generator`` (Mersenne
  Twister). Reproducible, for research runs and tests. **NOT for deployment**: its state
  is predictable from a few outputs, so anyone who learns it can subtract the noise.

Both return float64 tensors and count every value they hand out in ``draws`` (tests use
it to show that a refused round drew nothing).

Floating-point caveat (Mironov, CCS 2012): a float64 Gaussian is not an exact Gaussian.
:func:`fedrx.dp.dpsgd` adds it to the float64 clipped sum and rounds the result to a
power-of-two grid far below the noise scale (see ``snap_to_grid``), which removes the
low-order bits these attacks read; it is a mitigation, not a proof (threat_model.md §5).
"""

from __future__ import annotations

import math
import os
from typing import Protocol

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

_TWO_M53 = 2.0**-53
_MAX_WORDS_PER_KEY = 2**50  # far below the 2**64 blocks of a 64-bit ChaCha20 counter


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
    """CSPRNG-backed source: ChaCha20 keystream seeded from ``os.urandom`` (see module doc)."""

    secure = True

    def __init__(self) -> None:
        self.draws = 0
        self._rekey()

    def __repr__(self) -> str:
        return "SecureNoise(chacha20, <key hidden>)"

    def _rekey(self) -> None:
        key = os.urandom(32)
        nonce = bytes(16)  # 64-bit counter || 64-bit nonce; a fresh key per instance
        self._enc = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
        self._words = 0
        self._zeros = getattr(self, "_zeros", b"")
        del key

    def _words64(self, n: int) -> np.ndarray:
        if self._words + n > _MAX_WORDS_PER_KEY:
            self._rekey()
        self._words += n
        if len(self._zeros) < 8 * n:
            self._zeros = bytes(8 * n)
        out = bytearray(8 * n)
        # keystream XOR zeros = keystream, written in place (no intermediate copies)
        self._enc.update_into(memoryview(self._zeros)[:8 * n], out)
        return np.frombuffer(out, dtype="<u8")

    def _uniform(self, n: int) -> np.ndarray:
        u = (self._words64(n) >> np.uint64(11)).astype(np.float64)
        u += 0.5
        u *= _TWO_M53
        return u

    def uniform(self, n: int) -> np.ndarray:
        self.draws += n
        return self._uniform(n)

    def normal(self, shape: tuple[int, ...], std: float) -> torch.Tensor:
        n = math.prod(shape)
        self.draws += n
        z = np.empty(n)
        filled = 0
        while filled < n:
            # Marsaglia polar method: (v1, v2) uniform on the square, kept inside the unit
            # disc (probability pi/4); each kept pair gives two independent N(0, 1).
            pairs = int((n - filled) / 2 / 0.78) + 64
            v = self._uniform(2 * pairs)
            v *= 2.0
            v -= 1.0
            v1, v2 = v[:pairs], v[pairs:]
            s2 = np.multiply(v1, v1)
            s2 += v2 * v2
            keep = (s2 < 1.0) & (s2 > 0.0)
            s2 = s2[keep]
            f = np.log(s2)
            f *= -2.0
            f /= s2
            np.sqrt(f, out=f)
            k = len(f)
            take1 = min(n - filled, k)
            np.multiply(v1[keep][:take1], f[:take1], out=z[filled:filled + take1])
            filled += take1
            take2 = min(n - filled, k)
            if take2:
                np.multiply(v2[keep][:take2], f[:take2], out=z[filled:filled + take2])
                filled += take2
        z *= std
        return torch.from_numpy(z).reshape(shape)


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
