"""Before a DP simulation trains: delta < 1/N, the pinned keys, and the budget carried from
earlier runs on the same patients (:mod:`fedrx.dp.budget_store`).

:func:`open_budgets` runs after the data is prepared and before any hospital is enrolled:
for every hospital it checks ``delta < 1/N`` (N: its training patients), fingerprints its
training patients, and refuses the whole run (nothing registered, nothing charged) when
earlier runs on any of those patients already reach the hospital's budget, or when they
spent anything and the store was not chosen explicitly (``budget_store`` or
``FEDRX_BUDGET_STORE``; the default store refuses instead of silently shrinking a run's
budget, e.g. one arm of a benchmark after another). Otherwise each
hospital's run is registered in the store and its carry file is written, so its ledger
composes the earlier charges with its own (:class:`fedrx.dp.ledger.PrivacyLedger`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fedrx.canonical import canonical_json
from fedrx.dp.accountants.registry import compute_epsilon
from fedrx.dp.budget_store import (
    AUTO,
    STORE_ENV,
    BudgetStore,
    Carry,
    check_delta,
    resolve_store,
)
from fedrx.errors import BudgetExceeded

OFF = "off"


def patient_bytes(patient: Any) -> bytes:
    """The canonical record of one patient as the store fingerprints it: the patient id and
    every visit (never the simulated hospital it was assigned to)."""
    return canonical_json({"patient_id": patient.patient_id,
                           "visits": [v.to_json() for v in patient.visits]})


def open_budgets(cfg: Any, prep: Any, out_dir: Path) -> dict[str, Carry]:
    """Check and register every hospital of ``prep`` (see module doc); {} when the store is
    ``off`` or unset. ``cfg.budget_store``: a folder (explicit), ``"auto"`` (what ``fedrx
    simulate`` sets: the default store beside the run folder), ``"off"``, or ``""`` (a
    programmatic run, e.g. a benchmark arm: no store); ``FEDRX_BUDGET_STORE`` replaces
    ``"auto"`` and ``""``. Raises :class:`~fedrx.errors.ConfigError` (delta) or
    :class:`~fedrx.errors.BudgetExceeded` (earlier runs spent the budget), one line each."""
    dp_cfg = cfg.dp_config()
    for h in sorted(prep.hospitals):
        n = int(prep.hospitals[h].train.n_patients)
        if dp_cfg.delta is not None:
            check_delta(dp_cfg.delta, n, h)
    chosen = str(cfg.budget_store or "")
    env = os.environ.get(STORE_ENV, "")
    if env and chosen in ("", AUTO):  # the environment beats the defaults
        chosen = env
    if chosen.lower() in (OFF, ""):  # "": a programmatic run (bench arms) that set none
        return {}
    root, explicit = resolve_store(chosen, out_dir)
    store = BudgetStore(root)
    plans = {}
    for h in sorted(prep.hospitals):
        n = int(prep.hospitals[h].train.n_patients)
        keys = store.patient_keys(patient_bytes(p) for p in prep.splits[h].train)
        prior = store.prior(keys)
        if prior[0]:
            budget = dp_cfg.budget(n)
            cap = min(budget.epsilon, dp_cfg.target_epsilon)
            spent = compute_epsilon(prior[0], budget.delta, dp_cfg.accountant)
            if not explicit:  # never charge on top of earlier runs without being told to
                raise BudgetExceeded(
                    f"hospital {h}: {len(prior[1])} earlier run(s) on the same patients "
                    f"already spent epsilon {spent:.3f} (store {store.root}); every run on "
                    f"the same data is charged to one budget: set budget_store (or "
                    f"FEDRX_BUDGET_STORE) to {store.root} to run within what remains of "
                    f"epsilon {cap:g}, or budget_store = \"off\" (FEDRX_BUDGET_STORE=off) if "
                    "these patients need no protection (synthetic data)")
            if spent >= cap:
                raise BudgetExceeded(
                    f"hospital {h}: {len(prior[1])} earlier run(s) on the same patients "
                    f"already spent epsilon {spent:.3f} (delta {budget.delta:g}) of the budget "
                    f"{cap:g}; every run on the same data is charged to one budget (store "
                    f"{store.root})")
        plans[h] = (keys, prior)
    return {h: store.open_run(out_dir, h, keys, prior) for h, (keys, prior) in plans.items()}
