"""Privacy accounting for patient-level DP-SGD, one module per method.

* :mod:`.mechanism`: what is accounted (:class:`~.mechanism.Mechanism`), budgets and the
  default delta rule;
* :mod:`.registry`: the offered methods and :func:`~.registry.compute_epsilon`;
  ``DEFAULT_ACCOUNTANT`` is ``"pld"``;
* :mod:`.pld` (default): Google dp_accounting's privacy loss distributions, composed
  incrementally (a round is one convolution onto the cached PLD of the history before it);
  :mod:`.prv`, :mod:`.rdp`: Opacus' accountants through its registry
  (``opacus.accountants.create_accountant``), still offered (PRV costs ~1 s per call);
* :mod:`.accountant`: a hospital's replayable accountant (a list of mechanisms);
  :mod:`.calibrate` with :mod:`.search`: the noise multiplier for a planned schedule (a
  few accountant evaluations, well under a second for 1,000 planned steps);
* :mod:`.independent`: Google dp-accounting's PLD (incremental, its own caches) and RDP
  accountants, which the audit uses to recompute epsilon without any of the code above;
* :mod:`.cache`: the bounded LRU map both use for derived values.

Cost and state. The accountant OBJECTS stay small: a :class:`~.accountant.PrivacyAccountant`
is its list of mechanisms, exactly what the ledger replays. Derived PLDs and epsilons live
in bounded, thread-safe per-process LRU caches keyed by the merged history (see
:mod:`.pld`), so epsilon is always a function of the whole history, yet nothing on the hot
path recomputes that history from scratch.

Charging another mechanism (e.g. distributed DP). Every method accounts compositions of the
Poisson-subsampled Gaussian mechanism of sensitivity 1 in units of the noise std, i.e. a
:class:`~.mechanism.Mechanism` ``(q, sigma, steps)``. A mechanism whose privacy loss is
dominated by that one, with an EFFECTIVE noise multiplier ``sigma_eff`` (noise std actually
present in the released value divided by the L2 sensitivity that value can have), is
charged as ``Mechanism(q, sigma_eff, steps)``: call
``PrivacyAccountant.would_exceed(mech, budget)`` before any randomness, ``record(mech)``
and append the ledger entry, which stores ``noise_multiplier = sigma_eff`` so that
``fedrx audit`` recomputes the same value. The caller owns the reduction to
``sigma_eff`` and must make it conservative: for the distributed discrete Gaussian or
Skellam, the noise of the honest survivors only (not of every share sent), the
sensitivity inflated by conditional rounding and bounded by the modular clipping, and any
additive slack (the discrete Gaussian's ``tau``) either shown negligible at the delta used
or folded into ``sigma_eff`` (see :mod:`fedrx.dp.distributed.sizing`). Each distinct
``sigma_eff`` (e.g. after a dropout) costs one new one-step PLD (about 0.1-0.3 s), then it
is cached.
"""
