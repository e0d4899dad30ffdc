"""CKKS (TenSEAL) additive aggregation where the aggregator never holds a secret key.

Primitives: :mod:`.params` (parameters, the protection config), :mod:`.ciphertext` (the
aggregator's public context and running sum), :mod:`.release` (flooding and rounding
policy), :mod:`.secret` (a hospital's epoch key), :mod:`.keyring` (epoch manifest, sealed
packages, key generation), :mod:`.keyring_json` (an epoch as canonical JSON, for checkpoints),
:mod:`.sum_tag` (keyed linear tags of ciphertexts), :mod:`.sum_check` (what a decryptor checks
before it releases anything: the listed signed uploads, one confirmed list per round, that the
aggregate IS their sum, the range of the sum; reusable by any CKKS protection).
Protocol: :mod:`.messages` (the stage messages), :mod:`.key_state` (long-lived key state by
role: :class:`AggregatorKeyState`, public; :class:`HospitalKeyState`, the opened key),
:mod:`.server` and :mod:`.client` (one round, one class per state). The binding to the
``Protection`` interface is :mod:`fedrx.protocol.protections.ckks`.

Parameters (:class:`CkksParams`, defaults)
------------------------------------------
* ``poly_modulus_degree`` N = 8192, so one ciphertext packs ``N/2 = 4096`` real slots.
* ``coeff_mod_bit_sizes`` = (56, 40): ONE 56-bit data prime ``q`` plus the 40-bit special prime
  SEAL reserves for key switching (unused: fedrx only adds). Total log2 Q = 96 bits; the
  HomomorphicEncryption.org standard allows 218 bits at N = 8192 for 128-bit classical security
  (ternary secret), and 118 bits for 256-bit, so these parameters sit above 256-bit security.
  Ciphertexts live at the single data level: no modulus chain, no rescaling, no relinearisation.
  A 56-bit (rather than 60-bit) prime lets SEAL's zstd compression bring a full ciphertext to
  ~7.6 bytes per value (float32: 4), i.e. ~7.6x float32 on the wire.
* ``scale`` Δ = 2^32. A value ``m`` is stored as ``round(Δ·m)`` modulo ``q`` (2^55 < q < 2^56),
  so a decryptable SUM must satisfy ``|Σ m| < 2^(56-2-32) = 2^22`` (:meth:`CkksParams.max_abs_sum`).
  Every hospital checks ``|x_i| <= max_abs_sum / n_participants`` before encrypting, so the sum of
  any subset of participants cannot wrap.
* Hospitals encrypt with the SECRET key (SEAL symmetric encryption): ``c = (-a·s + e + Δm, a)``.
  It has a smaller error than public-key encryption and the aggregator needs no public key.
* Slots: N/2 = 4096 values per ciphertext; a vector of L values takes ceil(L/4096) ciphertexts.

Precision bound (checked in tests/test_ckks.py)
-----------------------------------------------
One fresh ciphertext decrypts to ``m + (e + r)/Δ`` where ``e`` is SEAL's error polynomial
(coefficient std σ = 3.24, centred binomial) and ``r`` the encoding rounding (uniform on
[-1/2, 1/2], variance 1/12). Through the canonical embedding each slot's real part is a sum of N
such terms, with standard deviation ``s1 = sqrt(N·(σ² + 1/12)/2)``. Bounding one ciphertext's slot
error by ``T = 8`` standard deviations (Gaussian tail ~1e-15 per slot) and letting the errors of the
n summands add in the worst case (linearly), the sum of n ciphertexts satisfies, per slot::

    |decrypt(Σ ct_i) − Σ x_i|  <=  n · T · sqrt(N·(σ² + 1/12)/2) / Δ     (sum_error_bound(n))

At the defaults: ``3.88e-7 · n`` (e.g. 1.9e-5 for n = 50) in the units of the summed vector
(``Σ count·delta``); relative to the averaged model that is divided by the total example count.

Key epochs and custody
----------------------
A key-holder hospital runs :meth:`CkksKeyring.create` once per epoch. It generates the TenSEAL
context with the secret key plus a 32-byte flooding key (both from the OS CSPRNG), and emits:

* an :class:`EpochManifest`, signed with its Ed25519 identity key: epoch, params, the SHA-256 of
  the PUBLIC context, a commitment (SHA-256) to the secret material, the recipient list;
  ``key_id = SHA-256(manifest statement)`` names the epoch everywhere;
* the public context: parameters and scale only, serialised WITHOUT secret key, public key, relin
  or Galois keys (~90 bytes). This is all the aggregator ever receives;
* one :class:`SealedKeyPackage` per hospital: the secret material sealed to that hospital's X25519
  identity key (:mod:`fedrx.secagg.seal`, HPKE; the label binds recipient, epoch and key id)
  and signed by the key holder, so the relaying aggregator can neither open nor substitute it.

Rotation = a new epoch with fresh keys; ciphertexts of an old epoch carry the old key id and are
rejected, and do not decrypt under the new key.

Nothing here pickles: ciphertexts and contexts use TenSEAL/SEAL's own serialisation, and every
incoming byte string is size-checked before it is parsed.
"""
