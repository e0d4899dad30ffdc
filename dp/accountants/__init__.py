"""Privacy accounting for patient-level DP-SGD, one module per method.

* :mod:`.mechanism`: what is accounted (:class:`~.mechanism.Mechanism`), budgets and the
  default delta rule;
* :mod:`.registry`: the offered methods, each built through Opacus' accountant registry
  (``opacus.accountants.create_accountant``), and :func:`~.registry.compute_epsilon`;
* :mod:`.prv`, :mod:`.rdp`: the two methods;
* :mod:`.accountant`: a hospital's replayable accountant;
  :mod:`.calibrate`: the noise multiplier for a planned schedule;
* :mod:`.independent`: Google dp-accounting's PLD and RDP accountants, which the audit
  uses to recompute epsilon without any of the code above.
"""
