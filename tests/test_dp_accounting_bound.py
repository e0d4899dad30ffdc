"""Every epsilon fedrx records is within [0.98, 1.25] x dp_accounting's PLD epsilon.

The yardstick is Google dp_accounting's ``PLDAccountant`` (discretisation 1e-4, built from
scratch) for the same mechanism: the Poisson-subsampled Gaussian, add-or-remove-one, at
delta 1e-5. fedrx's DEFAULT accountant is checked over the grid q in {0.01, 0.1, 0.5} x
sigma in {0.7, 1, 2, 5} x steps in {1, 10, 100, 1000} (the full grid is ``slow``; the
default suite runs a cheap corner of it), and along a federation-like schedule charged
round by round, through the signed ledger that records it.
"""

from __future__ import annotations

import itertools

import pytest

from fedrx.dp.accountants.accountant import PrivacyAccountant
from fedrx.dp.accountants.independent import reference_pld_epsilon
from fedrx.dp.accountants.mechanism import Mechanism
from fedrx.dp.accountants.registry import DEFAULT_ACCOUNTANT, compute_epsilon
from fedrx.dp.audit import audit
from fedrx.dp.ledger import PrivacyLedger
from fedrx.secagg.identity import Identity

DELTA = 1e-5
LOW, HIGH = 0.98, 1.25
GRID = list(itertools.product([0.01, 0.1, 0.5], [0.7, 1.0, 2.0, 5.0], [1, 10, 100, 1000]))
# cheap for the 1e-4 reference (each well under a second), and spanning tiny to large eps
FAST = [(0.01, 5.0, 1), (0.01, 2.0, 100), (0.1, 1.0, 10), (0.5, 2.0, 10), (0.01, 1.0, 1000)]


def _check(q: float, sigma: float, steps: int) -> None:
    recorded = compute_epsilon([Mechanism(q, sigma, steps)], DELTA, DEFAULT_ACCOUNTANT)
    ref = reference_pld_epsilon([(q, sigma, steps)], DELTA)
    assert ref > 0
    assert LOW * ref <= recorded <= HIGH * ref, (q, sigma, steps, recorded, ref)


@pytest.mark.parametrize(("q", "sigma", "steps"), FAST)
def test_default_accountant_within_bound_of_dp_accounting_pld(q, sigma, steps):
    _check(q, sigma, steps)


@pytest.mark.slow
@pytest.mark.parametrize(("q", "sigma", "steps"), GRID)
def test_default_accountant_within_bound_full_grid(q, sigma, steps):
    _check(q, sigma, steps)


def test_ledger_entries_charged_round_by_round_within_bound(tmp_path):
    # 12 rounds of 25 steps, then a change of schedule (a new sigma): the ledger records the
    # epsilon of the whole history after every entry, composed incrementally
    led = PrivacyLedger.in_run_dir(tmp_path, Identity.generate("h1"))
    acc = PrivacyAccountant()
    plan = [Mechanism(0.05, 1.1, 25)] * 12 + [Mechanism(0.05, 1.6, 25)] * 4
    for rnd, mech in enumerate(plan, start=1):
        acc.record(mech)
        entry = led.append(round=rnd, mechanism=mech, max_grad_norm=1.0, delta=DELTA,
                           accountant=acc.kind, model_hash=f"{rnd:064x}", budget_epsilon=50.0)
        assert entry["epsilon"] == pytest.approx(acc.epsilon(DELTA), rel=1e-9)
        if rnd in (1, 6, 12, 16):
            merged: dict[float, int] = {}
            for m in plan[:rnd]:
                merged[m.noise_multiplier] = merged.get(m.noise_multiplier, 0) + m.steps
            ref = reference_pld_epsilon([(0.05, s, n) for s, n in merged.items()], DELTA)
            assert LOW * ref <= entry["epsilon"] <= HIGH * ref, (rnd, entry["epsilon"], ref)
    # and fedrx audit, recomputing every entry independently, finds nothing to report
    assert audit(tmp_path) == []


@pytest.mark.slow  # a whole simulated federation: ~13 s of CPU
def test_federation_with_the_pld_accountant_records_within_bound(mimic_demo, tmp_path):
    from fedrx.dp.ledger import read_entries
    from fedrx.nodes.simulate import SimulationConfig, run_simulation

    cfg = SimulationConfig(hospitals=3, rounds=2, hidden=16, local_epochs=1, personalize=False,
                           dp=True, accountant="pld", epsilon=8.0, out=str(tmp_path / "run"))
    doc = run_simulation(cfg)
    assert [r["status"] for r in doc["rounds"]] == ["completed", "completed"]
    for h in doc["dp"]:
        entries = read_entries(tmp_path / "run" / "ledger" / f"{h}.jsonl")
        hist: dict[tuple[float, float], int] = {}
        for e in entries:
            assert e["accountant"] == "pld" and e["status"] == "trained"
            key = (e["sample_rate"], e["noise_multiplier"])
            hist[key] = hist.get(key, 0) + e["steps"]
            ref = reference_pld_epsilon([(q, s, n) for (q, s), n in hist.items()], e["delta"])
            assert LOW * ref <= e["epsilon"] <= HIGH * ref
        assert entries[-1]["epsilon"] <= 8.0
    assert audit(tmp_path / "run") == []


@pytest.mark.parametrize(("factor", "kind"), [(0.9, "epsilon-understated"),
                                              (1.1, "epsilon-mismatch")])
def test_audit_flags_a_signed_pld_epsilon_off_the_independent_value(tmp_path, factor, kind):
    from fedrx.canonical import canonical_json
    from fedrx.dp.ledger import compute_entry_hash, ledger_path, read_entries, signing_bytes

    ident = Identity.generate("h1")
    led = PrivacyLedger.in_run_dir(tmp_path, ident)
    led.append(round=1, mechanism=Mechanism(0.05, 1.1, 200), max_grad_norm=1.0, delta=DELTA,
               accountant="pld", model_hash="0" * 64, budget_epsilon=50.0)
    assert audit(tmp_path) == []
    p = ledger_path(tmp_path, "h1")
    e = read_entries(p)[0]
    e["epsilon"] *= factor  # the key holder signs an epsilon 10% off
    e.pop("entry_hash")
    e.pop("signature")
    e["signature"] = ident.sign(signing_bytes(e)).hex()
    e["entry_hash"] = compute_entry_hash(e)
    p.write_bytes(canonical_json(e) + b"\n")
    assert kind in {f.kind for f in audit(tmp_path)}
