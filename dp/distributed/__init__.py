"""Distributed DP at patient level: one DP-SGD step of the whole federation per round, the
noise split into shares that the hospitals add under a secure sum.

* :mod:`.discrete`: exact discrete Laplace / Gaussian samplers from OS randomness (CKS 2020).
* :mod:`.sizing`: share sizing for ``k`` colluding-or-missing hospitals, the sensitivity of
  the randomly rounded sum, the modulus, and the noise multiplier the accountant charges.
* :mod:`.hospital`: a hospital's per-round state (budget check, signed ledger entry, Poisson
  sample at the federation's rate, clipped gradient sum, noise share).
"""
